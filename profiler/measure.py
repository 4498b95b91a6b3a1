"""Benchmark one batch of a build, measuring it again while the machine drifts.

Every batch carries the overhead model first and the slice's reference layer second (see
`calibrate.py`); a batch whose reference runs more than `drift_pct` slower than the slice's
anchor, the device's fast state, is benchmarked again, at most `max_remeasure` times; the
attempt whose reference ran fastest is kept, and its drift is stored either way. A batch
faster than the anchor is kept as it is (the anchor was not yet the fast state; the next
commit lowers it). Why the fast state: this host's core (and a phone that throttles) switches
for seconds to minutes into a state ~1.5x slower; rows from both states in one slice
predict neither, and the fast state is the one a network's p10 and a cool phone show.
Before each attempt the reference is also probed alone (`wait_for_fast_state`: one quick
benchmark of the overhead model and the reference, ~0.2 s on this host) until it runs within
`drift_pct` of the anchor, at most `state_wait_s`: this host's state flips within seconds as
often as it holds for minutes, and a re-run right after a slow attempt mostly met the same
slow stretch (docs/predict.md, "Rows and measurement gated to the fast state").
A batch whose numbers no run can give (`device_agents.contract.BadTiming`: negative, zero,
nan/inf, a median outside min..max) is benchmarked once more; a second bad result stops the
build with that one line, and no row of the batch is written.

In-context batches (`--context nchwc`, `context_models.py`): the layer files are the wrapped
models, and the pair models their boundary tensors need are timed after them in the same
batch (`ContextPlan`); each row is the wrapped median less half of its pairs' medians
(`context_models.context_row_ms`), so the drift of the host cancels within the batch.
Weights-cold batches (`--context cold`, `cold_models.py`): a layer file holds N copies of the
layer; its row is (time - the batch's overhead) / N, each statistic.
"""
from __future__ import annotations

import time
from dataclasses import dataclass, replace
from pathlib import Path
from collections.abc import Callable, Sequence

from device_agents.contract import BadTiming, BatchResult, BenchmarkSettings, ModelTiming
from lut_db.layer_key import LayerConfig

from . import calibrate
from .build_types import BuildOptions
from .cold_models import copies
from .context_models import boundary_tensors, context_row_ms, graph_inputs
from .export import ModelCache
from .runtimes import ALONE, COLD

#: The statistics an in-context row derives, each from the same statistic of its models.
_STATS = ("median_ms", "mean_ms", "p10_ms", "p90_ms", "min_ms", "max_ms")


@dataclass(frozen=True)
class ContextPlan:
    """The pair models an in-context batch times after its layers, and which each layer subtracts."""

    pairs: tuple[Path, ...]  # distinct pair models (then the two-input overhead model), timed after the layers
    of_layer: tuple[tuple[int, ...], ...]  # per layer of the batch: indices into `pairs`
    inputs: tuple[int, ...] = ()  # per layer: graph inputs of its model (default: 1 each)
    two_inputs: int | None = None  # index of the two-input overhead model in `pairs` (a layer has 2 inputs)
    copies: tuple[int, ...] = ()  # per layer: copies of it in its file (weights-cold, cold_models.py); default 1


def context_plan(cache: ModelCache, layers: Sequence[LayerConfig], context: str) -> ContextPlan | None:
    """The `ContextPlan` of a batch of `layers` (None for layers alone, `context` "alone"); the
    pair files are on disk once `cache.layers(layers)` of an in-context cache returned."""
    if context == ALONE:
        return None
    if context == COLD:  # no pairs: each row is its file's time less the overhead, per copy
        return ContextPlan((), tuple(() for _ in layers), copies=tuple(copies(c) for c in layers))
    tensors = [boundary_tensors(c) for c in layers]
    order = sorted({t for ts in tensors for t in ts})
    index = {t: i for i, t in enumerate(order)}
    inputs = tuple(graph_inputs(c) for c in layers)
    pairs = [cache.pair_path(t) for t in order]
    two = None
    if max(inputs, default=1) > 1:
        two, pairs = len(pairs), [*pairs, cache.two_inputs_path()]
    return ContextPlan(tuple(pairs), tuple(tuple(index[t] for t in ts) for ts in tensors), inputs, two)


