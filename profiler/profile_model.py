"""`lutbuild profile`: how fast is a user's own model on a device, and which operators cost the time.

`profile_model` times one `.tflite` / `.onnx` file with exactly the LUT's protocol: the same
device agents (`profiler.agents.open_agent`), the same `BenchmarkSettings` (warm-up, >= 50
timed runs and >= 0.05 s per pass, `repeats` interleaved passes pooled, one thread pinned to
the fastest core) and the device's thermal state read before and after. A result no run can
give (`BadTiming`) is measured once more, as in a LUT build.

With `op_profile`, the timed runs are also profiled per operator (`device_agents.contract.
OpProfile`): ONNX Runtime's profiler in the runner (this host or a phone's Python), or
benchmark_model's ``--enable_op_profiling`` on a phone; LiteRT's Python interpreter has no
per-operator profiler, which the report says in one line (`ProfileReport.op_profile_note`).
The profiler's bookkeeping makes the timed runs a little slower: profile without it for the
number to quote.
"""
from __future__ import annotations

import dataclasses
import sys
import time
from dataclasses import dataclass, field
from datetime import datetime, timezone
from pathlib import Path

from tqdm import tqdm

from device_agents.contract import (BadTiming, BatchResult, BenchmarkSettings, DeviceInfo, DeviceState, ModelTiming,
                                    OpProfile)

from .model_files import check_model_file
from .runtimes import benchmark_settings, slice_runtime


@dataclass(frozen=True)
class ProfileOptions:
    runtime: str | None = None  # None: from the file's suffix
    threads: int = 1
    delegate: str = "xnnpack"  # TFLite only (see runtimes.slice_runtime)
    repeats: int = 3  # interleaved passes, as in a LUT build
    op_profile: bool = False  # per-operator times of the timed runs
    settle_s: float = 60.0  # longest wait for a hot device to cool down before the runs
    settings: dict = field(default_factory=dict)  # BenchmarkSettings overrides


@dataclass(frozen=True)
class ProfileReport:
    """One model's timing on one device. Times in ms."""

    model: str  # the path given
    runtime: str
    runtime_version: str
    device: DeviceInfo
    settings: BenchmarkSettings
    timing: ModelTiming
    state_before: DeviceState
    state_after: DeviceState
    op_profile: OpProfile | None
    op_profile_note: str  # why `op_profile` is None although asked for ("" otherwise)
    attempts: int  # benchmarks run (2: the first gave numbers no run can give)
    created: str
    wall_s: float

    def to_json_dict(self) -> dict:
        timing = dataclasses.asdict(self.timing)
        timing["cov_pct"] = 100 * self.timing.cov
        return {
            "model": self.model, "runtime": self.runtime, "runtime_version": self.runtime_version,
            "device": dataclasses.asdict(self.device), "settings": dataclasses.asdict(self.settings),
            "timing": timing, "state_before": dataclasses.asdict(self.state_before),
            "state_after": dataclasses.asdict(self.state_after),
            "op_profile": None if self.op_profile is None else {
                **self.op_profile.to_json_dict(),
                "by_type": OpProfile(self.op_profile.source, self.op_profile.runs,
                                     self.op_profile.by_type()).to_json_dict()["ops"]},
            "op_profile_note": self.op_profile_note, "attempts": self.attempts, "created": self.created,
            "wall_s": self.wall_s,
        }


def check_request(model: str | Path, options: ProfileOptions) -> tuple[str, BenchmarkSettings]:
    """The runtime and the agent settings of a request; a user error (one line) for a bad model
    file or option. Cheap: the CLI calls it before opening the device."""
    runtime = check_model_file(model, options.runtime)
    slice_runtime(runtime, options.threads, delegate=options.delegate)  # --delegate checked
    settings = benchmark_settings(runtime, options.threads, options.repeats, options.delegate,
                                  op_profile=options.op_profile, **options.settings)
    return runtime, settings


def profile_model(model: str | Path, agent, options: ProfileOptions = ProfileOptions(),
                  progress: bool = True) -> ProfileReport:
    """Time `model` on `agent` (any `DeviceAgent`) and return the report (module docstring)."""
    start = time.monotonic()
    runtime, settings = check_request(model, options)
    info = agent.info()
    version = agent.runtime_version(runtime)
    bar = tqdm(total=1, desc=f"profile {Path(model).name}", unit="model", file=sys.stderr, disable=not progress,
               dynamic_ncols=True)
    try:
        bar.set_postfix_str("benchmarking" + (" + operator profile" if options.op_profile else ""))
        result, attempts = _benchmark(agent, Path(model), settings, options.settle_s, bar)
        bar.update(1)
    finally:
        bar.close()
    profile = result.op_profiles[0] if result.op_profiles else None
    note = "" if profile is not None or not options.op_profile else (
        result.op_profile_note or "the device gave no operator profile")
    return ProfileReport(
        model=str(model), runtime=runtime, runtime_version=version, device=info, settings=settings,
        timing=result.timings[0], state_before=result.state_before, state_after=result.state_after,
        op_profile=profile, op_profile_note=note, attempts=attempts,
        created=datetime.now(timezone.utc).isoformat(timespec="seconds"), wall_s=time.monotonic() - start)


