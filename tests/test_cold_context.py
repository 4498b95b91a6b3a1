"""`--context cold`: weights-cold TFLite rows, each key timed as N copies with distinct weights
(profiler/cold_models.py, docs/predict.md). Real exported files read back by LiteRT; a real
build through `lutbuild predict --measure-missing` into a real SQLite LUT."""
from __future__ import annotations

import json
from collections import Counter
from pathlib import Path

import pytest
import torch
from ai_edge_litert.interpreter import Interpreter
from torch import nn

from device_agents.contract import BatchResult, DeviceState, ModelTiming
from lut_db.layer_key import GenericKey, LayerConfig
from lut_db.schema import open_lut
from lut_db.writer import LutWriter, MeasurementRow
from profiler import predict_model
from profiler.cold_models import (COLD_TARGET_BYTES, MAX_COPIES, MIN_WEIGHT_BYTES, Branches, Chain, cold_module,
                                  copies, copies_for)
from profiler.errors import ProfilerError
from profiler.export import export_cold_layer, layer_module
from profiler.measure import BatchMeasurement, ContextPlan, context_plan
from profiler.runtimes import slice_runtime
from lutbuild_helpers import invoke

#: 1x1 conv 512 -> 1024 (2 MiB of weights): 12 branched copies.
WIDE = LayerConfig.from_key("conv:4x4:512->1024:k1s1g1:hswish:r0:float32")
#: squeeze-excite on 960 channels (1.8 MiB): 14 chained copies, each with its own global pool.
SE = LayerConfig.from_key("se:4x4:960->960:k1s1g1:none:r240:float32")
SMALL = LayerConfig.from_key("dwconv:16x16:40->40:k3s2g40:relu:r0:float32")


def test_the_cold_slice_is_tflite_float32_and_named_in_its_options():
    assert slice_runtime("tflite", context="cold").options == "threads=1;delegate=xnnpack;context=cold"
    assert slice_runtime("tflite").options == "threads=1;delegate=xnnpack"
    with pytest.raises(ProfilerError, match="--context cold: only with --runtime tflite"):
        slice_runtime("onnx", context="cold")
    with pytest.raises(ProfilerError, match="only for float32"):
        slice_runtime("tflite", context="cold", dtype="int8")


