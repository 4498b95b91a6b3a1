"""Export the searched network (fine-tuned weights) to ONNX and TFLite, and check the files.

The exporters are the profiler's (`profiler.export.export_module`), so the exported network
uses the same I/O convention as the LUT layers (NHWC image input for TFLite, NCHW for
ONNX) and its measured latency is comparable with the LUT prediction. Each file is run
once on a fixed input and its output compared with PyTorch's (max absolute difference):
logits (N, classes) for classification, a depth map (N, 1, H, W) for depth (NHWC out of
TFLite, transposed back before the comparison).

`quantize="int8"` writes INT8 files instead (`export_int8.py`: calibrated on training images;
full-integer TFLite with int8 I/O, static QDQ ONNX): an int8 file cannot match PyTorch to
1e-3, so its check is the task's: for classification, top-1 of the file and of the float32
PyTorch network on the val split (`export.json` holds both); for depth, the max output
difference is recorded and not checked.
"""
from __future__ import annotations

import json
from collections.abc import Callable
from pathlib import Path

import numpy as np
import torch

from profiler.export import export_module
from profiler.quantize import check_dtype
from search.errors import SearchError
from search.export_int8 import Int8Model, calibration_inputs, export_int8, top1
from search.finetune import FINETUNED, load_finetuned, load_search, searched_model
from search.spaces import get_space
from search.tasks import task_of

EXPORT_LOG = "export.json"


def run_onnx(path: Path, x: np.ndarray) -> np.ndarray:
    import onnxruntime as ort  # why: heavy optional runtime, loaded only to check an exported file
    session = ort.InferenceSession(str(path), providers=["CPUExecutionProvider"])
    return session.run(None, {session.get_inputs()[0].name: x})[0]


def run_tflite(path: Path, x_nchw: np.ndarray) -> np.ndarray:
    from ai_edge_litert.interpreter import Interpreter  # why: heavy optional runtime (LiteRT), as above
    interpreter = Interpreter(model_path=str(path))
    interpreter.allocate_tensors()
    inp = interpreter.get_input_details()[0]
    interpreter.set_tensor(inp["index"], np.ascontiguousarray(x_nchw.transpose(0, 2, 3, 1)))
    interpreter.invoke()
    return interpreter.get_tensor(interpreter.get_output_details()[0]["index"])


def export_searched(search_dir: str | Path, onnx: str | Path | None = None, tflite: str | Path | None = None,
                    supernet_path=None, allow_untuned: bool = False, tolerance: float = 1e-3,
                    log: Callable[[str], None] = print, task: str | None = None, quantize: str = "float32",
                    data: str | None = None, val_limit: int | None = None) -> dict:
    """Write the requested files; returns {runtime: {"path", "max_abs_diff"}} (also in export.json).

    `task`, when given, must be the searched space's task (SearchError otherwise). `quantize`
    "int8": INT8 files (module docstring), calibrated on `data`'s training split (None: the
    data the super-network was trained on), top-1 on the first `val_limit` val images (all: None)."""
    if onnx is None and tflite is None:
        raise SearchError("nothing to export: pass --onnx and/or --tflite")
    check_dtype(quantize)
    out = Path(search_dir)
    final = load_search(out)
    task_ = task_of(get_space(final["space"]), task)
    if (out / FINETUNED).is_file() or not allow_untuned:
        space, config, model = load_finetuned(out, supernet_path)
        weights = "fine-tuned"
    else:
        space, config, model, _, _ = searched_model(out, supernet_path)
        weights = "super-network (not fine-tuned, BN statistics of the super-network)"
    model.eval()
    h, w = space.spec.input_hw
    x = torch.randn(1, space.spec.in_channels, h, w, generator=torch.Generator().manual_seed(0))
    with torch.no_grad():
        reference = model(x).numpy()
    image_out = reference.ndim == 4  # a dense output (depth map): NHWC out of TFLite as its input
    results = {}
    int8 = _Int8Check(space, final, task_, data, val_limit, model, log) if quantize == "int8" else None
    for runtime, path, runner in (("onnx", onnx, run_onnx), ("tflite", tflite, run_tflite)):
        if path is None:
            continue
        path = Path(path)
        if int8 is not None:
            results[runtime] = int8.export(model, x, runtime, path, image_out, reference)
            continue
        export_module(model, (x,), runtime, path, image_args=(0,), image_out=image_out)
        got = runner(path, x.numpy())
        if image_out and runtime == "tflite":
            got = got.transpose(0, 3, 1, 2)
        diff = float(np.abs(got - reference).max())
        results[runtime] = {"path": str(path), "max_abs_diff": diff, "bytes": path.stat().st_size}
        log(f"{runtime}: {path} ({path.stat().st_size / 1024:.0f} KiB), max |output diff| vs PyTorch {diff:.2e}")
        if diff > tolerance * max(1.0, float(np.abs(reference).max())):
            raise SearchError(f"{path}: outputs differ from PyTorch by {diff:.3g} (tolerance {tolerance:g})")
    record = {"weights": weights, "config": config.to_dict(), "files": results,
              **({"quantize": quantize} if quantize != "float32" else {})}
    (out / EXPORT_LOG).write_text(json.dumps(record, indent=1) + "\n", encoding="utf-8")
    return record


class _Int8Check:
    """INT8 files of one export: calibration images, and the float32 top-1 they are compared with."""

    def __init__(self, space, final: dict, task, data: str | None, val_limit: int | None, model, log):
        meta = final.get("meta") or {}
        self.data = data or meta.get("data") or task.default_data
        self.train_set = task.dataset(self.data, "train", space.spec.input_hw)
        self.val_set = task.dataset(self.data, "val", space.spec.input_hw) if task.name == "classification" else None
        self.val_limit, self.log = val_limit, log
        self.float_top1 = None
        if self.val_set is not None:
            with torch.no_grad():
                self.float_top1 = top1(lambda a: model(torch.from_numpy(a)).numpy(), self.val_set, val_limit)

    def export(self, model, x: torch.Tensor, runtime: str, path: Path, image_out: bool, reference) -> dict:
        calibration = calibration_inputs(self.train_set, runtime)
        export_int8(model, x, runtime, path, image_out, calibration)
        file = Int8Model(path, runtime)
        got = file(x.numpy())
        if image_out and runtime == "tflite":
            got = got.transpose(0, 3, 1, 2)
        result = {"path": str(path), "dtype": "int8", "max_abs_diff": float(np.abs(got - reference).max()),
                  "bytes": path.stat().st_size, "calibration": f"{len(calibration)} train images of {self.data}"}
        line = f"{runtime}: {path} ({path.stat().st_size / 1024:.0f} KiB, int8)"
        if self.val_set is not None:
            result["val_top1"] = top1(file, self.val_set, self.val_limit)
            result["val_top1_float32"] = self.float_top1
            n = len(self.val_set) if self.val_limit is None else min(self.val_limit, len(self.val_set))
            line += f", val top-1 {result['val_top1']:.4f} vs {self.float_top1:.4f} float32 (PyTorch) on {n} images"
        self.log(line)
        return result
