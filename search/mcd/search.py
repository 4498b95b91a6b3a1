"""The MCD loop: shrink the network iteration by iteration until every constraint holds.

One iteration (NetAdaptV2, "multi-layer coordinate descent"):
1. each constraint's target comes from the decaying schedule (`schedule.py`), never below
   its limit, so the last iteration lands on the constraint;
2. J candidates each shrink L random dimensions just enough to meet every target
   (`candidates.py`), deduplicated;
3. every candidate is scored (super-network weights, BN recalibrated, held-out split; or any
   scorer) - split over `torch.distributed` ranks and gathered;
4. the best-scoring candidate becomes the current network.

Once every constraint holds, the *landing* phase (`landing.py`, unless ``land=False``) grows
the network back one dimension step at a time into the budget the last iteration left
unused, scoring at most J growths per step and `MCDConfig.land_budget` in all.

`run_mcd` is that loop and nothing else: what it records after each iteration and landing
step (``history.jsonl``, the ``state.json`` checkpoint that ``--resume`` continues from,
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
from .landing import landing_candidates, pick, unused_budget
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
    stop_after: int | None = None  # stop after this many iterations/landing steps of *this* run (as if killed)
    land: bool = True  # grow back into the budget the last iteration left unused (landing.py); off: ablations
    # landing: candidates scored in all (J per step). 64 = 4 full steps at J=16, ~1/3 of the ~200 an MCD run
    # to 50 % scores; on mbv3-tiny every target landed within 2 % using <= 47 (docs/search.md)
    land_budget: int = 64

    def __post_init__(self) -> None:
        if self.candidates < 1 or self.layers < 1:
            raise SearchError(f"--candidates and --layers must be >= 1, got {self.candidates} and {self.layers}")
        if self.land_budget < 0:
            raise SearchError(f"--land-budget must be >= 0, got {self.land_budget}")

    def identity(self) -> dict:
        """What must match for `--resume` to continue the same search."""
        return {"candidates": self.candidates, "layers": self.layers, "seed": self.seed,
                "schedule": dataclasses.asdict(self.schedule), "land": self.land, "land_budget": self.land_budget}


@dataclass(frozen=True)
class ScheduleOrigin:
    """Where the reduction schedule of a search starts: a later target of a multi-target search
    continues the schedule of the chain (`targets.py`) as one long search would."""

    initial: Mapping[str, float]  # metric values of the chain's start network: the schedule's reference
    iterations: int  # MCD iterations the chain did before this target


@dataclass(frozen=True)
class SearchResult:
    config: SubnetConfig
    values: dict[str, float]  # constraint and report metrics of `config`
    score: float
    iteration: int  # MCD iterations done so far (all runs), landing steps not counted
    elapsed_s: float  # search wall time over all runs
    done: bool  # every constraint holds (final.json written)
    landing_steps: int = 0  # landing steps taken (growths kept)
    scored: int = 0  # candidates scored over all MCD iterations and landing steps (the search's budget)


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
    iteration: int  # MCD iterations done so far (all runs)
    initial: dict[str, float]  # metric values of the start network (or the chain's): the schedule's reference
    rng: random.Random  # candidate draws; checkpointed so a resumed search draws the same
    elapsed_before: float  # search time of the earlier runs (s)
    t0: float = field(default_factory=time.perf_counter)  # start of this run
    schedule_offset: int = 0  # MCD iterations of the earlier targets of a chain (ScheduleOrigin)
    land_steps: int = 0  # landing steps taken (each keeps one growth)
    land_scored: int = 0  # candidates scored by the landing phase
    landed: bool = False  # the landing phase is over (no growth fits, or its budget is spent)
    rejected: list[SubnetConfig] = field(default_factory=list)  # trades scored and not kept, since the last kept step
    floor: float | None = None  # score of the network MCD found (before landing): no trade goes below it
    ran: int = 0  # iterations + landing steps of *this* run (for `MCDConfig.stop_after`)

    def elapsed(self) -> float:
        return self.elapsed_before + time.perf_counter() - self.t0

    @property
    def records(self) -> int:
        """History records after the start network's: MCD iterations, then landing steps."""
        return self.iteration + self.land_steps

    def state(self, values: Mapping[str, float], done: bool) -> dict:
        version, internal, gauss = self.rng.getstate()
        return {"iteration": self.iteration, "config": self.config.to_dict(), "score": self.score,
                "values": dict(values), "initial_values": self.initial, "schedule_offset": self.schedule_offset,
                "landing": {"steps": self.land_steps, "scored": self.land_scored, "landed": self.landed,
                            "rejected": [c.to_dict() for c in self.rejected], "floor": self.floor},
                "rng_state": [version, list(internal), gauss], "done": done, "elapsed_s": round(self.elapsed(), 3)}

    @classmethod
    def from_state(cls, state: Mapping[str, Any], seed: int, t0: float) -> _Progress:
        """The progress `state` (checked by `files.SearchFiles.read_state`) holds."""
        rng = random.Random(seed)
        version, internal, gauss = state["rng_state"]
        rng.setstate((version, tuple(internal), gauss))
        landing = state.get("landing") or {}
        return cls(SubnetConfig.from_dict(state["config"]), state["score"], state["iteration"],
                   state["initial_values"], rng, state["elapsed_s"], t0, int(state.get("schedule_offset", 0)),
                   int(landing.get("steps", 0)), int(landing.get("scored", 0)), bool(landing.get("landed", False)),
                   [SubnetConfig.from_dict(c) for c in landing.get("rejected", [])], landing.get("floor"))


