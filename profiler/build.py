"""The build loop: plan -> batches -> export -> benchmark on the device -> LUT rows.

This is the single-device loop (`--device local`); phones, and several devices at once,
go through `multi_device.build_lut_multi` (one worker per device, one writer), which
shares `_measure`, `_row` and `_interpolate` with it.

Per batch: export the missing model files (worker processes), *then* benchmark the batch
with the exporters idle (never both on the same cores), then write every row of the batch
in one transaction. A kill at any moment loses at most the batch in flight and never
leaves a half row; re-running skips every key the slice (device, runtime, options) already
measured, and the export cache makes already exported files free.

Noise protocol (medians of one model drift ~±3% between processes over time, ≤1.4% within
one): each batch is timed with `repeats` interleaved passes (runner `--repeats`), and
carries the overhead model and a fixed reference layer (see `calibrate.py`); a batch whose
reference drifts more than `drift_pct` from the slice's median so far is re-measured up to
`max_remeasure` times, and its drift is stored with its rows either way.
"""
from __future__ import annotations

import dataclasses
import sys
import time
import uuid
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable

from device_agents.contract import BatchResult, BenchmarkSettings
from lut_db.interpolate import interpolate_layers
from lut_db.layer_key import LayerConfig, RuntimeSpec
from lut_db.schema import open_lut
from lut_db.writer import DeviceRecord, LutWriter, MeasurementRow

from . import calibrate
from .errors import ProfilerError
from .export import ModelCache, check_runtime
from .plan import Plan, batches, make_plan, reference_layer
from .spaces import resolve_space

DEFAULT_CACHE_DIR = Path("~/.cache/netadaptv2/models")


TFLITE_DELEGATES = ("xnnpack", "none")


def slice_runtime(runtime: str, threads: int = 1, version: str = "", delegate: str = "xnnpack") -> RuntimeSpec:
    """The `RuntimeSpec` (slice options) a build and a verify of `runtime` use.

    TFLite runs with `delegate` (XNNPACK, the CPU default on Android, or `none`: the builtin
    kernels); ONNX Runtime always with its CPU execution provider, written `delegate=cpu`.
    """
    check_runtime(runtime)
    if runtime == "tflite" and delegate not in TFLITE_DELEGATES:
        raise ProfilerError(f"--delegate: unknown TFLite delegate {delegate!r}, expected one of "
                            f"{', '.join(TFLITE_DELEGATES)}")
    return RuntimeSpec(name=runtime, version=version, threads=threads,
                       delegate=delegate if runtime == "tflite" else "cpu")


def benchmark_settings(runtime: str, threads: int = 1, repeats: int = 3, delegate: str = "xnnpack",
                       **overrides) -> BenchmarkSettings:
    """Agent settings of a slice: the runner's defaults, `repeats` interleaved passes."""
    delegate = delegate if runtime == "tflite" else "none"  # the runner ignores it for ONNX
    return BenchmarkSettings(runtime=runtime, threads=threads, delegate=delegate, repeats=repeats, **overrides)


@dataclass(frozen=True)
class BuildOptions:
    """How `build_lut` runs. Defaults are what `lutbuild build` uses."""

    plan: str = "full"  # "full" or "sparse" (plan.py)
    jobs: int = 2  # export worker processes (the host has 2 cores here)
    threads: int = 1  # runtime threads: single-threaded is what LUTs compare across
    delegate: str = "xnnpack"  # TFLite only: "xnnpack" (Android's CPU default) or "none"
    batch_size: int = 32  # models per benchmark process and per committed transaction
    repeats: int = 3  # interleaved passes over a batch (drift spreads over its models)
    drift_pct: float = 5.0  # re-measure a batch whose reference layer drifts more (%)
    max_remeasure: int = 1  # re-measurements per batch before its rows are written anyway
    settle_s: float = 60.0  # longest wait for a throttled device before a batch (s)
    limit: int | None = None  # measure at most this many keys in this run (tests, trials)
    cache_dir: Path = DEFAULT_CACHE_DIR  # exported model files, shared by every LUT
    settings: dict = field(default_factory=dict)  # BenchmarkSettings overrides (warmup_runs, ...)