def test_copies_hold_the_target_bytes_within_bounds():
    assert copies_for(MIN_WEIGHT_BYTES - 1) == 1 and copies_for(0) == 1
    assert copies_for(MIN_WEIGHT_BYTES) == min(MAX_COPIES, COLD_TARGET_BYTES // MIN_WEIGHT_BYTES)
    assert copies_for(2**20) == 24 and copies_for(5 * 2**20) == 5 and copies_for(64 * 2**20) == 1
    assert copies(WIDE) == 12 and copies(SE) == 14 and copies(SMALL) == 1
    assert copies(GenericKey("Relu", ((1, 8, 4, 4),), (False,), (1, 8, 4, 4))) == 1


def test_shape_keeping_layers_are_chained_others_branched_with_distinct_weights():
    module, inputs, _, _ = layer_module(WIDE)
    cold, n = cold_module(WIDE, module, inputs)
    assert isinstance(cold, Branches) and n == 12
    with torch.no_grad():
        outs = cold(*inputs)
        assert len(outs) == 12 and torch.equal(outs[0], layer_module(WIDE)[0](*inputs))
        assert not torch.allclose(outs[0], outs[1])  # a distinct copy, not the same weights
    module, inputs, _, _ = layer_module(SE)
    cold, n = cold_module(SE, module, inputs)
    assert isinstance(cold, Chain) and n == len(cold) == 14
    module, inputs, _, _ = layer_module(SMALL)
    assert cold_module(SMALL, module, inputs) == (module, 1)


def test_exported_cold_files_hold_n_copies(tmp_path):
    def ops(path: Path) -> tuple[Counter, int]:
        interpreter = Interpreter(str(path))
        interpreter.allocate_tensors()
        return Counter(op["op_name"] for op in interpreter._get_ops_details()), len(interpreter.get_output_details())

    counts, outputs = ops(export_cold_layer(WIDE, "tflite", tmp_path / "wide.tflite"))
    assert counts["CONV_2D"] == 12 and outputs == 12
    counts, outputs = ops(export_cold_layer(SE, "tflite", tmp_path / "se.tflite"))
    assert counts["MEAN"] == 14 and counts["CONV_2D"] == 28 and outputs == 1  # 14 pools: not shared


def timing(name: str, ms: float) -> ModelTiming:
    return ModelTiming(name=name, n=50, median_ms=ms, mean_ms=ms, p10_ms=ms * 0.9, p90_ms=ms * 1.1, std_ms=0.004,
                       min_ms=ms * 0.8, max_ms=ms * 1.3)


def test_a_cold_row_is_the_file_less_the_overhead_per_copy():
    ov = 0.006
    result = BatchResult([timing(n, v) for n, v in (("ov", ov), ("ref", 0.05), ("wide", 0.406), ("small", 0.03))],
                         DeviceState(), DeviceState())
    plan = context_plan(None, [WIDE, SMALL], "cold")
    assert plan == ContextPlan((), ((), ()), copies=(12, 1))
    m = BatchMeasurement(result, 0.05, ov, 0.0, 1, plan)
    wide, small = m.layer_timings
    assert wide.median_ms == pytest.approx((0.406 - ov) / 12)
    assert wide.p10_ms == pytest.approx((0.9 * 0.406 - ov) / 12)
    assert wide.std_ms == pytest.approx(0.004 / 12) and small.median_ms == pytest.approx(0.03 - ov)
    assert m.row_overhead_ms == 0.0
    assert m.context_detail(0) == {"context": {"copies": 12, "file_median_ms": 0.406}}


class Wide(nn.Module):
    """A stem, then a 1x1 conv with 2 MiB of weights: one key gets copies, the others not."""

    def __init__(self):
        super().__init__()
        self.stem = nn.Sequential(nn.Conv2d(3, 512, 3, 1, 1, bias=False), nn.BatchNorm2d(512), nn.Hardswish())
        self.wide = nn.Sequential(nn.Conv2d(512, 1024, 1, bias=False), nn.BatchNorm2d(1024), nn.Hardswish())

    def forward(self, x):
        return self.wide(self.stem(x))


def wide_net() -> nn.Module:
    torch.manual_seed(0)
    return Wide().eval()


@pytest.mark.slow
def test_predict_measures_a_cold_slice_beside_the_hot_one(tmp_path, monkeypatch):
    db, out = tmp_path / "lut.sqlite", tmp_path / "p.json"
    common = ["--input-shape", "1,3,4,4", "--db", db, "--device", "local", "--runtime", "tflite", "--quiet",
              "--cache-dir", tmp_path / "cache", "--json", out]
    # the default context (auto) chooses the cold slice for a model with at least AUTO_COLD_BYTES of weights
    monkeypatch.setattr(predict_model, "AUTO_COLD_BYTES", 2**20)
    result = invoke("predict", "tests.test_cold_context:wide_net", *common, "--measure-missing")
    assert result.exit_code == 0, result.output
    assert "context cold (auto: 2.1 MiB of weights >= 1 MiB)" in result.output
    report = json.loads(out.read_text())
    assert report["runtime_options"] == "threads=1;delegate=xnnpack;context=cold" and report["measured_now"] == 2
    handle = open_lut(db, create=False)
    rows = {key: json.loads(state) for key, state in handle.execute(
        "SELECT layer_key, state_after FROM measurements WHERE runtime_options = ?", [report["runtime_options"]])}
    assert rows[WIDE.key]["profiler"]["context"]["copies"] == 12
    stem = next(k for k in rows if k.startswith("conv:4x4:3->512"))
    assert "context" not in rows[stem]["profiler"] or rows[stem]["profiler"]["context"]["copies"] == 1
    assert all(line["ms"] > 0 for line in report["layers"])
    assert handle.execute("SELECT COUNT(*) FROM measurements WHERE runtime_options = ?",
                          ["threads=1;delegate=xnnpack"]).fetchone()[0] == 0  # the hot slice is untouched
    # the model's stored constants: both convs with BatchNorm folded into a bias
    assert report["weights_mib"] == pytest.approx(4 * (3 * 512 * 9 + 512 + 512 * 1024 + 1024) / 2**20, rel=1e-3)
    fast = tmp_path / "p10.json"
    result = invoke("predict", "tests.test_cold_context:wide_net", *common[:-1], fast, "--context", "cold",
                    "--statistic", "p10")
    assert result.exit_code == 0, result.output
    p10 = json.loads(fast.read_text())
    assert p10["measured_now"] == 0 and p10["total_ms"] <= report["total_ms"]  # each row's p10 <= its median


@pytest.mark.parametrize("args, needle", [
    (["--runtime", "onnx", "--context", "cold"], "--context cold: only with --runtime tflite"),
    (["--runtime", "onnx", "--context", "nchwc"], "'nchwc' is not one of 'auto', 'alone', 'cold'"),
])
def test_predict_refuses_a_context_it_cannot_fill_in_one_line(args, needle, tmp_path):
    db = tmp_path / "lut.sqlite"
    result = invoke("predict", "tests.test_cold_context:wide_net", "--input-shape", "1,3,4,4", "--db", db,
                    "--measure-missing", "--cache-dir", tmp_path / "c", *args)
    assert result.exit_code == 1, result.output
    assert needle in result.output and len(result.output.strip().splitlines()) == 1
    assert not db.exists()


def test_auto_context_follows_the_weights_and_the_runtime():
    mib = 2**20
    assert predict_model.choose_context("auto", "tflite", 21 * mib) == (
        "cold", "context cold (auto: 21.0 MiB of weights >= 4 MiB)")
    assert predict_model.choose_context("auto", "tflite", 3 * mib)[0] == "alone"
    assert predict_model.choose_context("auto", "onnx", 21 * mib) == (
        "alone", "context alone (auto: onnx has no weights-cold slice)")
    assert predict_model.choose_context("alone", "tflite", 21 * mib) == ("alone", "context alone")


def test_auto_reads_the_slice_it_chose_and_says_why(tmp_path, monkeypatch):
    """A LUT with the hot slice only: auto reads it for a small model; above the threshold it
    asks for the cold slice, and the one-line error says the choice was auto's."""
    db = tmp_path / "hot.sqlite"
    handle = open_lut(db)
    stem = LayerConfig.from_key("conv:4x4:3->512:k3s1g1:hswish:r0:float32")
    LutWriter(handle).write([MeasurementRow(key, "dev-x", slice_runtime("tflite"), 5, ms, ms, ms, ms, 0.0)
                             for key, ms in ((stem, 0.25), (WIDE, 0.5))])
    handle.close()
    args = ["predict", "tests.test_cold_context:wide_net", "--input-shape", "1,3,4,4", "--db", db,
            "--device", "dev-x", "--runtime", "tflite"]
    result = invoke(*args)
    assert result.exit_code == 0, result.output
    assert "context alone (auto: 2.1 MiB of weights < 4 MiB)" in result.output
    assert "0.750 ms predicted" in result.output  # both hot rows, no overhead calibration in this LUT
    monkeypatch.setattr(predict_model, "AUTO_COLD_BYTES", 2**20)
    result = invoke(*args)
    assert result.exit_code == 1 and len(result.output.strip().splitlines()) == 1, result.output
    assert "context=cold" in result.output and "(auto: 2.1 MiB of weights >= 1 MiB)" in result.output
