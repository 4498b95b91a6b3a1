"""The MCD loop: shrink the network iteration by iteration until every constraint holds.

One iteration (NetAdaptV2, "multi-layer coordinate descent"):
1. each constraint's target comes from the decaying schedule (`schedule.py`), never below
   its limit, so the last iteration lands on the constraint;
2. J candidates each shrink L random dimensions just enough to meet every target
   (`candidates.py`), deduplicated;
3. every candidate is scored (super-network weights, BN recalibrated, held-out split; or any
   scorer) - split over `torch.distributed` ranks and gathered;
4. the best-scoring candidate becomes the current network.

Files in the output folder (written by rank 0 only):
- ``history.jsonl``: iteration 0 is the start network; then one line per iteration with the
  targets, every candidate (config, shrunk dimensions, metric values, score) and the winner.
- ``state.json``: checkpoint after every iteration (current config, iteration, RNG state,
  options); ``--resume`` continues from it and reaches the same final network as an
  uninterrupted run with the same seed.
- ``final.json``: the searched architecture (config, block strings, metric values, MACs,
  continuous depth, score) once every constraint holds.
"""
from __future__ import annotations

import dataclasses
import json
import os
import random
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable, Mapping, Sequence

from search.errors import SearchError
from search.spaces.space import SearchSpace, SubnetConfig

from .candidates import Candidate, generate_candidates, meets
from .metrics import Constraint, Metric
from .schedule import ReductionSchedule
from .scoring import Scorer, broadcast, score_all, world

STATE_FORMAT = 1
HISTORY, STATE, FINAL = "history.jsonl", "state.json", "final.json"


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


def check_out_dir(out: str | Path, resume: bool) -> None:
    """Fail fast on an output folder that holds a search when not resuming (or none when resuming)."""
    state = Path(out) / STATE
    if state.exists() and not resume:
        raise SearchError(f"{out} already holds a search ({STATE}); pass --resume to continue it or choose another --out")
    if resume and not state.exists():
        raise SearchError(f"--resume: {out} holds no search checkpoint ({STATE})")


def _write_json(path: Path, data: Any) -> None:
    tmp = path.with_suffix(path.suffix + ".tmp")
    tmp.write_text(json.dumps(data, indent=1, sort_keys=True) + "\n", encoding="utf-8")
    os.replace(tmp, path)


def _rng_state_to_json(state) -> list:
    version, internal, gauss = state
    return [version, list(internal), gauss]


def _rng_state_from_json(data) -> tuple:
    version, internal, gauss = data
    return version, tuple(internal), gauss


def read_history(out: str | Path) -> list[dict]:
    """Records of ``history.jsonl`` (a torn last line of a killed run is skipped)."""
    path = Path(out) / HISTORY
    records = []
    if path.exists():
        for line in path.read_text(encoding="utf-8").splitlines():
            try:
                records.append(json.loads(line))
            except json.JSONDecodeError:
                continue
    return records


def _truncate_history(out: Path, last_iteration: int) -> None:
    """Drop history lines after the checkpoint (a kill between the two writes)."""
    kept = [r for r in read_history(out) if r["iteration"] <= last_iteration]
    (out / HISTORY).write_text("".join(json.dumps(r, sort_keys=True) + "\n" for r in kept), encoding="utf-8")


def describe_values(values: Mapping[str, float]) -> str:
    parts = []
    for name, value in values.items():
        parts.append(f"{name}={value / 1e6:.3f}M" if name == "macs" else f"{name}={value:.3f}")
    return " ".join(parts)


