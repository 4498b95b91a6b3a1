"""Benchmark one batch of a build, measuring it again while the machine drifts.

Every batch carries the overhead model first and the slice's reference layer second (see
`calibrate.py`); a batch whose reference drifts more than `drift_pct` from the slice's
anchor is benchmarked again, at most `max_remeasure` times, and its drift is kept either way.
A batch whose numbers no run can give (`device_agents.contract.BadTiming`: negative, zero,
nan/inf, a median outside min..max) is benchmarked once more; a second bad result stops the
build with that one line, and no row of the batch is written.
"""
from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from collections.abc import Callable, Sequence

from device_agents.contract import BadTiming, BatchResult, BenchmarkSettings

from . import calibrate
from .build_types import BuildOptions


@dataclass(frozen=True)
class BatchMeasurement:
    """The kept benchmark of one batch. Times in ms, drift in %."""

    result: BatchResult  # timings: overhead model, reference layer, then the batch's layers
    reference_ms: float  # raw median of the reference layer in this batch
    overhead_ms: float  # raw median of the overhead model in this batch
    drift_pct: float  # reference_ms against the slice's anchor
    attempts: int  # benchmarks run for this batch (1 = no re-measure)

    @property
    def layer_timings(self):
        """The timings of the batch's own layers (after the overhead model and the reference)."""
        return self.result.timings[2:]


def measure_batch(agent, paths: Sequence[Path], settings: BenchmarkSettings, reference: calibrate.Reference,
                  options: BuildOptions, say: Callable[[str], None]) -> BatchMeasurement:
    """Benchmark `paths` (overhead model, reference layer, layers) on `agent`; re-measure while
    the reference drifts (module docstring)."""
    attempts = 0
    bad_before = False
    while True:
        if hasattr(agent, "settle"):
            agent.settle(options.settle_s)
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
        if abs(drift) <= options.drift_pct or attempts > options.max_remeasure:
            if abs(drift) > options.drift_pct:
                say(f"lutbuild: warning: reference layer drifted {drift:+.1f}% after {attempts} attempt(s); "
                    "rows written with their drift recorded")
            return BatchMeasurement(result, ref_ms, overhead_ms, drift, attempts)
        say(f"lutbuild: reference layer drifted {drift:+.1f}% (> {options.drift_pct}%): re-measuring the batch")
