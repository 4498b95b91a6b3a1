"""Export the searched network (fine-tuned weights) to ONNX and TFLite, and check the files.

The exporters are the profiler's (`profiler.export.export_module`), so the exported network
uses the same I/O convention as the LUT layers (NHWC image input for TFLite, NCHW for
ONNX) and its measured latency is comparable with the LUT prediction. Each file is run
once on a fixed input and its output compared with PyTorch's (max absolute difference):
logits (N, classes) for classification, a depth map (N, 1, H, W) for depth (NHWC out of
TFLite, transposed back before the comparison).
"""
from __future__ import annotations

import json
from collections.abc import Callable
from pathlib import Path

import numpy as np
import torch

from profiler.export import export_module
from search.errors import SearchError
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
                    log: Callable[[str], None] = print, task: str | None = None) -> dict:
    """Write the requested files; returns {runtime: {"path", "max_abs_diff"}} (also in export.json).

    `task`, when given, must be the searched space's task (SearchError otherwise)."""
    if onnx is None and tflite is None:
        raise SearchError("nothing to export: pass --onnx and/or --tflite")
    out = Path(search_dir)
    task_of(get_space(load_search(out)["space"]), task)
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
    for runtime, path, runner in (("onnx", onnx, run_onnx), ("tflite", tflite, run_tflite)):
        if path is None:
            continue
        path = Path(path)
        export_module(model, (x,), runtime, path, image_args=(0,), image_out=image_out)
        got = runner(path, x.numpy())
        if image_out and runtime == "tflite":
            got = got.transpose(0, 3, 1, 2)
        diff = float(np.abs(got - reference).max())
        results[runtime] = {"path": str(path), "max_abs_diff": diff, "bytes": path.stat().st_size}
        log(f"{runtime}: {path} ({path.stat().st_size / 1024:.0f} KiB), max |output diff| vs PyTorch {diff:.2e}")
        if diff > tolerance * max(1.0, float(np.abs(reference).max())):
            raise SearchError(f"{path}: outputs differ from PyTorch by {diff:.3g} (tolerance {tolerance:g})")
    record = {"weights": weights, "config": config.to_dict(), "files": results}
    (out / EXPORT_LOG).write_text(json.dumps(record, indent=1) + "\n", encoding="utf-8")
    return record