def final_record(space: SearchSpace, config: SubnetConfig, values: Mapping[str, float], score: float,
                 **extra) -> dict:
    """The architecture as ``final.json`` holds it (readable without this code)."""
    return {
        "space": space.name,
        "config": config.to_dict(),
        "block_strings": space.block_strings(config),
        "values": dict(values),
        "latency_ms": values.get("latency_ms"),
        "measured_ms": values.get("measured_ms"),
        "macs": space.macs(config),
        "depth": round(space.depth(config), 3),
        "accuracy": score,
        **extra,
    }


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
    out = Path(out)
    rank, _ = world()
    is_main = rank == 0
    emit = log if is_main else (lambda _line: None)
    limits = {c.name: c.limit for c in constraints}
    metrics: dict[str, Metric] = {c.name: c.metric for c in constraints}
    for metric in report_metrics:
        metrics.setdefault(metric.name, metric)

    def values_of(cfg: SubnetConfig) -> dict[str, float]:
        return {name: metric.value(cfg) for name, metric in metrics.items()}

    t0 = time.perf_counter()
    rng = random.Random(mcd.seed)
    state = None
    if is_main:
        check_out_dir(out, resume)
        if resume:
            state = json.loads((out / STATE).read_text(encoding="utf-8"))
    state = broadcast(state)
    if state is not None:
        _check_resumable(state, space, limits, mcd, out)
        current = SubnetConfig.from_dict(state["config"])
        iteration, score = state["iteration"], state["score"]
        initial = state["initial_values"]
        elapsed_before = state["elapsed_s"]
        rng.setstate(_rng_state_from_json(state["rng_state"]))
        if is_main:
            _truncate_history(out, iteration)
        emit(f"resuming {out} at iteration {iteration}: {describe_values(values_of(current))} score={score:.4f}")
    else:
        if is_main:
            out.mkdir(parents=True, exist_ok=True)
            (out / HISTORY).write_text("", encoding="utf-8")
        current = space.canonical(start or space.max_config())
        space.validate(current)
        iteration, elapsed_before = 0, 0.0
        initial = values_of(current)
        score = score_all([current], scorer)[0]
        emit(f"iter 0: start {describe_values(initial)} score={score:.4f}")
        _append(out, is_main, {"iteration": 0, "config": current.to_dict(), "values": initial, "score": score,
                               "elapsed_s": round(time.perf_counter() - t0, 3)})

    def checkpoint(done: bool) -> None:
        if is_main:
            _write_json(out / STATE, {
                "format": STATE_FORMAT, "space": space.name, "limits": limits, "mcd": mcd.identity(),
                "iteration": iteration, "config": current.to_dict(), "score": score,
                "values": values_of(current), "initial_values": initial,
                "rng_state": _rng_state_to_json(rng.getstate()), "done": done,
                "elapsed_s": round(elapsed_before + time.perf_counter() - t0, 3), "meta": dict(meta or {}),
            })

    checkpoint(done=False)
    ran = 0
    while not meets(values_of(current), limits):
        if iteration >= mcd.max_iterations:
            raise SearchError(f"the constraints still do not hold after {iteration} iterations; "
                              f"raise --max-iterations and pass --resume")
        if mcd.stop_after is not None and ran >= mcd.stop_after:
            emit(f"stopping after {ran} iteration(s) of this run (--stop-after); continue with --resume")
            return SearchResult(current, values_of(current), score, iteration,
                                elapsed_before + time.perf_counter() - t0, False)
        iteration += 1
        ran += 1
        t_iter = time.perf_counter()
        now = values_of(current)
        targets = {c.name: mcd.schedule.target(iteration, now[c.name], initial[c.name], c.limit)
                   for c in constraints}
        candidates: list[Candidate] | None = None
        if is_main:
            candidates = generate_candidates(space, current, constraints, targets, rng, mcd.candidates, mcd.layers)
        candidates = broadcast(candidates)
        t_gen = time.perf_counter() - t_iter
        scores = score_all([c.config for c in candidates], scorer)
        best = max(range(len(candidates)), key=lambda i: (scores[i], -i))
        current, score = candidates[best].config, scores[best]
        best_values = values_of(current)
        elapsed = elapsed_before + time.perf_counter() - t0
        _append(out, is_main, {
            "iteration": iteration, "targets": targets, "best": best, "config": current.to_dict(),
            "values": best_values, "score": score, "elapsed_s": round(elapsed, 3),
            "generate_s": round(t_gen, 3), "score_s": round(time.perf_counter() - t_iter - t_gen, 3),
            "candidates": [{**c.to_dict(), "score": s} for c, s in zip(candidates, scores)],
        })
        checkpoint(done=False)
        target_text = " ".join(f"{n}<={t / 1e6:.3f}M" if n == "macs" else f"{n}<={t:.3f}"
                               for n, t in targets.items())
        emit(f"iter {iteration}: target {target_text} | best {describe_values(best_values)} "
             f"score={score:.4f} | {len(candidates)} candidates | {elapsed:.1f}s")

    final_values = values_of(current)
    elapsed = elapsed_before + time.perf_counter() - t0
    checkpoint(done=True)
    if is_main:
        _write_json(out / FINAL, final_record(space, current, final_values, score, limits=limits,
                                              iterations=iteration, search_time_s=round(elapsed, 3),
                                              mcd=mcd.identity(), meta=dict(meta or {})))
    emit(f"done after {iteration} iteration(s), {elapsed:.1f}s: {describe_values(final_values)} "
         f"score={score:.4f} -> {out / FINAL}")
    return SearchResult(current, final_values, score, iteration, elapsed, True)


def _append(out: Path, is_main: bool, record: dict) -> None:
    if is_main:
        with open(out / HISTORY, "a", encoding="utf-8") as f:
            f.write(json.dumps(record, sort_keys=True) + "\n")


def _check_resumable(state: Mapping, space: SearchSpace, limits: Mapping[str, float], mcd: MCDConfig,
                     out: Path) -> None:
    if state.get("format") != STATE_FORMAT:
        raise SearchError(f"{out / STATE}: unknown checkpoint format {state.get('format')!r}")
    if state["space"] != space.name:
        raise SearchError(f"--resume: {out} searched space {state['space']!r}, not {space.name!r}")
    if {k: float(v) for k, v in state["limits"].items()} != {k: float(v) for k, v in limits.items()}:
        raise SearchError(f"--resume: {out} searched for {state['limits']}, not {dict(limits)}; "
                          "use the same targets or another --out")
    if state["mcd"] != json.loads(json.dumps(mcd.identity())):
        raise SearchError(f"--resume: {out} was searched with {state['mcd']}, not {mcd.identity()}")
