"""What a LUT build takes (`BuildOptions`) and what it returns (`BuildReport` per device,
`MultiBuildReport` for several devices at once)."""
from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path

from .runtimes import DEFAULT_CACHE_DIR


@dataclass(frozen=True)
class BuildOptions:
    """How `build_lut` runs. Defaults are what `lutbuild build` uses."""

    plan: str = "full"  # "full" or "sparse" (plan.py)
    granularity: str = "layer"  # "layer" keys, or "block": one row per whole ir/ds block (block_plan.py)
    jobs: int = 2  # export worker processes (the host has 2 cores here)
    threads: int = 1  # runtime threads: single-threaded is what LUTs compare across
    delegate: str = "xnnpack"  # TFLite only: "xnnpack" (Android's CPU default) or "none"
    dtype: str = "float32"  # "int8": full-integer models, a separate slice (`;dtype=int8`, quantize.py)
    gpu_precision_loss: bool = False  # delegate "gpu" (phones): fp16 arithmetic allowed, part of the slice
    ort_opt: str = "all"  # ONNX Runtime graph optimization level ("extended", "basic": `;ort_opt=...` slice)
    context: str = "alone"  # ONNX "nchwc": rows between NCHWc-keeping neighbours (`;context=nchwc`, context_models.py)
    batch_size: int = 32  # models per benchmark process and per committed transaction
    repeats: int = 3  # interleaved passes over a batch (drift spreads over its models)
    # re-measure a batch whose reference layer runs this much slower than the fast state (%): between
    # this host's fast-state spread (about ±8%) and its slow state (+40% and more); calibrate.py
    drift_pct: float = 15.0
    max_remeasure: int = 1  # re-measurements per batch before its rows are written anyway
    state_wait_s: float = 30.0  # longest wait for the fast state before each attempt (measure.wait_for_fast_state)
    state_poll_s: float = 1.0  # pause between two probes of the reference while waiting (s)
    settle_s: float = 60.0  # longest wait for a throttled device before a batch (s)
    limit: int | None = None  # measure at most this many keys in this run (tests, trials)
    passes: int = 1  # >1: re-measure every key N-1 more times, keep each key's lowest-p10 row (passes.py)
    cache_dir: Path = DEFAULT_CACHE_DIR  # exported model files, shared by every LUT
    settings: dict = field(default_factory=dict)  # BenchmarkSettings overrides (warmup_runs, ...)


@dataclass
class BuildReport:
    """What one build did on one device (one LUT slice). Times in seconds."""

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
    export_s: float = 0.0  # wall time spent waiting for exports
    benchmark_s: float = 0.0  # wall time spent benchmarking
    wall_s: float = 0.0
    remeasured_batches: int = 0
    drifted_batches: int = 0  # written although the reference still ran slower than the fast state
    overhead_ms: float | None = None
    reconnects: int = 0  # dropped connections the device agent recovered from (phones)
    passes: int = 1  # `--passes`: measurement passes over the slice (passes.py)
    remeasured: dict[int, int] = field(default_factory=dict)  # pass (>= 2) -> keys it re-measured in this run
    lowered: dict[int, int] = field(default_factory=dict)  # pass (>= 2) -> rows it replaced (a lower p10)

    def summary(self) -> str:
        return (f"{self.space} on {self.device_id} ({self.runtime} {self.runtime_version}, {self.runtime_options}), "
                f"plan {self.plan}: measured {self.measured} key(s) now, {self.already_measured} before, "
                f"{self.planned} planned; interpolated {self.interpolated}; exported {self.exported} file(s) "
                f"in {self.export_s:.1f} s, benchmarked in {self.benchmark_s:.1f} s, total {self.wall_s:.1f} s; "
                f"overhead {self.overhead_ms if self.overhead_ms is None else round(self.overhead_ms, 4)} ms"
                + (f"; {self.reconnects} reconnect(s)" if self.reconnects else "")
                + "".join(f"; pass {k}: re-measured {n} key(s), {self.lowered.get(k, 0)} row(s) lowered (p10)"
                          for k, n in sorted(self.remeasured.items())))


@dataclass
class MultiBuildReport:
    """What one build on several devices did: a `BuildReport` per device, and the failures."""

    reports: list[BuildReport]
    failures: list[str] = field(default_factory=list)  # one line per device that stopped
    exported: int = 0
    export_cpu_s: float = 0.0
    wall_s: float = 0.0

    @property
    def ok(self) -> bool:
        return not self.failures

    def summary(self) -> str:
        lines = [r.summary() for r in self.reports]
        if len(self.reports) > 1:
            lines.append(f"{len(self.reports)} devices, {len(self.failures)} stopped; exported {self.exported} "
                         f"file(s) once for all ({self.export_cpu_s:.1f} CPU s); total {self.wall_s:.1f} s")
        return "\n".join(lines)
