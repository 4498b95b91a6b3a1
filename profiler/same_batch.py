"""Whole models and their own LUT layer files, timed in the same runner batches.

This host's core switches for seconds to minutes into a state ~1.4x slower (docs/predict.md,
"Why the LUT sum misses"), so a whole model measured minutes after its LUT rows can be in
the other state. Timing the model's own layer files in the same runner process, in the
same interleaved passes, gives a second reference that saw the same host state: the sum of
their medians (each minus the batch's overhead, as a LUT row is stored) plus one overhead,
i.e. the LUT's prediction made of this batch's timings ("layers now"). The error of a model
against it is the additivity of the LUT alone, with the host's drift since the build taken
out. Used by `lutbuild verify --same-batch`, `lutbuild calibrate` (the composition factor,
`composition.py`) and `benchmarks/bench_predict.py --same-batch`; `time_rounds` is the one loop
that times such groups in rounds.
"""
from __future__ import annotations

import statistics
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path

from tqdm import tqdm

from device_agents.contract import BenchmarkSettings
from device_agents.device_state import others_busy

from . import calibrate
from .build_types import BuildOptions
from .measure import measure_batch


@dataclass(frozen=True)
class Group:
    """One whole model and the layer file of every term of its LUT prediction (repeats kept)."""

    model: Path
    layers: tuple[Path, ...]
    copies: tuple[int, ...] = ()  # per layer file: the copies it holds (weights-cold files, `cold_models.py`)


@dataclass(frozen=True)
class BatchLayout:
    """Where each group's files sit in one runner batch (indices into `files`)."""

    files: list[Path]  # what the runner times, in this order
    model_at: list[int]  # per group: its whole model
    layers_at: list[tuple[int, ...]]  # per group: each term of its prediction (a repeated layer: its index again)


def plan_batch(extra: Sequence[Path], groups: Sequence[Group], share_layers: bool = True) -> BatchLayout:
    """`extra` first (the overhead model at 0), then each group: its model, then its layer files.

    A layer file that occurs twice in one group is timed once and counted twice. With
    `share_layers`, a layer file already in the batch (another group's) is not timed again;
    without it every group gets its own copy right after its model, so the model and its
    layers run close in time within each interleaved pass (at the cost of more runs).
    """
    files = list(extra)
    shared: dict[Path, int] = {}
    model_at: list[int] = []
    layers_at: list[tuple[int, ...]] = []
    for group in groups:
        model_at.append(len(files))
        files.append(group.model)
        where = shared if share_layers else {}
        for path in dict.fromkeys(group.layers):
            if path not in where:
                where[path] = len(files)
                files.append(path)
        layers_at.append(tuple(where[p] for p in group.layers))
    return BatchLayout(files, model_at, layers_at)


def layers_now_ms(medians_ms: Sequence[float], positions: Sequence[int], overhead_ms: float,
                  copies: Sequence[int] = ()) -> float:
    """The LUT prediction made of one batch's timings (ms): each term's median minus the
    batch's overhead (a LUT row), summed, plus the overhead once (as `LatencyTable.predict`).
    `copies` (per term; weights-cold files, `cold_models.py`): a file of N copies gives 1/N of it."""
    per_file = copies or (1,) * len(positions)
    return sum((medians_ms[p] - overhead_ms) / n for p, n in zip(positions, per_file)) + overhead_ms


@dataclass(frozen=True)
class SameBatch:
    """One model's same-batch figures over the rounds (ms)."""

    round_whole_ms: list[float]
    round_layers_now_ms: list[float]
    round_whole_p10_ms: list[float] = field(default_factory=list)  # the fast-state figures (10th percentile)
    round_layers_now_p10_ms: list[float] = field(default_factory=list)  # the layers' p10 less the overhead, summed

    @property
    def layers_now_ms(self) -> float:
        return statistics.median(self.round_layers_now_ms)

    @property
    def ratio_layers_to_whole(self) -> float:
        """Median over rounds of layers-now / whole: the paired (same-state) prediction ratio."""
        return statistics.median(s / m for s, m in zip(self.round_layers_now_ms, self.round_whole_ms))

    @property
    def error_pct(self) -> float:
        """% by which the layers timed beside the model over-predict it (negative: under)."""
        return 100 * (self.ratio_layers_to_whole - 1)

    @property
    def ratio_p10_layers_to_whole(self) -> float:
        """Median over rounds of layers-now p10 / whole p10: the paired fast-state ratio."""
        return statistics.median(s / m for s, m in zip(self.round_layers_now_p10_ms, self.round_whole_p10_ms))

    @property
    def error_p10_pct(self) -> float:
        """`error_pct` of the fast state (10th percentiles)."""
        return 100 * (self.ratio_p10_layers_to_whole - 1)


