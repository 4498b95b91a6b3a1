"""Helpers shared by the ADB tests: a test key, an authorized endpoint, tiny ONNX models."""
from __future__ import annotations

import contextlib
from pathlib import Path

from .server import start_endpoint


@contextlib.contextmanager
def authorized_endpoint(tmp_path: Path, **kwargs):
    """Yield (serial "host:port", private key path, Endpoint) with that key authorized."""
    from device_agents.adb_keys import ensure_key

    key = ensure_key(tmp_path / "keys" / "adbkey")
    host, port, stop = start_endpoint(tmp_path / "sandbox", [Path(str(key) + ".pub")], **kwargs)
    try:
        yield f"{host}:{port}", key, stop.endpoint
    finally:
        stop()


def make_conv_onnx(path: Path, channels: int = 4, size: int = 8, kernel: int = 3) -> Path:
    """A one-Conv ONNX model (NCHW float32), built with onnx.helper: small, real, fast."""
    import numpy as np
    import onnx
    from onnx import TensorProto, helper, numpy_helper

    weight = numpy_helper.from_array(
        np.random.default_rng(0).standard_normal((channels, channels, kernel, kernel)).astype(np.float32), "W")
    node = helper.make_node("Conv", ["x", "W"], ["y"], pads=[kernel // 2] * 4)
    graph = helper.make_graph(
        [node], "conv",
        [helper.make_tensor_value_info("x", TensorProto.FLOAT, [1, channels, size, size])],
        [helper.make_tensor_value_info("y", TensorProto.FLOAT, [1, channels, size, size])],
        initializer=[weight])
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 13)])
    model.ir_version = 8
    onnx.save(model, str(path))
    return Path(path)