@dataclass
class BuildReport:
    """What one `build_lut` call did. Times in seconds."""

    space: str
    plan: str
    device_id: str
    runtime: str
    runtime_version: str
    runtime_options: str
    planned: int  # keys the plan measures
    already_measured: int  # of those, measured before this run (resume)
    measured: int = 0  # keys measured by this run
    interpolated: int = 0  # interpolated rows written by this run
    not_interpolated: int = 0  # keys that could not be estimated (left missing)
    exported: int = 0  # model files exported (not found in the cache)
    export_cpu_s: float = 0.0
    export_s: float = 0.0  # wall time spent exporting
    benchmark_s: float = 0.0  # wall time spent benchmarking
    wall_s: float = 0.0
    remeasured_batches: int = 0
    drifted_batches: int = 0  # written although the reference still drifted
    overhead_ms: float | None = None
    reconnects: int = 0  # dropped connections the device agent recovered from (phones)

    def summary(self) -> str:
        return (f"{self.space} on {self.device_id} ({self.runtime} {self.runtime_version}, {self.runtime_options}), "
                f"plan {self.plan}: measured {self.measured} key(s) now, {self.already_measured} before, "
                f"{self.planned} planned; interpolated {self.interpolated}; exported {self.exported} file(s) "
                f"in {self.export_s:.1f} s, benchmarked in {self.benchmark_s:.1f} s, total {self.wall_s:.1f} s; "
                f"overhead {self.overhead_ms if self.overhead_ms is None else round(self.overhead_ms, 4)} ms"
                + (f"; {self.reconnects} reconnect(s)" if self.reconnects else ""))


def build_lut(space, agent, db_path: str | Path, runtime: str, options: BuildOptions = BuildOptions(),
              progress: bool = True, log: Callable[[str], None] | None = None) -> BuildReport:
    """Fill the LUT at `db_path` for `space` (name or `SearchSpace`) on `agent`'s device.

    User errors (unknown space/plan/runtime, a file that is not a LUT or has a newer schema)
    are raised before the file is touched.
    """
    start = time.monotonic()
    space = resolve_space(space)
    slice_runtime(runtime, options.threads, delegate=options.delegate)  # option errors before any work
    plan = make_plan(space, options.plan)
    info = agent.info()
    rt = slice_runtime(runtime, options.threads, agent.runtime_version(runtime), options.delegate)
    db = open_lut(db_path, create=True)
    try:
        return _build(db, space, plan, agent, info, rt, options, progress, log, start)
    finally:
        db.close()


def _build(db, space, plan: Plan, agent, info, rt: RuntimeSpec, options: BuildOptions, progress: bool, log,
           start: float) -> BuildReport:
    from tqdm import tqdm

    writer = LutWriter(db)
    writer.register_device(DeviceRecord.from_info(info))
    writer.register_space(space.name, plan.keys)
    slice_key = (info.device_id, rt.name, rt.options)
    measured = writer.measured_keys(*slice_key)
    remaining = plan.remaining(measured)
    todo = remaining[:options.limit] if options.limit is not None else remaining
    report = BuildReport(space.name, plan.name, info.device_id, rt.name, rt.version, rt.options,
                         planned=len(plan.measure), already_measured=len(plan.measure) - len(remaining))
    reference = calibrate.load_reference(db, *slice_key, default=reference_layer(plan.measure))
    settings = benchmark_settings(rt.name, rt.threads, options.repeats, options.delegate, **options.settings)
    bar = tqdm(total=len(todo), desc=f"lutbuild {space.name} {rt.name}", unit="layer", file=sys.stderr,
               disable=not progress, dynamic_ncols=True)
    say = log or (lambda msg: bar.write(msg, file=sys.stderr))
    try:
        with ModelCache(options.cache_dir, rt.name, options.jobs) as cache:
            for batch in batches(todo, options.batch_size):
                t0 = time.monotonic()
                paths = [cache.overhead(), *cache.layers([reference.layer, *batch])]
                t1 = time.monotonic()
                result, ref_ms, overhead_ms, drift, attempts = _measure(agent, paths, settings, reference, options,
                                                                        say)
                report.export_s += t1 - t0
                report.benchmark_s += time.monotonic() - t1
                report.remeasured_batches += attempts > 1
                report.drifted_batches += abs(drift) > options.drift_pct
                provenance = {"batch": uuid.uuid4().hex[:12], "overhead_ms": overhead_ms,
                              "reference_key": reference.layer.key, "reference_ms": ref_ms,
                              "reference_drift_pct": round(drift, 3), "repeats": settings.repeats,
                              "attempts": attempts}
                rows = [_row(cfg, timing, overhead_ms, result, info, rt, plan.name, settings, provenance)
                        for cfg, timing in zip(batch, result.timings[2:])]
                writer.write(rows)  # one transaction: the whole batch or nothing
                reference = calibrate.update_reference(db, writer, *slice_key, reference.layer)
                calibrate.update_overhead(db, writer, *slice_key)
                report.measured += len(rows)
                bar.update(len(batch))
            report.exported, report.export_cpu_s = cache.exported, cache.export_cpu_s
    finally:
        bar.close()
    report.overhead_ms = calibrate.update_overhead(db, writer, *slice_key)
    report.reconnects = getattr(agent, "reconnects", 0)
    if plan.interpolate and len(todo) == len(remaining):
        report.interpolated, report.not_interpolated = _interpolate(db, writer, plan, info.device_id, rt)
        if report.not_interpolated:
            say(f"lutbuild: warning: {report.not_interpolated} key(s) of {space.name} could not be interpolated "
                "(too few measured neighbours); they stay missing")
    report.wall_s = time.monotonic() - start
    return report


