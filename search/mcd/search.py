"""The MCD loop: shrink the network iteration by iteration until every constraint holds.

One iteration (NetAdaptV2, "multi-layer coordinate descent"):
1. each constraint's target comes from the decaying schedule (`schedule.py`), never below
   its limit, so the last iteration lands on the constraint;
2. J candidates each shrink L random dimensions just enough to meet every target
   (`candidates.py`), deduplicated;
3. every candidate is scored (super-network weights, BN recalibrated, held-out split; or any
   scorer) - split over `torch.distributed` ranks and gathered;
4. the best-scoring candidate becomes the current network.

`run_mcd` is that loop and nothing else: what it records after each iteration
(``history.jsonl``, the ``state.json`` checkpoint that ``--resume`` continues from,
``final.json``) is written by `files.SearchFiles`, on rank 0 only.
"""
from __future__ import annotations

import dataclasses
import random
import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from search import distributed
from search.errors import SearchError
from search.spaces.space import SearchSpace, SubnetConfig

from .candidates import Candidate, generate_candidates, meets
from .files import FINAL, SearchFiles, final_record, state_identity
from .metrics import Constraint, Metric
from .schedule import ReductionSchedule
from .scoring import Scorer, score_all


@dataclass(frozen=True)
class MCDConfig:
    """Options of the search; every default carries its reason."""

    candidates: int = 16  # J: enough draws to find a good L-layer move; each costs one scoring (~0.1-1 s on CPU)
    layers: int = 3  # L: >1 so layers interact and a step is not capped by one layer; small so a step stays local
    schedule: ReductionSchedule = field(default_factory=ReductionSchedule)
    seed: int = 0  # candidate draws are the only randomness of the loop
    max_iterations: int = 200  # with the schedule's floor any reachable target needs far fewer
    stop_after: int | None = None  # stop after this many iterations of *this* run (as if killed); for resume

    def __post_init__(self) -> None:
        if self.candidates < 1 or self.layers < 1:
            raise SearchError(f"--candidates and --layers must be >= 1, got {self.candidates} and {self.layers}")

    def identity(self) -> dict:
        """What must match for `--resume` to continue the same search."""
        return {"candidates": self.candidates, "layers": self.layers, "seed": self.seed,
                "schedule": dataclasses.asdict(self.schedule)}


@dataclass(frozen=True)
class SearchResult:
    config: SubnetConfig
    values: dict[str, float]  # constraint and report metrics of `config`
    score: float
    iteration: int  # iterations done so far (all runs)
    elapsed_s: float  # search wall time over all runs
    done: bool  # every constraint holds (final.json written)


def describe_values(values: Mapping[str, float]) -> str:
    parts = []
    for name, value in values.items():
        parts.append(f"{name}={value / 1e6:.3f}M" if name == "macs" else f"{name}={value:.3f}")
    return " ".join(parts)


def _describe_targets(targets: Mapping[str, float]) -> str:
    return " ".join(f"{n}<={t / 1e6:.3f}M" if n == "macs" else f"{n}<={t:.3f}" for n, t in targets.items())


def _quiet(_line: str) -> None:
    pass


class _Values:
    """config -> {metric name: value} over the constraints' metrics, then the report metrics."""

    def __init__(self, constraints: Sequence[Constraint], report_metrics: Sequence[Metric]) -> None:
        self.metrics: dict[str, Metric] = {c.name: c.metric for c in constraints}
        for metric in report_metrics:
            self.metrics.setdefault(metric.name, metric)

    def __call__(self, config: SubnetConfig) -> dict[str, float]:
        return {name: metric.value(config) for name, metric in self.metrics.items()}


@dataclass
class _Progress:
    """Where the search stands: what ``state.json`` checkpoints, plus this run's clock."""

    config: SubnetConfig  # the current network
    score: float
    iteration: int  # iterations done so far (all runs)
    initial: dict[str, float]  # metric values of the start network: the schedule's reference
    rng: random.Random  # candidate draws; checkpointed so a resumed search draws the same
    elapsed_before: float  # search time of the earlier runs (s)
    t0: float = field(default_factory=time.perf_counter)  # start of this run

    def elapsed(self) -> float:
        return self.elapsed_before + time.perf_counter() - self.t0

    def state(self, values: Mapping[str, float], done: bool) -> dict:
        version, internal, gauss = self.rng.getstate()
        return {"iteration": self.iteration, "config": self.config.to_dict(), "score": self.score,
                "values": dict(values), "initial_values": self.initial,
                "rng_state": [version, list(internal), gauss], "done": done, "elapsed_s": round(self.elapsed(), 3)}

    @classmethod
    def from_state(cls, state: Mapping[str, Any], seed: int, t0: float) -> _Progress:
        rng = random.Random(seed)
        version, internal, gauss = state["rng_state"]
        rng.setstate((version, tuple(internal), gauss))
        return cls(SubnetConfig.from_dict(state["config"]), state["score"], state["iteration"],
                   state["initial_values"], rng, state["elapsed_s"], t0)


