"""The runtimes a LUT is measured with, and the settings a build and a verify share.

A LUT slice is (device, runtime, options): `slice_runtime` is the `RuntimeSpec` of those
options, `benchmark_settings` what the device agent is asked to run with. Both `build_lut`
and `verify_lut` go through them, so a verify always reads the slice its build wrote.
"""
from __future__ import annotations

from pathlib import Path

from device_agents.contract import BenchmarkSettings
from lut_db.layer_key import RuntimeSpec

from .errors import ProfilerError, UnknownRuntime

RUNTIMES = ("tflite", "onnx")
EXTENSIONS = {"tflite": ".tflite", "onnx": ".onnx"}
TFLITE_DELEGATES = ("xnnpack", "none")
#: Exported model files, shared by every LUT (and the ADB agents' work folder next to them).
DEFAULT_CACHE_DIR = Path("~/.cache/netadaptv2/models")


def check_runtime(runtime: str) -> str:
    """`runtime` when it is one of `RUNTIMES`; `UnknownRuntime` (a user error) otherwise."""
    if runtime not in RUNTIMES:
        raise UnknownRuntime(runtime, RUNTIMES)
    return runtime


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
