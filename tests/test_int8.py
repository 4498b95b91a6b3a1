"""INT8 LUT slices (issue 12): quantized exports, the `dtype=int8` slice beside float32, and a
real build -> verify -> search -> `export --quantize int8` on a small space.

Every file here is a real model run by a real runtime (LiteRT with XNNPACK, ONNX Runtime);
the LUT is a real SQLite file filled by `lutbuild build` on this host.
"""
from __future__ import annotations

import json
import sqlite3
from pathlib import Path

import numpy as np
import onnx
import pytest
import torch
from test_mcd_fixtures import run_nas_search
from test_profiler_export import OPS, run_onnx

from lut_db.layer_key import LayerConfig
from lut_db.reader import LatencyTable
from profiler.export import ModelCache, export_layer, exporter_id, layer_module
from profiler.quantize import quantize_model
from profiler.runtimes import slice_runtime
from lutbuild_helpers import invoke, micro_space_registered

SPACE = "test-int8-micro"


def interpreter(path: Path):
    from ai_edge_litert.interpreter import Interpreter

    it = Interpreter(model_path=str(path))
    it.allocate_tensors()
    return it


def test_float32_slices_and_cache_folders_are_unchanged_and_int8_adds_dtype():
    assert slice_runtime("tflite").options == "threads=1;delegate=xnnpack"
    assert slice_runtime("onnx", 2).options == "threads=2;delegate=cpu"
    assert slice_runtime("tflite", dtype="int8").options == "threads=1;delegate=xnnpack;dtype=int8"
    assert slice_runtime("onnx", dtype="int8").options == "threads=1;delegate=cpu;dtype=int8"
    fp32 = exporter_id("tflite")
    assert "int8" not in fp32 and fp32 == exporter_id("tflite", "float32")
    int8 = exporter_id("tflite", "int8")
    assert int8.startswith(fp32 + "-int8-aeq") and exporter_id("onnx", "int8").startswith(exporter_id("onnx") + "-int8")


def test_bad_quantize_option_is_one_line_exit_1(tmp_path):
    result = invoke("build", "--space", "mbv3-tiny", "--runtime", "tflite", "--db", tmp_path / "l.sqlite",
                    "--quantize", "int4")
    assert result.exit_code != 0 and "--quantize" in result.output and "int4" in result.output
    assert not (tmp_path / "l.sqlite").exists()


@pytest.mark.parametrize("op", sorted(OPS))
def test_every_op_kind_quantizes_to_a_full_integer_tflite_model_with_int8_nhwc_io(op, tmp_path):
    cfg = OPS[op]
    module, inputs, image_args, image_out = layer_module(cfg)
    float_path = export_layer(cfg, "tflite", tmp_path / "f.tflite")
    path = quantize_model("tflite", float_path, tmp_path / "q.tflite")
    it = interpreter(path)
    ins, outs = it.get_input_details(), it.get_output_details()
    assert {np.dtype(d["dtype"]) for d in ins + outs} == {np.dtype(np.int8)}
    for detail, x, i in zip(sorted(ins, key=lambda d: d["index"]), inputs, range(len(inputs))):
        expected = tuple(x.permute(0, 2, 3, 1).shape) if i in image_args else tuple(x.shape)
        assert tuple(detail["shape"]) in {expected, tuple(x.shape)}  # NHWC images (shape order as exported)
    float_ops = [o["op_name"] for o in it._get_ops_details()
                 if any(it.get_tensor_details()[t]["dtype"] == np.float32 for t in o["outputs"] if t >= 0)]
    assert float_ops == [], f"{op}: ops computing in float32: {float_ops}"
    # the int8 model computes the same function (random N(0,1) calibration, so a coarse tolerance)
    expected = module(*inputs).detach().numpy()
    feeds = [x.permute(0, 2, 3, 1).numpy() if i in image_args else x.numpy() for i, x in enumerate(inputs)]
    for detail, x in zip(sorted(ins, key=lambda d: d["index"]), feeds):
        scale, zero = detail["quantization"]
        it.set_tensor(detail["index"], np.clip(np.round(x / scale) + zero, -128, 127).astype(np.int8))
    it.invoke()
    out = outs[0]
    got = (it.get_tensor(out["index"]).astype(np.float32) - out["quantization"][1]) * out["quantization"][0]
    if image_out:
        got = got.transpose(0, 3, 1, 2)
    assert np.corrcoef(got.ravel(), expected.ravel())[0, 1] > 0.9


def test_onnx_int8_is_a_static_per_channel_qdq_model_close_to_float(tmp_path):
    cfg = OPS["conv"]
    module, inputs, _, _ = layer_module(cfg)
    path = quantize_model("onnx", export_layer(cfg, "onnx", tmp_path / "f.onnx"), tmp_path / "q.onnx")
    model = onnx.load(str(path))
    ops = [n.op_type for n in model.graph.node]
    assert "QuantizeLinear" in ops and "DequantizeLinear" in ops and "Conv" in ops
    scales = {t.name: onnx.numpy_helper.to_array(t) for t in model.graph.initializer}
    weight_dq = [n for n in model.graph.node if n.op_type == "DequantizeLinear" and n.input[0].endswith("quantized")
                 and scales[n.input[0]].ndim == 4]
    assert weight_dq and scales[weight_dq[0].input[1]].shape == (cfg.cout,)  # one scale per output channel
    assert scales[weight_dq[0].input[0]].dtype == np.int8
    got = run_onnx(path, [x.numpy() for x in inputs])
    assert np.corrcoef(got.ravel(), module(*inputs).detach().numpy().ravel())[0, 1] > 0.95