def run_mcd(space: SearchSpace, constraints: Sequence[Constraint], scorer: Scorer, out: str | Path,
            mcd: MCDConfig = MCDConfig(), start: SubnetConfig | None = None, resume: bool = False,
            report_metrics: Sequence[Metric] = (), log: Callable[[str], None] = print,
            meta: Mapping[str, Any] | None = None, origin: ScheduleOrigin | None = None) -> SearchResult:
    """Run (or resume) MCD from `start` (default: the max network) until every constraint holds,
    then land (`landing.py`, unless ``mcd.land`` is off).

    `constraints`: each candidate must meet every constraint's iteration target.
    `scorer`: config -> score, higher is better (`scoring.SupernetScorer` or any callable).
    `report_metrics`: extra metrics recorded for the winner of each iteration (e.g. LUT
    latency in a MAC-constrained search). `meta`: stored in state/final (e.g. the CLI inputs).
    `origin`: where the reduction schedule starts (a later target of a chain; default: this
    search's start network at iteration 0).
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
    progress = _begin(space, scorer, files, identity, values_of, mcd.seed, start, resume, emit, origin)

    def checkpoint(done: bool) -> None:
        files.write_state({**identity, **progress.state(values_of(progress.config), done), "meta": meta})

    def stop_now() -> bool:
        if mcd.stop_after is None or progress.ran < mcd.stop_after:
            progress.ran += 1
            return False
        emit(f"stopping after {progress.ran} iteration(s) of this run (--stop-after); continue with --resume")
        return True

    def unfinished() -> SearchResult:
        return SearchResult(progress.config, values_of(progress.config), progress.score, progress.iteration,
                            progress.elapsed(), False, progress.land_steps, _scored(files))

    checkpoint(done=False)
    while not meets(values_of(progress.config), limits):
        if progress.iteration >= mcd.max_iterations:
            raise SearchError(f"the constraints still do not hold after {progress.iteration} iterations; "
                              f"raise --max-iterations and pass --resume")
        if stop_now():
            return unfinished()
        _iterate(space, constraints, scorer, mcd, progress, files, values_of, emit)
        checkpoint(done=False)

    while mcd.land and not progress.landed:
        if progress.land_scored < mcd.land_budget and stop_now():
            return unfinished()
        _land_step(space, constraints, scorer, mcd, progress, files, values_of, emit)
        checkpoint(done=False)

    final_values = values_of(progress.config)
    elapsed = progress.elapsed()
    checkpoint(done=True)
    unused = unused_budget(final_values, limits)
    files.write_final(final_record(space, progress.config, final_values, progress.score, limits=limits,
                                   iterations=progress.iteration, search_time_s=round(elapsed, 3),
                                   mcd=mcd.identity(), meta=meta, unused_budget=unused,
                                   landing_steps=progress.land_steps, landing_scored=progress.land_scored))
    emit(f"done after {progress.iteration} iteration(s) + {progress.land_steps} landing step(s), {elapsed:.1f}s: "
         f"{describe_values(final_values)} score={progress.score:.4f} unused "
         + " ".join(f"{n}={u:.1%}" for n, u in unused.items()) + f" -> {files.out / FINAL}")
    return SearchResult(progress.config, final_values, progress.score, progress.iteration, elapsed, True,
                        progress.land_steps, _scored(files))


def _scored(files: SearchFiles) -> int:
    """Candidates scored by the search in `files` (every MCD iteration and landing step)."""
    return sum(len(r.get("candidates", [])) for r in files.history())


def _begin(space: SearchSpace, scorer: Scorer, files: SearchFiles, identity: Mapping[str, Any], values_of: _Values,
           seed: int, start: SubnetConfig | None, resume: bool, emit: Callable[[str], None],
           origin: ScheduleOrigin | None) -> _Progress:
    """The progress to continue from: the checkpoint of `files` (resume) or the scored start network."""
    t0 = time.perf_counter()
    files.check(resume)
    state, error = distributed.broadcast(_read_state(files) if resume and files.writer else (None, None))
    if error is not None:  # raised on every rank, so none waits for the others
        raise SearchError(error)
    if state is not None:
        files.check_resumable(state, identity)  # on every rank: all of them stop on a mismatch
        progress = _Progress.from_state(state, seed, t0)
        files.rewind_history(progress.records)
        emit(f"resuming {files.out} at iteration {progress.iteration}"
             + (f" + {progress.land_steps} landing step(s)" if progress.land_steps else "") + ": "
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
    if origin is None:
        return _Progress(current, score, 0, initial, random.Random(seed), 0.0, t0)
    return _Progress(current, score, 0, dict(origin.initial), random.Random(seed), 0.0, t0, origin.iterations)


def _read_state(files: SearchFiles) -> tuple[dict | None, str | None]:
    """(the checkpoint, None) or (None, the one-line error reading it); rank 0 reads."""
    try:
        return files.read_state(), None
    except SearchError as exc:
        return None, str(exc)


def _iterate(space: SearchSpace, constraints: Sequence[Constraint], scorer: Scorer, mcd: MCDConfig,
             progress: _Progress, files: SearchFiles, values_of: _Values, emit: Callable[[str], None]) -> None:
    """One MCD iteration: targets, candidates (rank 0, broadcast), scores (split), the best wins."""
    progress.iteration += 1
    t_iter = time.perf_counter()
    now = values_of(progress.config)
    targets = {c.name: mcd.schedule.target(progress.iteration + progress.schedule_offset, now[c.name],
                                           progress.initial[c.name], c.limit)
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
        "values": best_values, "score": progress.score, **_standard_error(scorer, progress.score),
        "elapsed_s": round(elapsed, 3),
        "generate_s": round(t_gen, 3), "score_s": round(time.perf_counter() - t_iter - t_gen, 3),
        "candidates": [{**c.to_dict(), "score": s, **_standard_error(scorer, s)} for c, s in zip(candidates, scores)],
    })
    emit(f"iter {progress.iteration}: target {_describe_targets(targets)} | best {describe_values(best_values)} "
         f"score={progress.score:.4f} | {len(candidates)} candidates | {elapsed:.1f}s")


def _standard_error(scorer: Scorer, score: float) -> dict:
    """``{"score_se": se}`` where the scorer knows its score's standard error (`SupernetScorer`), else {}."""
    se = getattr(scorer, "standard_error", None)
    value = se(score) if se is not None else None
    return {} if value is None else {"score_se": round(value, 5)}


