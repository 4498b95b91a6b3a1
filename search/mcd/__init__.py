"""Multi-layer Coordinate Descent (NetAdaptV2) and its baselines.

`run_mcd(space, constraints, scorer, out)` is the search; `schedule`, `candidates`,
`metrics` and `scoring` are its parts, each usable alone.
"""
from .candidates import Candidate, dimensions, generate_candidates, make_candidate, meets, shrink_step
from .metrics import Constraint, LutLatencyMetric, MacsMetric, MeasuredLatencyMetric, Metric
from .schedule import ReductionSchedule
from .scoring import Scorer, SupernetScorer, score_all
from .search import MCDConfig, SearchResult, check_out_dir, read_history, run_mcd

__all__ = ["Candidate", "dimensions", "generate_candidates", "make_candidate", "meets", "shrink_step",
           "Constraint", "LutLatencyMetric", "MacsMetric", "MeasuredLatencyMetric", "Metric",
           "ReductionSchedule", "Scorer", "SupernetScorer", "score_all", "MCDConfig", "SearchResult",
           "check_out_dir", "read_history", "run_mcd"]
