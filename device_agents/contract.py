"""What crosses the border between the profiler and any device agent.

An agent (local host, Android over ADB, ...) receives model files and benchmark settings,
and returns per-model timing statistics plus the device's state before/after the batch.
Nothing here imports torch or the search spaces: agents run next to phones and on small
boards. All times are milliseconds.
"""
from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Protocol

from .gpu_delegate import GpuDelegation


class AgentError(Exception):
    """A device problem a user can fix (disconnected, unauthorized, missing binary).

    The CLI prints the message as one line and exits non-zero.
    """


class BadTiming(AgentError):
    """The device reported numbers no run can produce (negative, zero, nan/inf, a median outside
    the run's min..max). The profiler measures the batch once more, then stops with this line."""


@dataclass(frozen=True)
class BenchmarkSettings:
    """How to time one model. Defaults: single thread, XNNPACK, median of >= 50 runs."""

    runtime: str  # "tflite" or "onnx"
    threads: int = 1  # single-threaded unless asked: what the LUT is comparable across
    delegate: str = "xnnpack"  # TFLite's default CPU path on Android; "gpu": the phone's GPU delegate
    gpu_precision_loss: bool = False  # delegate "gpu": fp16 arithmetic allowed (gpu_delegate.gpu_flags)
    # ONNX Runtime graph optimization level (runner.ORT_OPT_LEVELS): "all" (ORT_ENABLE_ALL), "extended", "basic"
    ort_opt: str = "all"
    warmup_runs: int = 10  # first runs pay allocation and cache misses
    min_runs: int = 50  # enough runs for a stable median and p10/p90
    max_runs: int = 1000  # cap for very small layers
    min_seconds: float = 0.05  # keep timing tiny layers until this much time has passed
    # interleaved passes over the whole batch (A, B, C, A, B, C, ...), per-run timings pooled:
    # a burst of background load or a slow drift then hits one pass of every model instead of
    # all runs of one. Measured on a shared 2-vCPU host: with 3 passes no process was off by
    # more than 0.7% (TFLite) / 4.7% (ONNX) over 10 processes, vs 41% / 4.3% with 1 pass.
    repeats: int = 3
    # pool only the passes of a model within this many % of its fastest pass (runner
    # `--fast-passes`; None, the default: every pass). Off: measured side by side on this host,
    # it lowered layer rows more than whole networks (a layer's pass is 0.05 s, a network's ~1 s,
    # and the core's slow state switches within a second), so LUT sums fell further below the
    # networks they predict (docs/lut.md, "Noise protocol"). The runner only: vendor tools have no passes.
    fast_passes_pct: float | None = None
    # per-operator times of the timed runs (runner: ONNX Runtime's profiler; phones' benchmark_model:
    # --enable_op_profiling), returned in `BatchResult.op_profiles`. Off for LUT builds: the
    # profiler's own bookkeeping adds time to every operator.
    op_profile: bool = False


def runner_args(s: BenchmarkSettings, list_file: str, out: str) -> list[str]:
    """The Python runner's options for `s` (`runner.py`), reading `list_file`, writing `out`: one
    list for the local agent and the phone's batch script, so the two never drift apart (the
    core pinning, `--cpus`, is each caller's own)."""
    args = ["--runtime", s.runtime, "--threads", str(s.threads), "--delegate", s.delegate,
            "--warmup", str(s.warmup_runs), "--min-runs", str(s.min_runs), "--max-runs", str(s.max_runs),
            "--min-seconds", str(s.min_seconds), "--repeats", str(s.repeats), "--list-file", list_file, "--out", out]
    if s.fast_passes_pct is not None:
        args += ["--fast-passes", str(s.fast_passes_pct)]
    if s.op_profile:
        args.append("--op-profile")
    if s.ort_opt != "all":  # ONNX Runtime graph optimization level (part of the slice)
        args += ["--ort-opt", s.ort_opt]
    return args