def _land_step(space: SearchSpace, constraints: Sequence[Constraint], scorer: Scorer, mcd: MCDConfig,
               progress: _Progress, files: SearchFiles, values_of: _Values, emit: Callable[[str], None]) -> None:
    """One landing step: score up to J single-step growths that fit every limit, keep the winner
    (`landing.pick`); marks the phase over when none fits or the landing budget is spent."""
    t_step = time.perf_counter()
    limits = {c.name: c.limit for c in constraints}
    if progress.floor is None:
        progress.floor = progress.score
    count = min(mcd.candidates, mcd.land_budget - progress.land_scored)
    candidates: list[Candidate] | None = None
    fitting = 0
    if files.writer and count > 0:
        candidates, fitting = landing_candidates(space, progress.config, constraints, progress.rng, count,
                                                 mcd.layers, progress.rejected)
    candidates, fitting = distributed.broadcast((candidates, fitting))
    if not candidates:
        progress.landed = True
        unused = unused_budget(values_of(progress.config), limits)
        why = ("no growth or trade fills more of the budget" if count > 0
               else f"landing budget ({mcd.land_budget} scored) spent")
        emit(f"landed after {progress.land_steps} step(s): {why}; unused "
             + " ".join(f"{n}={u:.1%}" for n, u in unused.items()))
        return
    t_gen = time.perf_counter() - t_step
    scores = score_all([c.config for c in candidates], scorer)
    best = pick(candidates, scores, progress.score, values_of(progress.config), limits, progress.floor)
    progress.land_steps += 1
    progress.land_scored += len(candidates)
    if best is None:  # every candidate was a trade scoring below the floor
        progress.rejected += [c.config for c in candidates]
    else:
        progress.config, progress.score, progress.rejected = candidates[best].config, scores[best], []
    values = values_of(progress.config)
    unused = unused_budget(values, limits)
    elapsed = progress.elapsed()
    moved = candidates[best].shrunk if best is not None else ()
    files.append_history({
        "iteration": progress.records, "phase": "land", "land_step": progress.land_steps, "targets": limits,
        "best": best, "kept": best is not None, "grown": moved[0] if moved else None, "traded": list(moved[1:]),
        "fitting": fitting, "config": progress.config.to_dict(), "values": values, "score": progress.score,
        "unused_budget": unused, "elapsed_s": round(elapsed, 3), "generate_s": round(t_gen, 3),
        "score_s": round(time.perf_counter() - t_step - t_gen, 3),
        "candidates": [{"config": c.config.to_dict(), "grown": c.shrunk[0], "traded": list(c.shrunk[1:]),
                        "values": dict(c.values), "score": s} for c, s in zip(candidates, scores)],
    })
    what = (f"no trade kept (each scored below {progress.floor:.4f}, MCD's network)" if best is None
            else f"grow {moved[0]}" + (f", shrink {', '.join(moved[1:])}" if len(moved) > 1 else ""))
    emit(f"land {progress.land_steps}: {what} | {describe_values(values)} score={progress.score:.4f} | unused "
         + " ".join(f"{n}={u:.1%}" for n, u in unused.items())
         + f" | {len(candidates)} scored ({fitting} growths fit) | {elapsed:.1f}s")
