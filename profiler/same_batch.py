"""Whole models and their own LUT layer files, timed in the same runner batches.

This host's core switches for seconds to minutes into a state ~1.4x slower (docs/predict.md,
"Why the LUT sum misses"), so a whole model measured minutes after its LUT rows can be in
the other state. Timing the model's own layer files in the same runner process, in the
same interleaved passes, gives a second reference that saw the same host state: the sum of
their medians (each minus the batch's overhead, as a LUT row is stored) plus one overhead,
i.e. the LUT's prediction made of this batch's timings ("layers now"). The error of a model
against it is the additivity of the LUT alone, with the host's drift since the build taken
out. Used by `lutbuild verify --same-batch` and `benchmarks/bench_predict.py --same-batch`.
"""
from __future__ import annotations

import statistics
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path


@dataclass(frozen=True)
class Group:
    """One whole model and the layer file of every term of its LUT prediction (repeats kept)."""

    model: Path
    layers: tuple[Path, ...]


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