def _benchmark(agent, model: Path, settings: BenchmarkSettings, settle_s: float, bar) -> tuple[BatchResult, int]:
    """One batch of the one model; measured once more when the numbers are impossible (`BadTiming`)."""
    for attempt in (1, 2):
        if hasattr(agent, "settle"):
            agent.settle(settle_s)
        try:
            return agent.benchmark([model], settings), attempt
        except BadTiming as exc:
            if attempt == 2:
                raise
            bar.write(f"lutbuild: warning: {exc}; measuring once more")
    raise AssertionError("unreachable")


def format_profile(report: ProfileReport, top: int = 15) -> str:
    """The report as text: the timing, the device state and (if any) the top-`top` operators."""
    t, s = report.timing, report.settings
    core = f", core {report.device.cpu_core}" if report.device.cpu_core else ""
    delegate = s.delegate if report.runtime == "tflite" else "cpu"
    lines = [
        f"{Path(report.model).name} on {report.device.device_id}{core}: {report.runtime} ({report.runtime_version}), "
        f"{s.threads} thread{'s' if s.threads > 1 else ''}, {delegate}",
        f"  median {t.median_ms:.4f} ms   p10 {t.p10_ms:.4f}   p90 {t.p90_ms:.4f}   CoV {100 * t.cov:.1f}%   "
        f"(n = {t.n} runs in {passes_line(t, s)}; min {t.min_ms:.4f}, max {t.max_ms:.4f})",
        f"  device before: {describe_state(report.state_before)}",
        f"  device after:  {describe_state(report.state_after)}",
    ]
    if report.op_profile_note:
        lines.append(f"operators: none: {report.op_profile_note}")
    if report.op_profile is not None:
        lines += _format_ops(report.op_profile, t.median_ms if report.op_profile.statistic == "median" else t.mean_ms,
                             top)
    return "\n".join(lines)


def passes_line(t: ModelTiming, s: BenchmarkSettings) -> str:
    """Which passes the figures pool: the runner's fast passes (`BenchmarkSettings.fast_passes_pct`)."""
    if t.passes_kept is None:
        return f"{s.repeats} interleaved pass{'es' if s.repeats > 1 else ''}"
    return (f"{t.passes_kept} of {len(t.pass_medians_ms)} interleaved passes, those within "
            f"{s.fast_passes_pct:g}% of the fastest")


def describe_state(state: DeviceState) -> str:
    """One line: hottest sensor, throttling, governor, the pinned cores' clocks."""
    parts = []
    if state.temperatures_c:
        zone, temp = max(state.temperatures_c.items(), key=lambda kv: kv[1])
        parts.append(f"{temp:.1f} °C max ({zone})")
    else:
        parts.append("no temperature sensor readable")
    parts.append("THROTTLED" if state.throttled else "not throttled")
    if state.governor:
        parts.append(f"governor {state.governor}")
    if state.cpu_freq_khz:
        mhz = sorted({round(v / 1000) for v in state.cpu_freq_khz.values()})
        parts.append(f"clocks {mhz[0]}-{mhz[-1]} MHz" if len(mhz) > 1 else f"clocks {mhz[0]} MHz")
    return ", ".join(parts)


def _format_ops(profile: OpProfile, model_ms: float, top: int) -> list[str]:
    """`model_ms`: the model's time of the same statistic (median or mean) as the profile's."""
    total = profile.total_ms
    runs = f"{profile.runs} profiled runs" if profile.runs else "profiled runs"
    lines = [f"operators ({profile.source}, {profile.statistic} of {runs}): {len(profile.ops)} operators summing to "
             f"{total:.4f} ms = {100 * total / model_ms:.0f}% of the model's {profile.statistic} (the rest: the "
             f"runtime between operators)"]
    shown = profile.ops[:top]
    width = min(60, max([len("operator"), *(len(op.name) for op in shown)]))
    type_width = min(32, max([len("type"), *(len(op.op_type) for op in shown)]))
    lines.append(f"  {'#':>3}  {'operator':<{width}}  {'type':<{type_width}}  {'ms':>9}  {'share':>6}  count")
    for i, op in enumerate(shown, 1):
        lines.append(f"  {i:>3}  {_cut(op.name, width):<{width}}  {_cut(op.op_type, type_width):<{type_width}}  "
                     f"{op.ms:>9.4f}  {100 * profile.share(op):>5.1f}%  {op.count:>5}")
    if len(profile.ops) > top:
        lines.append(f"  ... {len(profile.ops) - top} more (all in --json)")
    by_type = profile.by_type()
    lines.append("  by type: " + ", ".join(f"{op.op_type} {op.ms:.4f} ms ({100 * profile.share(op):.1f}%)"
                                           for op in by_type[:8]) + (" ..." if len(by_type) > 8 else ""))
    return lines


def _cut(text: str, width: int) -> str:
    return text if len(text) <= width else text[:width - 1] + "…"
