"""The composition calibration: `lutbuild calibrate` stores whole / layers-now per model,
`lutbuild predict` multiplies the LUT sum by the median ratio of the OTHER calibrated models.

Real files (the tiny torchvision-style models of test_predict_model), a real SQLite LUT, the
real local runner (ONNX Runtime)."""
from __future__ import annotations

import json
import statistics

import pytest
import torch
from torch import nn

from lut_db.layer_key import GenericKey
from lut_db.schema import open_lut
from profiler.composition import (COMPOSITION, ModelRatio, composition_for, model_fingerprint, read_ratios,
                                  store_ratios)
from profiler.export import export_module
from profiler.graph_keys import map_graph
from profiler.model_graph import load_model
from profiler.same_batch import SameBatch
from tests.test_predict_model import FACTORY, conv_bn, run, tiny_net

WIDE = "tests.test_composition:wide_net"
SLICE = ("dev-x", "onnx", "cpu")


def wide_net() -> nn.Module:
    """A second network (other keys than tiny_net): conv, depthwise, conv, average pool, linear."""
    torch.manual_seed(0)
    return nn.Sequential(conv_bn(3, 24, 3, 2, nn.ReLU), conv_bn(24, 24, 3, 1, nn.ReLU6, groups=24),
                         conv_bn(24, 32, 1, 1, nn.Hardswish), nn.AdaptiveAvgPool2d(1), nn.Flatten(),
                         nn.Linear(32, 10)).eval()


def ratio(model: str, fp: str, value: float, p10: float | None = None) -> ModelRatio:
    return ModelRatio(model, fp, value, value if p10 is None else p10, 3)


def test_model_ratio_is_whole_over_layers_now_paired_per_round():
    same = SameBatch([2.0, 2.2, 4.0], [1.8, 2.0, 3.0], [1.9, 2.0, 3.5], [1.7, 1.9, 3.0])
    r = ModelRatio.of("m", "fp", same)
    # the median over rounds of layers / whole is 0.9 (1.8/2.0), so whole / layers is 1/0.9, not 4.0/3.0
    assert r.ratio == pytest.approx(1 / 0.9) and r.rounds == 3
    assert r.ratio_p10 == pytest.approx(1 / statistics.median([1.7 / 1.9, 1.9 / 2.0, 3.0 / 3.5]))


def test_the_predicted_model_is_held_out_of_its_own_factor():
    ratios = [ratio("a", "fa", 1.10, 1.02), ratio("b", "fb", 1.06, 1.04), ratio("c", "fc", 1.02, 1.00)]
    own = composition_for(ratios, "fa")
    assert own.factor == pytest.approx(1.04) and own.models == ("b", "c") and own.held_out == "a"
    assert "a itself held out" in own.note()
    assert composition_for(ratios, "fa", "p10").factor == pytest.approx(1.02)
    stranger = composition_for(ratios, "fz")
    assert stranger.factor == pytest.approx(1.06) and stranger.held_out == ""
    assert composition_for([ratio("a", "fa", 1.1)], "fa") is None


def test_store_ratios_replaces_a_model_and_keeps_the_others(tmp_path):
    db = open_lut(tmp_path / "lut.sqlite")
    assert read_ratios(db, *SLICE) == []
    assert store_ratios(db, *SLICE, [ratio("a", "fa", 1.10), ratio("b", "fb", 1.00)]) == pytest.approx(1.05)
    assert store_ratios(db, *SLICE, [ratio("a2", "fa", 1.20), ratio("c", "fc", 1.04)]) == pytest.approx(1.04)
    stored = {r.fingerprint: r for r in read_ratios(db, *SLICE)}
    assert sorted(stored) == ["fa", "fb", "fc"] and stored["fa"].model == "a2" and stored["fa"].ratio == 1.2
    assert read_ratios(db, "dev-x", "onnx", "other") == []  # per slice
    value = db.execute("SELECT value_ms FROM calibration WHERE name = ?", [COMPOSITION]).fetchone()[0]
    assert value == pytest.approx(1.04)
    db.close()


def test_fingerprint_is_the_sequence_of_keys_of_our_kinds(tmp_path):
    keys = [m.key for m in map_graph(load_model(FACTORY, (1, 3, 32, 32))).layers]
    onnx_path = export_module(tiny_net(), (torch.randn(1, 3, 32, 32),), "onnx", tmp_path / "t.onnx")
    again = [m.key for m in map_graph(load_model(str(onnx_path))).layers]
    assert model_fingerprint(keys) == model_fingerprint(again)  # a factory and its file: one model
    assert model_fingerprint(keys) != model_fingerprint(keys[:-1])  # the linear layer left out: another model
    ours = [k for k in keys if not isinstance(k, GenericKey)]
    assert len(ours) < len(keys) and model_fingerprint(keys) == model_fingerprint(ours)  # a converter's spelling
    generic = [k for k in keys if isinstance(k, GenericKey)]
    assert model_fingerprint(generic) != model_fingerprint(generic[:1])  # all generic: named by all its keys


