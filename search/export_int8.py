"""The searched network as an INT8 model file, calibrated on training images, and its top-1.

`nas-search export --quantize int8` writes the float32 file with the profiler's exporter (the
same I/O convention as the LUT layers) and quantizes it with the profiler's quantizer
(`profiler.quantize`: full-integer TFLite with int8 I/O, or a static QDQ ONNX model), the
same way an INT8 LUT slice's layers and networks are made, so the file's measured latency is
comparable with the int8 slice's prediction. Unlike the LUT's random calibration, the
activation ranges come from `CALIBRATION_IMAGES` training images: accuracy depends on them.

A full-integer TFLite model takes int8 input: `run_int8` quantizes the float image with the
input's (scale, zero point) and dequantizes the output, as an app would. `top1_int8` scores
the file on a classification split (one image per invoke: the files have batch 1).
"""
from __future__ import annotations

import tempfile
from pathlib import Path

import numpy as np
import torch
from torch.utils.data import Dataset

from profiler.export import export_module, quantize_file

#: Training images whose activation ranges calibrate the int8 model (min/max per tensor).
CALIBRATION_IMAGES = 64


def calibration_inputs(dataset: Dataset, runtime: str, n: int = CALIBRATION_IMAGES) -> list[list[np.ndarray]]:
    """The first `n` images of `dataset`, one (1, C, H, W) input each (NHWC for TFLite)."""
    samples = []
    for i in range(min(n, len(dataset))):
        x = dataset[i][0].unsqueeze(0).numpy().astype(np.float32)
        samples.append([np.ascontiguousarray(x.transpose(0, 2, 3, 1)) if runtime == "tflite" else x])
    return samples


def export_int8(model: torch.nn.Module, x: torch.Tensor, runtime: str, path: Path, image_out: bool,
                calibration: list[list[np.ndarray]]) -> Path:
    """Export `model` in float32 (a temporary file), then write its INT8 model to `path`."""
    path = Path(path)
    with tempfile.TemporaryDirectory(prefix="netadaptv2-int8-") as tmp:
        float_path = Path(tmp) / f"float32{path.suffix}"
        export_module(model, (x,), runtime, float_path, image_args=(0,), image_out=image_out)
        return quantize_file(runtime, float_path, path, calibration)


class Int8Model:
    """An INT8 model file loaded once: `__call__(x_nchw)` -> float output (NHWC images for TFLite)."""

    def __init__(self, path: Path, runtime: str):
        self.runtime = runtime
        if runtime == "tflite":
            from ai_edge_litert.interpreter import Interpreter  # why: heavy optional runtime (LiteRT)

            self.interpreter = Interpreter(model_path=str(path))
            self.interpreter.allocate_tensors()
            self.input = self.interpreter.get_input_details()[0]
            self.output = self.interpreter.get_output_details()[0]
        else:
            import onnxruntime as ort  # why: heavy optional runtime

            self.session = ort.InferenceSession(str(path), providers=["CPUExecutionProvider"])

    def __call__(self, x_nchw: np.ndarray) -> np.ndarray:
        if self.runtime != "tflite":
            return self.session.run(None, {self.session.get_inputs()[0].name: x_nchw})[0]
        x = np.ascontiguousarray(x_nchw.transpose(0, 2, 3, 1))
        self.interpreter.set_tensor(self.input["index"], _quantize(x, self.input))
        self.interpreter.invoke()
        return _dequantize(self.interpreter.get_tensor(self.output["index"]), self.output)


def _quantize(x: np.ndarray, detail: dict) -> np.ndarray:
    dtype = np.dtype(detail["dtype"])
    if dtype.kind == "f":
        return x.astype(dtype)
    scale, zero = detail["quantization"]
    info = np.iinfo(dtype)
    return np.clip(np.round(x / scale) + zero, info.min, info.max).astype(dtype)


def _dequantize(y: np.ndarray, detail: dict) -> np.ndarray:
    if np.dtype(detail["dtype"]).kind == "f":
        return y
    scale, zero = detail["quantization"]
    return (y.astype(np.float32) - zero) * scale


def top1(model, dataset: Dataset, limit: int | None = None) -> float:
    """Share of the first `limit` (all: None) images of `dataset` whose argmax is their label;
    `model` maps a (1, C, H, W) float array to (1, classes) scores."""
    n = len(dataset) if limit is None else min(limit, len(dataset))
    hits = 0
    for i in range(n):
        x, y = dataset[i]
        hits += int(np.argmax(model(x.unsqueeze(0).numpy().astype(np.float32))[0]) == int(y))
    return hits / max(1, n)