@dataclass(frozen=True)
class ModelTiming:
    """Statistics of one model's runs, in ms."""

    name: str  # the file name the agent was given (no directories)
    n: int
    median_ms: float
    mean_ms: float
    p10_ms: float
    p90_ms: float
    std_ms: float
    min_ms: float
    max_ms: float
    # the runner's passes: each pass's median, in order (when more than one), and how many of
    # them the statistics pool (with `BenchmarkSettings.fast_passes_pct`; None: all of them)
    pass_medians_ms: tuple[float, ...] = ()
    passes_kept: int | None = None

    def checked(self, source: str = "the device") -> ModelTiming:
        """This timing, if its numbers are ones a real run gives; `BadTiming` (one line) otherwise.

        n >= 1; every latency finite and > 0 ms (a layer never takes no time: 0 would make it
        free to the search); std finite and >= 0; min <= p10, median, mean, p90 <= max; pass
        medians finite and > 0, and 1 <= passes kept <= passes."""
        name = f"{self.name}: " if self.name else ""
        if not isinstance(self.n, int) or isinstance(self.n, bool) or self.n < 1:
            raise BadTiming(f"{name}{source} reported {self.n!r} runs, expected an integer >= 1")
        values = {k: getattr(self, k) for k in ("min_ms", "p10_ms", "median_ms", "mean_ms", "p90_ms", "max_ms")}
        for key, value in {**values, "std_ms": self.std_ms}.items():
            if not isinstance(value, (int, float)) or isinstance(value, bool) or not math.isfinite(value):
                raise BadTiming(f"{name}{source} reported {key} = {value!r}, expected a finite number of ms")
        bad = [k for k, v in values.items() if v <= 0]
        if bad:
            raise BadTiming(f"{name}{source} reported {bad[0]} = {values[bad[0]]} ms, expected > 0")
        if self.std_ms < 0:
            raise BadTiming(f"{name}{source} reported std_ms = {self.std_ms} ms, expected >= 0")
        if any(not isinstance(v, (int, float)) or isinstance(v, bool) or not math.isfinite(v) or v <= 0
               for v in self.pass_medians_ms):
            raise BadTiming(f"{name}{source} reported pass_medians_ms = {list(self.pass_medians_ms)!r}, "
                            "expected finite numbers of ms > 0")
        if self.passes_kept is not None and (not isinstance(self.passes_kept, int) or isinstance(
                self.passes_kept, bool) or not 1 <= self.passes_kept <= max(1, len(self.pass_medians_ms))):
            raise BadTiming(f"{name}{source} reported passes_kept = {self.passes_kept!r}, expected an integer "
                            f"from 1 to its {len(self.pass_medians_ms)} passes")
        lo, hi = self.min_ms * (1 - 1e-9), self.max_ms * (1 + 1e-9)  # a mean of equal runs may round 1 ulp out
        outside = [k for k in ("p10_ms", "median_ms", "mean_ms", "p90_ms") if not lo <= values[k] <= hi]
        if outside:
            raise BadTiming(f"{name}{source} reported {outside[0]} = {values[outside[0]]} ms outside the run's "
                            f"min..max ({self.min_ms}..{self.max_ms} ms)")
        return self

    @property
    def cov(self) -> float:
        """Coefficient of variation (std / mean), the noise reported with every figure."""
        return self.std_ms / self.mean_ms if self.mean_ms > 0 else 0.0


@dataclass(frozen=True)
class DeviceState:
    """Thermal and frequency snapshot taken before or after a batch."""

    temperatures_c: dict[str, float] = field(default_factory=dict)
    cpu_freq_khz: dict[str, int] = field(default_factory=dict)
    governor: str = ""
    throttled: bool = False
    # per-core cpuinfo_max_freq (kHz): what "at full speed" means; picks the big cores
    cpu_max_freq_khz: dict[str, int] = field(default_factory=dict)
    # per-core busy and total clock ticks since boot (/proc/stat): two snapshots say how busy the
    # other cores were during a batch (`device_state.others_busy`)
    cpu_busy_ticks: dict[str, int] = field(default_factory=dict)
    cpu_total_ticks: dict[str, int] = field(default_factory=dict)


@dataclass(frozen=True)
class DeviceInfo:
    """Identity written into every LUT row (`device_id` selects the LUT slice)."""

    device_id: str  # stable id: e.g. "local:<hostname>:<cpu model>" or "android:<model>:<serial>"
    model: str = ""
    soc: str = ""
    abi: str = ""
    os_version: str = ""
    cpu_core: str = ""  # core(s) the runner is pinned to, "" when unpinned


@dataclass(frozen=True)
class OpTiming:
    """One operator (graph node) of a profiled model: its time per inference, in ms."""

    name: str  # the node's name as the runtime reports it (ONNX node name, TFLite "[tensor]:index")
    op_type: str  # "Conv", "CONV_2D", "Convolution (NHWC, F32) IGEMM", ...
    ms: float  # time per inference spent in this node, all its calls summed (ms)
    count: int  # calls per inference (1 for a plain node; a delegate may run one op several times)