def test_int8_cache_quantizes_the_float32_file_in_its_own_folder(tmp_path):
    cfg = LayerConfig("conv", 8, 8, 8, 8, kernel=3, act="relu")
    with ModelCache(tmp_path, "onnx", jobs=1, dtype="int8") as cache:
        (path,) = cache.layers([cfg])
        overhead = cache.overhead()
        assert cache.exported == 2
    assert path.parent.parent.name == exporter_id("onnx", "int8") and path.exists() and overhead.exists()
    float_file = tmp_path / exporter_id("onnx") / "layers" / path.name
    fresh = export_layer(cfg, "onnx", tmp_path / "fresh.onnx")
    assert float_file.read_bytes() == fresh.read_bytes()  # the float32 cache got the ordinary file
    with ModelCache(tmp_path, "onnx", jobs=1) as cache:  # ... which a float32 build then reuses
        assert cache.layers([cfg]) == [float_file] and cache.exported == 0
    with ModelCache(tmp_path, "onnx", jobs=1, dtype="int8") as cache:
        assert cache.layers([cfg]) == [path] and cache.exported == 0
    assert not list(tmp_path.rglob("*.tmp*"))


# ----------------------------------------------------------------------------- end to end
@pytest.fixture(scope="module")
def micro_space():
    """A 10-class 8x8 space (the built-in data's classes) registered in this process."""
    with micro_space_registered(SPACE, num_classes=10) as name:
        yield name


@pytest.mark.slow
def test_int8_build_verify_search_and_export_of_a_small_space(micro_space, tmp_path, capsys):
    from search.checkpoint import save_supernet
    from search.spaces import get_space
    from search.supernet import SuperNet

    db, cache = tmp_path / "lut.sqlite", tmp_path / "cache"
    common = ["--space", micro_space, "--runtime", "tflite", "--db", db, "--cache-dir", cache, "--quiet",
              "--jobs", "1", "--repeats", "1"]
    result = invoke("build", *common)
    assert result.exit_code == 0, result.output
    with sqlite3.connect(db) as conn:
        float_rows = conn.execute("SELECT * FROM measurements ORDER BY layer_key").fetchall()
    result = invoke("build", *common, "--quantize", "int8")
    assert result.exit_code == 0, result.output
    assert "dtype=int8" in result.output
    with sqlite3.connect(db) as conn:
        slices = dict(conn.execute("SELECT runtime_options, COUNT(*) FROM measurements GROUP BY runtime_options"))
        assert conn.execute("SELECT * FROM measurements WHERE runtime_options = ? ORDER BY layer_key",
                            ["threads=1;delegate=xnnpack"]).fetchall() == float_rows  # float32 slice untouched
    keys = len(get_space(micro_space).all_layer_configs())
    assert slices == {"threads=1;delegate=xnnpack": keys, "threads=1;delegate=xnnpack;dtype=int8": keys}
    assert "threads=1;delegate=xnnpack;dtype=int8" in invoke("show", "--db", db).output

    report_path = tmp_path / "verify.json"
    result = invoke("verify", *common[:-4], "--quantize", "int8", "--samples", "3", "--rounds", "1",
                    "--json", report_path)
    assert result.exit_code == 0, result.output
    report = json.loads(report_path.read_text())
    assert report["runtime_options"] == "threads=1;delegate=xnnpack;dtype=int8" and report["n"] == 3
    networks = list((cache / exporter_id("tflite", "int8") / "networks").glob("*.tflite"))
    assert len(networks) == 3 and all(np.dtype(interpreter(p).get_input_details()[0]["dtype"]) == np.int8
                                      for p in networks)

    # search on the int8 slice: its target is half-way between the smallest and the largest network
    (device,) = {r[0] for r in sqlite3.connect(db).execute("SELECT device_id FROM measurements")}
    options = "threads=1;delegate=xnnpack;dtype=int8"
    table = LatencyTable.load(db, device, "tflite", options)
    space = get_space(micro_space)
    from profiler.predictor import LatencyPredictor

    predictor = LatencyPredictor(space, table)
    high, low = predictor.predict(space.max_config()), predictor.predict(space.min_config())
    torch.manual_seed(0)
    supernet = save_supernet(tmp_path / "supernet.pt", SuperNet(space), {"train_config": {"data": "builtin"}})
    out = tmp_path / "search"
    code, stdout, err = run_nas_search(
        ["search", "--supernet", supernet, "--db", db, "--device", device, "--runtime", "tflite",
         "--runtime-options", options, "--target-latency-ms", f"{(high + low) / 2:.6f}", "--out", out,
         "-J", "2", "--holdout-size", "64", "--calib-batches", "1", "--batch-size", "32"], capsys)
    assert code == 0, err
    final = json.loads((out / "final.json").read_text())
    assert final["latency_ms"] <= (high + low) / 2 and options in json.dumps(final)

    tflite, onnx_path = tmp_path / "net.tflite", tmp_path / "net.onnx"
    code, stdout, err = run_nas_search(["export", "--search", out, "--untuned", "--quantize", "int8",
                                        "--tflite", tflite, "--onnx", onnx_path, "--val-limit", "200"], capsys)
    assert code == 0, err
    record = json.loads((out / "export.json").read_text())
    assert record["quantize"] == "int8"
    for runtime in ("tflite", "onnx"):
        entry = record["files"][runtime]
        assert entry["dtype"] == "int8" and 0.0 <= entry["val_top1"] <= 1.0 and 0.0 <= entry["val_top1_float32"] <= 1
    assert np.dtype(interpreter(tflite).get_input_details()[0]["dtype"]) == np.int8
    assert "QuantizeLinear" in {n.op_type for n in onnx.load(str(onnx_path)).graph.node}
