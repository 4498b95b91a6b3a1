"""Multi-layer Coordinate Descent (NetAdaptV2) and its baselines.

`run_mcd(space, constraints, scorer, out)` is the search loop; `schedule`, `candidates`,
`landing` (growing back into the budget once the constraints hold), `metrics` and `scoring`
are its parts, each usable alone; `files.SearchFiles` writes and reads the search folder.
`session` is `nas-search search` as a library call (checks, then `run_mcd`); `targets` runs
a list of targets from one super-network (one folder each, then `pareto`'s table and plot);
`run_baselines` (baselines scored like the candidates), `measure` (the exported network on a
device) and `report` (report.md + plots) serve `nas-search report`.
"""
from .candidates import Candidate, dimensions, generate_candidates, grow_step, make_candidate, meets, shrink_step
from .files import SearchFiles, read_history
from .metrics import Constraint, LutLatencyMetric, MacsMetric, MeasuredLatencyMetric, Metric
from .schedule import ReductionSchedule
from .scoring import Scorer, SupernetScorer, score_all
from .search import MCDConfig, ScheduleOrigin, SearchResult, run_mcd

__all__ = ["Candidate", "dimensions", "generate_candidates", "grow_step", "make_candidate", "meets", "shrink_step",
           "SearchFiles", "read_history", "Constraint", "LutLatencyMetric", "MacsMetric", "MeasuredLatencyMetric",
           "Metric", "ReductionSchedule", "Scorer", "SupernetScorer", "score_all", "MCDConfig", "ScheduleOrigin",
           "SearchResult", "run_mcd"]