@dataclass(frozen=True)
class BatchMeasurement:
    """The kept benchmark of one batch. Times in ms, drift in %."""

    result: BatchResult  # timings: overhead model, reference layer, then the batch's layers
    reference_ms: float  # raw median of the reference layer in this batch
    overhead_ms: float  # raw median of the overhead model in this batch
    drift_pct: float  # reference_ms against the slice's anchor
    attempts: int  # benchmarks run for this batch (1 = no re-measure)
    context: ContextPlan | None = None  # in-context batch: the pair models timed after the layers

    @property
    def layer_timings(self) -> list[ModelTiming]:
        """The timings of the batch's own layers (after the overhead model and the reference);
        in-context: each layer's in-context statistics (`context_models.context_row_ms`)."""
        timings = self.result.timings[2:]
        if self.context is None:
            return timings
        plan = self.context
        n = len(plan.of_layer)
        wrapped, pairs = timings[:n], timings[n:]
        inputs = plan.inputs or (1,) * n
        per_file = plan.copies or (1,) * n
        two = pairs[plan.two_inputs].median_ms if plan.two_inputs is not None else None
        return [replace(w, **{s: context_row_ms(getattr(w, s), [getattr(pairs[j], s) for j in js], self.overhead_ms,
                                                k, two) / c for s in _STATS}, std_ms=w.std_ms / c)
                for w, js, k, c in zip(wrapped, plan.of_layer, inputs, per_file)]

    @property
    def row_overhead_ms(self) -> float:
        """What a row subtracts from its layer timing (ms): the batch's per-invoke overhead, or
        nothing for in-context rows (their subtraction already took it out)."""
        return self.overhead_ms if self.context is None else 0.0

    def context_detail(self, i: int) -> dict:
        """Provenance of layer `i`'s in-context row (raw wrapped and pair medians, ms); {} otherwise."""
        if self.context is None:
            return {}
        plan = self.context
        n = len(plan.of_layer)
        timings = self.result.timings
        pairs = [[timings[2 + n + j].name, timings[2 + n + j].median_ms] for j in plan.of_layer[i]]
        if plan.copies:  # weights-cold: the raw time of the N copies
            return {"context": {"copies": plan.copies[i], "file_median_ms": timings[2 + i].median_ms}}
        detail = {"wrapped_median_ms": timings[2 + i].median_ms, "pairs_median_ms": pairs}  # one per boundary tensor
        if plan.inputs and plan.inputs[i] > 1:
            detail.update(inputs=plan.inputs[i], two_inputs_ms=timings[2 + n + plan.two_inputs].median_ms)
        return {"context": detail}


def measure_batch(agent, paths: Sequence[Path], settings: BenchmarkSettings, reference: calibrate.Reference,
                  options: BuildOptions, say: Callable[[str], None],
                  context: ContextPlan | None = None) -> BatchMeasurement:
    """Benchmark `paths` (overhead model, reference layer, layers; then `context`'s pair models)
    on `agent`; re-measure while the reference drifts (module docstring)."""
    paths = [*paths, *(context.pairs if context is not None else ())]
    attempts = 0
    bad_before = False
    fastest: BatchMeasurement | None = None
    while True:
        if hasattr(agent, "settle"):
            agent.settle(options.settle_s)
        wait_for_fast_state(agent, paths[:2], settings, reference, options)
        attempts += 1
        try:
            result: BatchResult = agent.benchmark(paths, settings)
        except BadTiming as exc:
            if bad_before:
                raise
            bad_before = True
            say(f"lutbuild: warning: {exc}; re-measuring the batch once")
            continue
        overhead_ms, ref_ms = result.timings[0].median_ms, result.timings[1].median_ms
        drift = calibrate.drift_pct(ref_ms, reference.value_ms)
        if fastest is None or ref_ms < fastest.reference_ms:
            fastest = BatchMeasurement(result, ref_ms, overhead_ms, drift, attempts, context)
        if drift <= options.drift_pct or attempts > options.max_remeasure:
            kept = replace(fastest, attempts=attempts)
            if kept.drift_pct > options.drift_pct:
                say(f"lutbuild: warning: reference layer still {kept.drift_pct:+.1f}% slower than the fast state "
                    f"after {attempts} attempt(s); rows written from the fastest, their drift recorded")
            return kept
        say(f"lutbuild: reference layer {drift:+.1f}% slower than the fast state (> {options.drift_pct}%): "
            "re-measuring the batch")


def wait_for_fast_state(agent, probe: Sequence[Path], settings: BenchmarkSettings, reference: calibrate.Reference,
                        options: BuildOptions) -> int:
    """Benchmark `probe` (the overhead model, the reference layer) alone, one pass, until the
    reference runs within `options.drift_pct` of the slice's fast state or `options.state_wait_s`
    have passed (polling every `state_poll_s`); return the probes run (0: no anchor yet or no wait).
    A probe's bad timing ends the wait: the batch that follows checks its own."""
    if reference.value_ms is None or options.state_wait_s <= 0:
        return 0
    quick = replace(settings, repeats=1)
    deadline = time.monotonic() + options.state_wait_s
    probes = 0
    while True:
        probes += 1
        try:
            ref_ms = agent.benchmark(probe, quick).timings[1].median_ms
        except BadTiming:
            return probes
        if calibrate.drift_pct(ref_ms, reference.value_ms) <= options.drift_pct or time.monotonic() >= deadline:
            return probes
        time.sleep(options.state_poll_s)
