"""profiler.export: every op kind exports to ONNX and TFLite, loads, runs and matches PyTorch."""
from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch

from lut_db.layer_key import LayerConfig
from profiler import export
from profiler.export import ModelCache, export_layer, export_network, exporter_id, layer_module

# One key per op kind, with the awkward cases: stride 2 + hswish, depthwise 5x5, CBC add
# (8 computed channels onto a 16-wide stream), a vector input (linear), a vector output (gap).
OPS = {
    "conv": LayerConfig("conv", 16, 16, 8, 16, kernel=3, stride=2, act="hswish"),
    "dwconv": LayerConfig("dwconv", 8, 8, 16, 16, kernel=5, groups=16, act="relu"),
    "se": LayerConfig("se", 8, 8, 16, 16, hidden=8),
    "add": LayerConfig("add", 8, 8, 8, 16),
    "gap": LayerConfig("gap", 4, 4, 16, 16),
    "linear": LayerConfig("linear", 1, 1, 16, 10, act="hswish"),
    "upsample": LayerConfig("upsample", 4, 4, 8, 8, stride=2),
}


def run_tflite(path: Path, inputs: list[np.ndarray]) -> np.ndarray:
    """Run a .tflite file; inputs in argument order (matched by the signature's args_<i> names)."""
    from ai_edge_litert.interpreter import Interpreter

    interpreter = Interpreter(model_path=str(path))
    interpreter.allocate_tensors()
    details = sorted(interpreter.get_input_details(), key=lambda d: int(d["name"].rsplit("_", 1)[-1]))
    assert len(details) == len(inputs)
    for detail, x in zip(details, inputs):
        assert tuple(detail["shape"]) == x.shape, (detail["name"], detail["shape"], x.shape)
        interpreter.set_tensor(detail["index"], x)
    interpreter.invoke()
    return interpreter.get_tensor(interpreter.get_output_details()[0]["index"])


def run_onnx(path: Path, inputs: list[np.ndarray]) -> np.ndarray:
    import onnxruntime as ort

    session = ort.InferenceSession(str(path), providers=["CPUExecutionProvider"])
    return session.run(None, {f"in{i}": x for i, x in enumerate(inputs)})[0]


@pytest.mark.parametrize("op", sorted(OPS))
def test_tflite_export_of_each_op_runs_in_litert_and_matches_torch_with_nhwc_io(op, tmp_path):
    cfg = OPS[op]
    module, inputs, image_args, image_out = layer_module(cfg)
    expected = module(*inputs).detach().numpy()
    path = export_layer(cfg, "tflite", tmp_path / f"{op}.tflite")
    nhwc = [x.permute(0, 2, 3, 1).numpy() if i in image_args else x.numpy() for i, x in enumerate(inputs)]
    out = run_tflite(path, nhwc)
    if image_out:  # image outputs are NHWC too
        out = out.transpose(0, 3, 1, 2)
    assert out.shape == expected.shape
    np.testing.assert_allclose(out, expected, rtol=1e-4, atol=1e-4)


@pytest.mark.parametrize("op", sorted(OPS))
def test_onnx_export_of_each_op_runs_in_onnxruntime_and_matches_torch(op, tmp_path):
    cfg = OPS[op]
    module, inputs, _, _ = layer_module(cfg)
    expected = module(*inputs).detach().numpy()
    path = export_layer(cfg, "onnx", tmp_path / f"{op}.onnx")
    out = run_onnx(path, [x.numpy() for x in inputs])
    np.testing.assert_allclose(out, expected, rtol=1e-4, atol=1e-4)


@pytest.mark.slow
def test_whole_network_exports_take_an_nhwc_image_and_return_logits(tmp_path):
    from profiler.export import network_module
    from search.spaces import get_space

    space = get_space("mbv3-tiny")
    subnet = space.canonical(space.min_config()).to_dict()
    model, (image,) = network_module(space.spec, subnet)
    expected = model(image).detach().numpy()
    tfl = export_network(space.spec, subnet, "tflite", tmp_path / "net.tflite")
    onx = export_network(space.spec, subnet, "onnx", tmp_path / "net.onnx")
    np.testing.assert_allclose(run_tflite(tfl, [image.permute(0, 2, 3, 1).numpy()]), expected, rtol=1e-3, atol=1e-4)
    np.testing.assert_allclose(run_onnx(onx, [image.numpy()]), expected, rtol=1e-3, atol=1e-4)
    assert expected.shape == (1, space.spec.num_classes)


def test_export_is_atomic_no_temporary_file_is_left_on_failure(tmp_path, monkeypatch):
    def boom(*args, **kwargs):
        Path(args[2]).write_bytes(b"half a model")
        raise RuntimeError("converter crashed")

    monkeypatch.setattr(export, "_export_onnx", boom)
    target = tmp_path / "x.onnx"
    with pytest.raises(RuntimeError):
        export_layer(OPS["conv"], "onnx", target)
    assert list(tmp_path.iterdir()) == []


@pytest.mark.slow
def test_cia_cache_gives_a_byte_identical_tflite_model(tmp_path, monkeypatch):
    """The guarded monkeypatch only caches an op list: the converted model must not change."""
    import torch.export.decomp_utils as decomp_utils
    import torch.export.exported_program as exported_program

    cfg = OPS["se"]
    for module in (exported_program, decomp_utils):  # restored after the test
        monkeypatch.setattr(module, "_collect_all_valid_cia_ops", module._collect_all_valid_cia_ops)
    plain = export_layer(cfg, "tflite", tmp_path / "plain.tflite").read_bytes()
    assert export.install_cia_cache()
    assert getattr(exported_program._collect_all_valid_cia_ops, "_netadaptv2_cached", False)
    cached = export_layer(cfg, "tflite", tmp_path / "cached.tflite").read_bytes()
    cached_again = export_layer(cfg, "tflite", tmp_path / "again.tflite").read_bytes()
    assert plain == cached == cached_again


def test_exports_are_deterministic_per_key(tmp_path):
    a = export_layer(OPS["conv"], "onnx", tmp_path / "a.onnx").read_bytes()
    b = export_layer(OPS["conv"], "onnx", tmp_path / "b.onnx").read_bytes()
    assert a == b


def test_model_cache_reuses_files_and_names_the_exporter(tmp_path):
    cfgs = [OPS["conv"], OPS["add"], OPS["conv"]]  # a duplicate is exported once
    with ModelCache(tmp_path, "onnx", jobs=1) as cache:
        paths = cache.layers(cfgs)
        assert cache.exported == 2
        assert paths[0] == paths[2] and paths[0].name == f"{OPS['conv'].digest}.onnx"
        assert exporter_id("onnx") in str(paths[0]) and "torch" + torch.__version__ in exporter_id("onnx")
        stamps = [p.stat().st_mtime_ns for p in paths]
        overhead = cache.overhead()
        assert overhead.exists() and cache.exported == 3
    with ModelCache(tmp_path, "onnx", jobs=1) as cache:  # a new run: everything from disk
        assert cache.layers(cfgs) == paths
        cache.overhead()
        assert cache.exported == 0
        assert cache._pool is None  # no worker was even started
    assert [p.stat().st_mtime_ns for p in paths] == stamps
    assert not [p for p in tmp_path.rglob("*.tmp*")]


def test_unknown_runtime_is_a_user_error(tmp_path):
    from profiler.errors import ProfilerError

    with pytest.raises(ProfilerError, match="--runtime: unknown runtime 'tf'"):
        ModelCache(tmp_path, "tf")
