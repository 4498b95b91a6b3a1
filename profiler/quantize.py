"""float32 model file -> full-integer INT8 model file (TFLite) or static QDQ model (ONNX).

An INT8 LUT slice (`dtype=int8` in the slice options, `runtimes.slice_runtime`) measures
the layers and networks that phones mostly ship: full-integer TFLite run by XNNPACK's QS8
kernels, or an ONNX QDQ model run by ONNX Runtime's int8 kernels. Both are made from the
float32 file `export.py` writes (same module, same weights, same I/O layout), so the int8
cache reuses the float32 one and an INT8 export costs a fraction of a second on top of it.

- TFLite: ai-edge-quantizer's static recipe (`static_wi8_ai8`): int8 weights per output
  channel (symmetric), int8 activations (asymmetric, min/max from calibration), every op
  with an int8 kernel quantized (CONV_2D, DEPTHWISE_CONV_2D, HARD_SWISH, MEAN, MUL, ADD,
  FULLY_CONNECTED, ...), and int8 model inputs and outputs: a layer alone takes and returns
  int8 as it does inside a quantized network, so no QUANTIZE/DEQUANTIZE boundary is paid per
  layer. (litert-torch's PT2E flow was tried first: its quantizer has no annotation for
  hardswish/hardsigmoid/mean, which stay float between DEQUANTIZE and QUANTIZE, so its
  models are not full-integer; docs/lut.md.)
- ONNX: `onnxruntime.quantization.quantize_static`, QDQ format, per-channel int8 weights,
  int8 activations, float I/O (ONNX Runtime fuses the QDQ pairs into int8 kernels).

Calibration: `samples` inputs drawn from N(0, 1) (seeded) by default, which is what the
latency of an int8 kernel depends on (its shapes, not its scales); `calibration` gives real
inputs instead (the searched network's export uses training images, for accuracy).
"""
from __future__ import annotations

import contextlib
import importlib.metadata
import io
from pathlib import Path
from collections.abc import Sequence

import numpy as np

from .errors import ProfilerError

#: The element types of a slice (`dtype=` in the slice options; float32 writes no `dtype=`).
DTYPES = ("float32", "int8")
#: Random calibration inputs per model (min/max of 8 N(0,1) draws; enough for latency).
CALIBRATION_SAMPLES = 8


#: The distribution that quantizes each runtime's models (its version names the int8 cache folder).
QUANTIZERS = {"tflite": ("ai-edge-quantizer", "aeq"), "onnx": ("onnxruntime", "ortq")}


def check_dtype(dtype: str, runtime: str | None = None) -> str:
    """`dtype` when it is one of `DTYPES` (and, for int8 and a `runtime`, its quantizer is
    installed); a one-line `ProfilerError` naming `--quantize` otherwise."""
    if dtype not in DTYPES:
        raise ProfilerError(f"--quantize: unknown dtype {dtype!r}, expected one of {', '.join(DTYPES)}")
    if dtype != "float32" and runtime is not None:
        converter_versions(runtime)
    return dtype


def converter_versions(runtime: str) -> str:
    """The quantizer behind an int8 file of `runtime` (part of the int8 cache folder name)."""
    dist, short = QUANTIZERS[runtime]
    try:
        return f"{short}{importlib.metadata.version(dist)}"
    except importlib.metadata.PackageNotFoundError:
        raise ProfilerError(f"--quantize int8 --runtime {runtime}: needs the {dist} package "
                            f"(pip install {dist})") from None


def random_inputs(shapes: Sequence[Sequence[int]], samples: int = CALIBRATION_SAMPLES,
                  seed: int = 0) -> list[list[np.ndarray]]:
    """`samples` sets of float32 N(0, 1) inputs of `shapes` (seeded: same model, same scales)."""
    rng = np.random.default_rng(seed)
    return [[rng.standard_normal(tuple(s)).astype(np.float32) for s in shapes] for _ in range(samples)]


def quantize_model(runtime: str, float_path: Path, out_path: Path,
                   calibration: list[list[np.ndarray]] | None = None) -> Path:
    """Write the INT8 model of the float32 model file `float_path` to `out_path` (not atomic:
    the caller writes a temporary name and renames). `calibration`: input sets in the float
    model's own layout (NHWC for TFLite); None draws `CALIBRATION_SAMPLES` random ones."""
    if runtime == "tflite":
        _quantize_tflite(Path(float_path), Path(out_path), calibration)
    else:
        _quantize_onnx(Path(float_path), Path(out_path), calibration)
    return Path(out_path)


def _quantize_tflite(float_path: Path, out_path: Path, calibration) -> None:
    from ai_edge_litert.interpreter import Interpreter  # why: optional runtime, loaded only for int8 exports
    from ai_edge_quantizer import quantizer, recipe  # why: optional, seconds to load; only for int8 exports

    interpreter = Interpreter(str(float_path))
    (signature,) = interpreter.get_signature_list()
    details = interpreter.get_signature_runner(signature).get_input_details()
    names = sorted(details, key=lambda n: details[n]["index"])  # model input order
    if calibration is None:
        calibration = random_inputs([details[n]["shape"] for n in names])
    data = {signature: [dict(zip(names, sample)) for sample in calibration]}
    qt = quantizer.Quantizer(str(float_path))
    qt.load_quantization_recipe(recipe.static_wi8_ai8())
    chatter = io.StringIO()  # its calibration progress bar (stderr) and size/time report (stdout)
    with contextlib.redirect_stdout(chatter), contextlib.redirect_stderr(chatter):
        result = qt.quantize(qt.calibrate(data, num_threads=1), enable_progress_bar=False,
                             enable_progress_report=False)
    out_path.write_bytes(bytes(result.quantized_model))


def _quantize_onnx(float_path: Path, out_path: Path, calibration) -> None:
    import onnxruntime as ort  # why: optional runtime, loaded only for int8 exports
    from onnxruntime import quantization as ortq  # why: as above

    inputs = ort.InferenceSession(str(float_path), providers=["CPUExecutionProvider"]).get_inputs()
    names = [i.name for i in inputs]
    if calibration is None:
        calibration = random_inputs([[d if isinstance(d, int) and d > 0 else 1 for d in i.shape] for i in inputs])

    class Reader(ortq.CalibrationDataReader):
        def __init__(self):
            self.samples = iter(calibration)

        def get_next(self):
            sample = next(self.samples, None)
            return None if sample is None else dict(zip(names, sample))

    ortq.quantize_static(str(float_path), str(out_path), Reader(), quant_format=ortq.QuantFormat.QDQ,
                         per_channel=True, activation_type=ortq.QuantType.QInt8,
                         weight_type=ortq.QuantType.QInt8, calibrate_method=ortq.CalibrationMethod.MinMax,
                         calibration_providers=["CPUExecutionProvider"])