def run_mcd(space: SearchSpace, constraints: Sequence[Constraint], scorer: Scorer, out: str | Path,
            mcd: MCDConfig = MCDConfig(), start: SubnetConfig | None = None, resume: bool = False,
            report_metrics: Sequence[Metric] = (), log: Callable[[str], None] = print,
            meta: Mapping[str, Any] | None = None) -> SearchResult:
    """Run (or resume) MCD from `start` (default: the max network) until every constraint holds.

    `constraints`: each candidate must meet every constraint's iteration target.
    `scorer`: config -> score, higher is better (`scoring.SupernetScorer` or any callable).
    `report_metrics`: extra metrics recorded for the winner of each iteration (e.g. LUT
    latency in a MAC-constrained search). `meta`: stored in state/final (e.g. the CLI inputs).
    Under torchrun every rank calls this with the same arguments; rank 0 writes the files.
    """
    if not constraints:
        raise SearchError("no constraint given: pass --target-latency-ms and/or --target-macs")
    files = SearchFiles(out)
    emit = log if files.writer else _quiet
    limits = {c.name: c.limit for c in constraints}
    identity = state_identity(space.name, limits, mcd.identity())
    meta = dict(meta or {})
    values_of = _Values(constraints, report_metrics)
    progress = _begin(space, scorer, files, identity, values_of, mcd.seed, start, resume, emit)

    def checkpoint(done: bool) -> None:
        files.write_state({**identity, **progress.state(values_of(progress.config), done), "meta": meta})

    checkpoint(done=False)
    ran = 0
    while not meets(values_of(progress.config), limits):
        if progress.iteration >= mcd.max_iterations:
            raise SearchError(f"the constraints still do not hold after {progress.iteration} iterations; "
                              f"raise --max-iterations and pass --resume")
        if mcd.stop_after is not None and ran >= mcd.stop_after:
            emit(f"stopping after {ran} iteration(s) of this run (--stop-after); continue with --resume")
            return SearchResult(progress.config, values_of(progress.config), progress.score, progress.iteration,
                                progress.elapsed(), False)
        ran += 1
        _iterate(space, constraints, scorer, mcd, progress, files, values_of, emit)
        checkpoint(done=False)

    final_values = values_of(progress.config)
    elapsed = progress.elapsed()
    checkpoint(done=True)
    files.write_final(final_record(space, progress.config, final_values, progress.score, limits=limits,
                                   iterations=progress.iteration, search_time_s=round(elapsed, 3),
                                   mcd=mcd.identity(), meta=meta))
    emit(f"done after {progress.iteration} iteration(s), {elapsed:.1f}s: {describe_values(final_values)} "
         f"score={progress.score:.4f} -> {files.out / FINAL}")
    return SearchResult(progress.config, final_values, progress.score, progress.iteration, elapsed, True)


def _begin(space: SearchSpace, scorer: Scorer, files: SearchFiles, identity: Mapping[str, Any], values_of: _Values,
           seed: int, start: SubnetConfig | None, resume: bool, emit: Callable[[str], None]) -> _Progress:
    """The progress to continue from: the checkpoint of `files` (resume) or the scored start network."""
    t0 = time.perf_counter()
    files.check(resume)
    state = distributed.broadcast(files.read_state() if resume and files.writer else None)  # rank 0 reads
    if state is not None:
        files.check_resumable(state, identity)  # on every rank: all of them stop on a mismatch
        progress = _Progress.from_state(state, seed, t0)
        files.rewind_history(progress.iteration)
        emit(f"resuming {files.out} at iteration {progress.iteration}: "
             f"{describe_values(values_of(progress.config))} score={progress.score:.4f}")
        return progress
    files.start_history()
    current = space.canonical(start or space.max_config())
    space.validate(current)
    initial = values_of(current)
    score = score_all([current], scorer)[0]
    emit(f"iter 0: start {describe_values(initial)} score={score:.4f}")
    files.append_history({"iteration": 0, "config": current.to_dict(), "values": initial, "score": score,
                          "elapsed_s": round(time.perf_counter() - t0, 3)})
    return _Progress(current, score, 0, initial, random.Random(seed), 0.0, t0)


def _iterate(space: SearchSpace, constraints: Sequence[Constraint], scorer: Scorer, mcd: MCDConfig,
             progress: _Progress, files: SearchFiles, values_of: _Values, emit: Callable[[str], None]) -> None:
    """One MCD iteration: targets, candidates (rank 0, broadcast), scores (split), the best wins."""
    progress.iteration += 1
    t_iter = time.perf_counter()
    now = values_of(progress.config)
    targets = {c.name: mcd.schedule.target(progress.iteration, now[c.name], progress.initial[c.name], c.limit)
               for c in constraints}
    candidates: list[Candidate] | None = None
    if files.writer:
        candidates = generate_candidates(space, progress.config, constraints, targets, progress.rng,
                                         mcd.candidates, mcd.layers)
    candidates = distributed.broadcast(candidates)
    t_gen = time.perf_counter() - t_iter
    scores = score_all([c.config for c in candidates], scorer)
    best = max(range(len(candidates)), key=lambda i: (scores[i], -i))
    progress.config, progress.score = candidates[best].config, scores[best]
    best_values = values_of(progress.config)
    elapsed = progress.elapsed()
    files.append_history({
        "iteration": progress.iteration, "targets": targets, "best": best, "config": progress.config.to_dict(),
        "values": best_values, "score": progress.score, "elapsed_s": round(elapsed, 3),
        "generate_s": round(t_gen, 3), "score_s": round(time.perf_counter() - t_iter - t_gen, 3),
        "candidates": [{**c.to_dict(), "score": s} for c, s in zip(candidates, scores)],
    })
    emit(f"iter {progress.iteration}: target {_describe_targets(targets)} | best {describe_values(best_values)} "
         f"score={progress.score:.4f} | {len(candidates)} candidates | {elapsed:.1f}s")