def _measure(agent, paths, settings: BenchmarkSettings, reference: calibrate.Reference, options: BuildOptions, say):
    """Benchmark one batch; re-measure while the reference drifts (see module docstring)."""
    attempts = 0
    while True:
        if hasattr(agent, "settle"):
            agent.settle(options.settle_s)
        result: BatchResult = agent.benchmark(paths, settings)
        attempts += 1
        overhead_ms, ref_ms = result.timings[0].median_ms, result.timings[1].median_ms
        drift = calibrate.drift_pct(ref_ms, reference.value_ms)
        if abs(drift) <= options.drift_pct or attempts > options.max_remeasure:
            if abs(drift) > options.drift_pct:
                say(f"lutbuild: warning: reference layer drifted {drift:+.1f}% after {attempts} attempt(s); "
                    "rows written with their drift recorded")
            return result, ref_ms, overhead_ms, drift, attempts
        say(f"lutbuild: reference layer drifted {drift:+.1f}% (> {options.drift_pct}%): re-measuring the batch")


def _row(cfg: LayerConfig, t, overhead_ms: float, result: BatchResult, info, rt: RuntimeSpec, plan: str,
         settings: BenchmarkSettings, provenance: dict) -> MeasurementRow:
    """One measured row. `info` (a `DeviceInfo`) tags it: `device_id` selects the slice, and the
    identity it was measured with (model, SoC, ABI, OS version, core) goes into
    `state_after["profiler"]["device"]`, next to the governor and frequencies of the states,
    so a row stays self-describing after a phone's OS update changes its `devices` entry."""
    def net(ms: float) -> float:
        return max(0.0, ms - overhead_ms)

    identity = {k: getattr(info, k, "") for k in ("model", "soc", "abi", "os_version", "cpu_core")}
    profiler = {**provenance, "device": identity, "raw_median_ms": t.median_ms, "raw_mean_ms": t.mean_ms, "raw_p10_ms": t.p10_ms,
                "raw_p90_ms": t.p90_ms, "min_ms": t.min_ms, "max_ms": t.max_ms, "cov": round(t.cov, 5)}
    return MeasurementRow(
        layer=cfg, device_id=info.device_id, runtime=rt, n=t.n,
        median_ms=net(t.median_ms), mean_ms=net(t.mean_ms), p10_ms=net(t.p10_ms), p90_ms=net(t.p90_ms),
        std_ms=t.std_ms, source="measured", plan=plan, warmup_runs=settings.warmup_runs,
        state_before=dataclasses.asdict(result.state_before),
        state_after={**dataclasses.asdict(result.state_after), "profiler": profiler},
        throttled=bool(result.state_before.throttled or result.state_after.throttled),
    )


def _interpolate(db, writer: LutWriter, plan: Plan, device_id: str, rt: RuntimeSpec) -> tuple[int, int]:
    """Write interpolated rows for the plan's off-grid keys that have no measured row."""
    sql = ("SELECT layer_key, median_ms FROM measurements WHERE device_id = ? AND runtime = ? "
           "AND runtime_options = ? AND source = 'measured'")
    measured = {}
    for key, ms in db.execute(sql, [device_id, rt.name, rt.options]).fetchall():
        try:
            measured[LayerConfig.from_key(key)] = ms
        except ValueError:  # a key of an op this version does not know
            continue
    wanted = [c for c in plan.interpolate if c not in measured]
    estimates = interpolate_layers(measured, wanted)
    rows = [MeasurementRow(layer=cfg, device_id=device_id, runtime=rt, n=0, median_ms=ms, mean_ms=ms, p10_ms=ms,
                           p90_ms=ms, std_ms=0.0, source="interpolated", plan=plan.name)
            for cfg, ms in sorted(estimates.items(), key=lambda item: item[0].key)]
    writer.write(rows)
    return len(rows), len(wanted) - len(rows)