@pytest.mark.slow
def test_calibrate_then_predict_applies_the_other_models_factor(tmp_path):
    """Fill the LUT for two models, calibrate both on this host, and predict each: its total is
    its LUT sum times the OTHER model's ratio, shown as a `(composition)` line."""
    db, cache, out = tmp_path / "lut.sqlite", tmp_path / "cache", tmp_path / "out.json"
    shape = ("--input-shape", "1,3,32,32")
    common = ("--db", db, "--device", "local", "--runtime", "onnx", "--cache-dir", cache, "--quiet")
    for model in (FACTORY, WIDE):
        code, text = run("predict", model, *shape, *common, "--measure-missing")
        assert code == 0, text
        assert "no composition calibration (lutbuild calibrate)" in text
    tiny_file = export_module(tiny_net(), (torch.randn(1, 3, 32, 32),), "onnx", tmp_path / "tiny.onnx",
                              image_out=False)
    code, text = run("calibrate", tiny_file, WIDE, *shape, *common, "--rounds", "1", "--repeats", "1",
                     "--json", out)
    assert code == 0, text
    report = json.loads(out.read_text())
    by_model = {m["model"]: m for m in report["models"]}
    assert set(by_model) == {str(tiny_file), WIDE}
    for m in by_model.values():  # a ratio of two timings of real work, whatever the host
        assert m["whole_ms"] > 0 and m["layers_now_ms"] > 0 and 0.2 < m["ratio"] < 5
        assert m["ratio"] == pytest.approx(m["whole_ms"] / m["layers_now_ms"], rel=1e-9)  # one round: exact
    assert list(report["slice_models"].values()) == [2]

    predictions = {}
    for model, other in ((FACTORY, WIDE), (WIDE, str(tiny_file))):
        code, text = run("predict", model, *shape, *common, "--json", out)
        assert code == 0, text
        got = json.loads(out.read_text())
        assert got["composition_factor"] == pytest.approx(by_model[other]["ratio"])
        assert got["total_ms"] == pytest.approx(got["lut_sum_ms"] * got["composition_factor"])
        assert got["layers"][-1]["source"] == "composition"
        assert sum(row["ms"] for row in got["layers"]) == pytest.approx(got["total_ms"], rel=1e-9)
        assert "itself held out" in got["composition_note"]
        predictions[model] = got
        code, text = run("predict", model, *shape, *common, "--json", out, "--no-composition")
        plain = json.loads(out.read_text())
        assert plain["total_ms"] == pytest.approx(got["lut_sum_ms"]) and plain["composition_factor"] == 1.0
        assert all(row["source"] != "composition" for row in plain["layers"])
    code, text = run("show", "--db", db)
    assert code == 0 and COMPOSITION in text


def test_calibrate_bad_inputs_one_line_exit_1(tmp_path):
    db, cache = tmp_path / "lut.sqlite", tmp_path / "cache"
    shape = ("--input-shape", "1,3,32,32")
    onnx_file = export_module(tiny_net(), (torch.randn(1, 3, 32, 32),), "onnx", tmp_path / "tiny.onnx")
    common = ("--device", "local", "--cache-dir", cache, "--quiet")
    code, text = run("calibrate", onnx_file, "--db", db, "--runtime", "onnx", *common)
    assert code == 1 and "no such LUT file" in text and len(text.strip().splitlines()) == 1, text
    open_lut(db).close()  # an empty LUT: no slice yet
    cases = {
        (onnx_file, "--runtime", "tflite"): "--runtime tflite expects a .tflite file",
        (onnx_file, onnx_file, "--runtime", "onnx"): "the same network as",
        (onnx_file, "--runtime", "onnx"): "lutbuild predict MODEL --measure-missing",
        ("tests.test_predict_model:raising_factory", *shape, "--runtime", "onnx"): "factory raised RuntimeError",
        (FACTORY, "--runtime", "onnx"): "needs --input-shape",
    }
    for args, expected in cases.items():
        code, text = run("calibrate", *args, "--db", db, *common)
        assert code == 1, (args, text)
        assert expected in text and len(text.strip().splitlines()) == 1, (args, text)
