"""The runtimes a LUT is measured with, and the settings a build and a verify share.

A LUT slice is (device, runtime, options): `slice_runtime` is the `RuntimeSpec` of those
options, `benchmark_settings` what the device agent is asked to run with. Both `build_lut`
and `verify_lut` go through them, so a verify always reads the slice its build wrote.

The options string (`RuntimeSpec.options`) is `threads=N;delegate=D` for float32 CPU models
(as it always was), gains `;gpu_precision_loss=...` for the phone's GPU delegate and
`;dtype=int8` for an INT8 slice (`--quantize int8`, `quantize.py`), and `;ort_opt=extended|basic`
for an ONNX slice measured below ORT_ENABLE_ALL (`--ort-opt`), `;context=nchwc` for in-context
ONNX rows (`--context nchwc`, `context_models.py`) and `;context=cold` for weights-cold TFLite
rows (`--context cold`, `cold_models.py`), so such slices of one
device sit side by side in one LUT file. The layer keys are the same in all: the dtype of a
slice is how its layers are exported, not another layer.
"""
from __future__ import annotations

from pathlib import Path

from device_agents.contract import BenchmarkSettings
from device_agents.gpu_delegate import GPU
from device_agents.runner import ORT_OPT_LEVELS
from lut_db.layer_key import ALONE, RuntimeSpec

from .errors import ProfilerError, UnknownRuntime
from .quantize import DTYPES, check_dtype

RUNTIMES = ("tflite", "onnx")
#: Layer contexts of a slice (`--context`): "alone" (each layer exported alone, the default,
#: left out of the options string), "nchwc" (ONNX: rows between ONNX Runtime's NCHWc-keeping
#: neighbours, `context_models.py`) or "cold" (TFLite: weights-cold rows, `cold_models.py`).
NCHWC = "nchwc"
COLD = "cold"
CONTEXTS = (ALONE, NCHWC, COLD)
EXTENSIONS = {"tflite": ".tflite", "onnx": ".onnx"}
#: "gpu": the phone's GPU delegate (`benchmark_model --use_gpu=true`, device_agents/gpu_delegate.py)
TFLITE_DELEGATES = ("xnnpack", "none", GPU)
__all__ = ["DEFAULT_CACHE_DIR", "DTYPES", "EXTENSIONS", "ORT_OPT_LEVELS", "RUNTIMES", "TFLITE_DELEGATES",
           "benchmark_settings", "check_agent_delegate", "check_runtime", "slice_runtime"]
#: Exported model files, shared by every LUT (and the ADB agents' work folder next to them).
DEFAULT_CACHE_DIR = Path("~/.cache/netadaptv2/models")


def check_runtime(runtime: str) -> str:
    """`runtime` when it is one of `RUNTIMES`; `UnknownRuntime` (a user error) otherwise."""
    if runtime not in RUNTIMES:
        raise UnknownRuntime(runtime, RUNTIMES)
    return runtime


def check_context(context: str, runtime: str, ort_opt: str = "all") -> str:
    """`context` when valid for `runtime` at `ort_opt`; a one-line `ProfilerError` otherwise."""
    if context not in CONTEXTS:
        raise ProfilerError(f"--context: unknown layer context {context!r}, expected one of {', '.join(CONTEXTS)}")
    if context == NCHWC and runtime != "onnx":
        raise ProfilerError(f"--context {context}: only with --runtime onnx (rows between ONNX Runtime's NCHWc "
                            "neighbours)")
    if context == COLD and runtime != "tflite":
        raise ProfilerError(f"--context {context}: only with --runtime tflite (ONNX Runtime copies every output "
                            "of a weights-cold model per run; its fidelity option is --context nchwc)")
    if context == NCHWC and ort_opt != "all":
        raise ProfilerError(f"--context {context}: only at --ort-opt all (below it ONNX Runtime has no NCHWc layout)")
    return context