@dataclass(frozen=True)
class OpProfile:
    """Per-operator times of a model's profiled runs, slowest first.

    The one result of every per-operator parser (the runner's ONNX Runtime profile,
    `tool_output.parse_op_profile` of benchmark_model's tables), so that a profile from a
    phone and one from this host read the same. Times are averages per inference (ms) over
    `runs` profiled inferences; `share` is of the profiled total (the operators' sum), which
    leaves out the runtime's time between operators. `statistic` says which average: the
    median over runs (the runner: robust to a busy machine's rare slow runs, like the model's
    median) or the mean (benchmark_model prints only means).
    """

    source: str  # "onnxruntime" or "benchmark_model"
    runs: int  # profiled inferences the averages are over (0: the tool did not say)
    ops: tuple[OpTiming, ...]
    statistic: str = "mean"  # "median" or "mean" over the runs, per operator

    def __post_init__(self) -> None:
        ordered = tuple(sorted(self.ops, key=lambda op: (-op.ms, op.name)))
        object.__setattr__(self, "ops", ordered)

    @property
    def total_ms(self) -> float:
        """Sum of the operators' times per inference (ms)."""
        return sum(op.ms for op in self.ops)

    def share(self, op: OpTiming) -> float:
        """`op`'s fraction (0..1) of `total_ms`."""
        total = self.total_ms
        return op.ms / total if total > 0 else 0.0

    def by_type(self) -> tuple[OpTiming, ...]:
        """One row per operator type (name = type): times and calls summed, slowest first."""
        ms: dict[str, float] = {}
        count: dict[str, int] = {}
        for op in self.ops:
            ms[op.op_type] = ms.get(op.op_type, 0.0) + op.ms
            count[op.op_type] = count.get(op.op_type, 0) + op.count
        return OpProfile(self.source, self.runs, tuple(OpTiming(t, t, ms[t], count[t]) for t in ms)).ops

    def to_json_dict(self) -> dict:
        return {"source": self.source, "runs": self.runs, "statistic": self.statistic, "total_ms": self.total_ms,
                "ops": [{"name": op.name, "op_type": op.op_type, "ms": op.ms, "share": self.share(op),
                         "count": op.count} for op in self.ops]}

    @classmethod
    def from_json_dict(cls, data, source: str = "the runner") -> OpProfile:
        """The inverse of `to_json_dict` (also what the runner emits); `BadTiming` (one line) for a
        record no profiler gives: not a list of operators, a name that is not text, a time that is
        not a finite number >= 0 ms, a call count that is not an integer >= 1."""
        if not isinstance(data, dict) or not isinstance(data.get("ops"), list):
            raise BadTiming(f"{source} reported an operator profile without a list of operators")
        runs = data.get("runs", 0)
        if not isinstance(runs, int) or isinstance(runs, bool) or runs < 0:
            raise BadTiming(f"{source} reported {runs!r} profiled runs, expected an integer >= 0")
        ops = []
        for row in data["ops"]:
            if not isinstance(row, dict) or not isinstance(row.get("name"), str) \
                    or not isinstance(row.get("op_type"), str):
                raise BadTiming(f"{source} reported an operator without a name and type: {str(row)[:120]}")
            ms, count = row.get("ms"), row.get("count")
            if not isinstance(ms, (int, float)) or isinstance(ms, bool) or not math.isfinite(ms) or ms < 0:
                raise BadTiming(f"{source} reported {row['name']}: ms = {ms!r}, expected a finite number >= 0")
            if not isinstance(count, int) or isinstance(count, bool) or count < 1:
                raise BadTiming(f"{source} reported {row['name']}: count = {count!r}, expected an integer >= 1")
            ops.append(OpTiming(row["name"], row["op_type"], float(ms), count))
        statistic = data.get("statistic", "mean")
        if statistic not in ("median", "mean"):
            raise BadTiming(f"{source} reported an operator statistic {statistic!r}, expected median or mean")
        return cls(str(data.get("source", source)), runs, tuple(ops), statistic)


@dataclass(frozen=True)
class BatchResult:
    timings: list[ModelTiming]
    state_before: DeviceState
    state_after: DeviceState
    # with `BenchmarkSettings.op_profile`: one per model, in order (None where the runtime cannot
    # profile operators, e.g. LiteRT's Python interpreter); empty otherwise
    op_profiles: list[OpProfile | None] = field(default_factory=list)
    op_profile_note: str = ""  # why a profile is None, one line
    # with `BenchmarkSettings.delegate == "gpu"`: what the GPU delegate took of each model, in
    # order (parsed from benchmark_model's output; which ops fell back to the CPU), so every LUT
    # row of a GPU slice says whether it timed GPU alone or GPU + CPU; empty otherwise
    gpu_delegations: list[GpuDelegation] = field(default_factory=list)


class DeviceAgent(Protocol):
    """Benchmarks model files on one device. Implementations: `local`, `adb`."""

    def info(self) -> DeviceInfo: ...

    def runtime_version(self, runtime: str) -> str: ...

    def benchmark(self, models: Sequence[Path], settings: BenchmarkSettings) -> BatchResult:
        """Time every model in `models` (one batch, one result per model, same order)."""
        ...

    def close(self) -> None: ...
