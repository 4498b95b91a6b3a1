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
    delegate: str = "xnnpack"  # TFLite's default CPU path on Android
    warmup_runs: int = 10  # first runs pay allocation and cache misses
    min_runs: int = 50  # enough runs for a stable median and p10/p90
    max_runs: int = 1000  # cap for very small layers
    min_seconds: float = 0.05  # keep timing tiny layers until this much time has passed
    # interleaved passes over the whole batch (A, B, C, A, B, C, ...), per-run timings pooled:
    # a burst of background load or a slow drift then hits one pass of every model instead of
    # all runs of one. Measured on a shared 2-vCPU host: with 3 passes no process was off by
    # more than 0.7% (TFLite) / 4.7% (ONNX) over 10 processes, vs 41% / 4.3% with 1 pass.
    repeats: int = 3


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

    def checked(self, source: str = "the device") -> ModelTiming:
        """This timing, if its numbers are ones a real run gives; `BadTiming` (one line) otherwise.

        n >= 1; every latency finite and > 0 ms (a layer never takes no time: 0 would make it
        free to the search); std finite and >= 0; min <= p10, median, mean, p90 <= max."""
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
class BatchResult:
    timings: list[ModelTiming]
    state_before: DeviceState
    state_after: DeviceState


class DeviceAgent(Protocol):
    """Benchmarks model files on one device. Implementations: `local`, `adb`."""

    def info(self) -> DeviceInfo: ...

    def runtime_version(self, runtime: str) -> str: ...

    def benchmark(self, models: Sequence[Path], settings: BenchmarkSettings) -> BatchResult:
        """Time every model in `models` (one batch, one result per model, same order)."""
        ...

    def close(self) -> None: ...