def slice_runtime(runtime: str, threads: int = 1, version: str = "", delegate: str = "xnnpack",
                  dtype: str = "float32", gpu_precision_loss: bool = False, ort_opt: str = "all",
                  context: str = ALONE) -> RuntimeSpec:
    """The `RuntimeSpec` (slice options) a build and a verify of `runtime` use.

    TFLite runs with `delegate` (XNNPACK, the CPU default on Android, or `none`: the builtin
    kernels); ONNX Runtime always with its CPU execution provider, written `delegate=cpu`.
    `dtype` (`quantize.DTYPES`) is how the models are exported: float32 or full-integer int8.
    `delegate="gpu"` (phones only, `check_agent_delegate`) adds `gpu_precision_loss=true|false`.
    `ort_opt` (ONNX only, `ORT_OPT_LEVELS`): ONNX Runtime's graph optimization level; the
    default "all" (ORT_ENABLE_ALL) is left out of the options string. `context` (ONNX at "all"
    only, `CONTEXTS`): "nchwc" rows are measured between layout-keeping
    neighbours (`;context=nchwc`); the default "alone" is left out.
    """
    check_runtime(runtime)
    check_dtype(dtype, runtime)
    if runtime == "tflite" and delegate not in TFLITE_DELEGATES:
        raise ProfilerError(f"--delegate: unknown TFLite delegate {delegate!r}, expected one of "
                            f"{', '.join(TFLITE_DELEGATES)}")
    if gpu_precision_loss and not (runtime == "tflite" and delegate == GPU):
        raise ProfilerError("--gpu-precision-loss: only with --runtime tflite --delegate gpu")
    if ort_opt not in ORT_OPT_LEVELS:
        raise ProfilerError(f"--ort-opt: unknown ONNX Runtime optimization level {ort_opt!r}, expected one of "
                            f"{', '.join(ORT_OPT_LEVELS)}")
    if ort_opt != "all" and runtime != "onnx":
        raise ProfilerError(f"--ort-opt {ort_opt}: only with --runtime onnx (an ONNX Runtime graph optimization level)")
    if check_context(context, runtime, ort_opt) != ALONE and dtype != "float32":
        raise ProfilerError(f"--context {context}: only for float32 models (not --quantize {dtype})")
    return RuntimeSpec(name=runtime, version=version, threads=threads,
                       delegate=delegate if runtime == "tflite" else "cpu", dtype=dtype,
                       gpu_precision_loss=gpu_precision_loss if (runtime, delegate) == ("tflite", GPU) else None,
                       ort_opt=ort_opt, context=context)


def check_agent_delegate(rt: RuntimeSpec, agent, label: str) -> None:
    """A GPU slice is measured by benchmark_model on a phone: `--device local` and the Python
    runner (`--runner python`) have no GPU delegate, a one-line `ProfilerError` before any work."""
    if rt.name != "tflite" or rt.delegate != GPU:
        return
    if getattr(agent, "shell", None) is None:
        raise ProfilerError(f"--delegate gpu: --device {label} has no GPU delegate (this host's LiteRT runs "
                            "on the CPU); measure a phone with --benchmark-binary (benchmark_model --use_gpu=true)")
    if getattr(agent, "binary", None) is None:
        raise ProfilerError(f"--delegate gpu: --device {label} runs the Python runner, which has no GPU "
                            "delegate; give --benchmark-binary (benchmark_model --use_gpu=true)")


def benchmark_settings(runtime: str, threads: int = 1, repeats: int = 3, delegate: str = "xnnpack",
                       **overrides) -> BenchmarkSettings:
    """Agent settings of a slice: the runner's defaults, `repeats` interleaved passes
    (`gpu_precision_loss=True` among `overrides` for a GPU slice that allows fp16)."""
    delegate = delegate if runtime == "tflite" else "none"  # the runner ignores it for ONNX
    return BenchmarkSettings(runtime=runtime, threads=threads, delegate=delegate, repeats=repeats, **overrides)