@dataclass
class RoundTimings:
    """Raw results of `time_rounds` (ms; CoV as fractions), per group in the order given."""

    per_round: list[list[float]]  # per group: its model's median in each round
    run_cov: list[list[float]]  # per group: CoV of its model's runs in each round
    reference_ms: list[float] = field(default_factory=list)  # the reference layer, per benchmark process
    overhead_ms: list[float] = field(default_factory=list)  # the overhead model, per benchmark process
    layers_now: list[list[float]] | None = None  # `same_batch`: per group, its layers' sum in each round
    p10_per_round: list[list[float]] = field(default_factory=list)  # per group: its model's p10 per round
    layers_now_p10: list[list[float]] = field(default_factory=list)  # `same_batch`: its layers' p10 sum per round
    others_busy: list[float] = field(default_factory=list)  # per benchmark process: the busiest other core (0..1)
    remeasured: int = 0  # benchmark processes run again: their reference was slower than the LUT's fast state

    def same_batch(self) -> list[SameBatch] | None:
        """Per group, its `SameBatch` figures (None without `same_batch`)."""
        if self.layers_now is None:
            return None
        return [SameBatch(*rounds) for rounds in zip(self.per_round, self.layers_now, self.p10_per_round,
                                                     self.layers_now_p10)]


def time_rounds(agent, groups: Sequence[Group], extra: Sequence[Path], chunks: Sequence[Sequence[int]],
                settings: BenchmarkSettings, rounds: int, bar: tqdm | None = None,
                gate: calibrate.Reference | None = None, same_batch: bool = True,
                remeasure: int = 1) -> RoundTimings:
    """`rounds` passes over the groups, one benchmark process per chunk (indices into `groups`),
    `extra` first in each (the overhead model, then the reference layer when gated); with
    `same_batch`, each group's layer files right after its model (its own copies: close in
    time). With `gate` (the slice's reference, `extra[1]`, and its fast-state anchor), a process
    whose reference runs slower than the build allows is run again, at most `remeasure` times
    (`measure.measure_batch`, the build's own rule)."""
    gate_options = BuildOptions(max_remeasure=remeasure)
    # the measured core of a 1-thread benchmark (several threads use more): the others' busy share is the co-runners'
    core = agent.info().cpu_core if settings.threads == 1 else ""
    timings = RoundTimings([[] for _ in groups], [[] for _ in groups],
                           layers_now=[[] for _ in groups] if same_batch else None,
                           p10_per_round=[[] for _ in groups], layers_now_p10=[[] for _ in groups])
    for _ in range(rounds):
        for chunk in chunks:
            chosen = [groups[i] if same_batch else Group(groups[i].model, ()) for i in chunk]
            layout = plan_batch(extra, chosen, share_layers=False)
            if gate is None:
                if hasattr(agent, "settle"):
                    agent.settle(gate_options.settle_s)
                result = agent.benchmark(layout.files, settings)
            else:
                kept = measure_batch(agent, layout.files, settings, gate, gate_options, lambda line: None)
                result = kept.result
                timings.remeasured += kept.attempts > 1
            medians = [t.median_ms for t in result.timings]
            p10 = [t.p10_ms for t in result.timings]
            busy = others_busy(result.state_before, result.state_after, core)
            if busy is not None:
                timings.others_busy.append(busy)
            timings.overhead_ms.append(medians[0])
            if len(extra) > 1:
                timings.reference_ms.append(medians[1])
            for i, group, at, layers_at in zip(chunk, chosen, layout.model_at, layout.layers_at):
                timings.per_round[i].append(medians[at])
                timings.run_cov[i].append(result.timings[at].cov)
                timings.p10_per_round[i].append(p10[at])
                if timings.layers_now is not None:
                    timings.layers_now[i].append(layers_now_ms(medians, layers_at, medians[0], group.copies))
                    timings.layers_now_p10[i].append(layers_now_ms(p10, layers_at, medians[0], group.copies))
            if bar is not None:
                bar.update(1)
    return timings
