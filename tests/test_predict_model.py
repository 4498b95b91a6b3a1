"""`lutbuild predict`: any model -> fusion-aware LUT keys -> latency with a per-layer breakdown.

Real files (ONNX/TFLite exported from a small torchvision-style model defined here), real
runtimes, a real SQLite LUT."""
from __future__ import annotations

import json

import onnx
import pytest
import torch
from click.testing import CliRunner
from torch import nn

from lut_db.layer_key import GenericKey, LayerConfig, RuntimeSpec, parse_key
from lut_db.schema import open_lut
from lut_db.writer import LutWriter, MeasurementRow
from profiler.cli import cli
from profiler.export import export_module
from profiler.graph_keys import map_graph
from profiler.model_graph import load_model
from search.spaces import get_space

FACTORY = "tests.test_predict_model:tiny_net"


class SE(nn.Module):
    """torchvision's SqueezeExcitation with MobileNetV3's activations."""

    def __init__(self, c: int, hidden: int):
        super().__init__()
        self.fc1, self.fc2 = nn.Conv2d(c, hidden, 1), nn.Conv2d(hidden, c, 1)

    def forward(self, x):
        s = nn.functional.adaptive_avg_pool2d(x, 1)
        return x * nn.functional.hardsigmoid(self.fc2(torch.relu(self.fc1(s))))


def conv_bn(cin, cout, k, s, act, groups=1):
    return nn.Sequential(nn.Conv2d(cin, cout, k, s, k // 2, groups=groups, bias=False), nn.BatchNorm2d(cout), act())


class TinyNet(nn.Module):
    """conv-bn-hardswish stem (= mbv3-tiny's stem), depthwise + ReLU6, SE, residual, max pool,
    SiLU, average pool, linear."""

    def __init__(self):
        super().__init__()
        self.stem = conv_bn(3, 16, 3, 1, nn.Hardswish)
        self.dw = conv_bn(16, 16, 3, 1, nn.ReLU6, groups=16)
        self.se = SE(16, 8)
        self.project = nn.Sequential(nn.Conv2d(16, 16, 1, bias=False), nn.BatchNorm2d(16))
        self.pool, self.act = nn.MaxPool2d(3, 2, 1), nn.SiLU()
        self.fc = nn.Linear(16, 10)

    def forward(self, x):
        x = self.stem(x)
        x = x + self.project(self.se(self.dw(x)))
        x = self.act(self.pool(x))
        return self.fc(nn.functional.adaptive_avg_pool2d(x, 1).flatten(1))


def tiny_net() -> nn.Module:
    torch.manual_seed(0)
    return TinyNet().eval()


def raising_factory() -> nn.Module:
    raise RuntimeError("no weights here")


@pytest.fixture(scope="module")
def tiny_onnx(tmp_path_factory):
    path = tmp_path_factory.mktemp("model") / "tiny.onnx"
    return export_module(tiny_net(), (torch.randn(1, 3, 32, 32),), "onnx", path)


def run(*args):
    result = CliRunner().invoke(cli, list(map(str, args)))
    return result.exit_code, result.output


def test_keys_of_our_kinds_are_the_search_space_keys(tiny_onnx):
    layers = map_graph(load_model(str(tiny_onnx))).layers
    space = get_space("mbv3-tiny")
    stem = layers[0]
    assert stem.ops == ("Conv", "HardSwish") and stem.key == space.stem_layer(16)
    assert stem.key in set(space.all_layer_configs())
    kinds = [layer.key.op for layer in layers]
    assert kinds == ["conv", "dwconv", "se", "conv", "add", "generic", "generic", "gap", "linear"]
    assert layers[1].key == LayerConfig("dwconv", 32, 32, 16, 16, kernel=3, groups=16, act="relu6")
    assert [type(k.key) for k in layers if k.generic] == [GenericKey, GenericKey]
    assert {k.key.op_type for k in layers if k.generic} == {"MaxPool", "Swish"}


def test_generic_keys_are_deterministic_and_parse_back(tiny_onnx, tmp_path):
    again = export_module(tiny_net(), (torch.randn(1, 3, 32, 32),), "onnx", tmp_path / "again.onnx")
    first = [m.key for m in map_graph(load_model(str(tiny_onnx))).layers if m.generic]
    second = [m.key for m in map_graph(load_model(str(again))).layers if m.generic]
    assert [k.key for k in first] == [k.key for k in second]
    pool = first[0]
    assert pool.key == ("generic:MaxPool:1x16x32x32->1x16x16x16:kernel_shape=3,3;pads=1,1,1,1;strides=2,2:float32")
    assert parse_key(pool.key) == pool and (pool.kernel, pool.stride, pool.cin, pool.h) == (3, 2, 16, 32)
    assert isinstance(parse_key(LayerConfig("gap", 4, 4, 8, 8).key), LayerConfig)


@pytest.mark.slow
def test_tflite_file_maps_to_the_same_keys(tiny_onnx, tmp_path):
    tfl = export_module(tiny_net(), (torch.randn(1, 3, 32, 32),), "tflite", tmp_path / "tiny.tflite", image_out=False)
    from_tflite = [m.key.key for m in map_graph(load_model(str(tfl))).layers]
    assert from_tflite == [m.key.key for m in map_graph(load_model(str(tiny_onnx))).layers]


@pytest.mark.slow
def test_measure_missing_fills_the_lut_then_predicts_from_it(tmp_path, tiny_onnx):
    db, out = tmp_path / "lut.sqlite", tmp_path / "p.json"
    code, text = run("predict", FACTORY, "--input-shape", "1,3,32,32", "--db", db, "--device", "local",
                     "--runtime", "onnx", "--measure-missing", "--quiet", "--cache-dir", tmp_path / "cache",
                     "--json", out)
    assert code == 0, text
    first = json.loads(out.read_text())
    assert first["measured_now"] == 9  # the 9 distinct keys of the model, each once
    assert first["counts"] == {"measured": 7, "generic": 2, "overhead": 1}
    assert sum(row["ms"] for row in first["layers"]) == pytest.approx(first["total_ms"], rel=1e-9)
    assert 0 < first["generic_share"] < 1
    rows = open_lut(db, create=False).execute("SELECT COUNT(*) FROM measurements").fetchone()[0]

    code, text = run("predict", tiny_onnx, "--db", db, "--device", "local", "--runtime", "onnx", "--json", out)
    assert code == 0, text
    second = json.loads(out.read_text())
    assert second["measured_now"] == 0 and second["total_ms"] == pytest.approx(first["total_ms"])
    assert open_lut(db, create=False).execute("SELECT COUNT(*) FROM measurements").fetchone()[0] == rows
    code, text = run("show", "--db", db)
    assert code == 0 and "generic operator keys" in text
    generic_line = next(line for line in text.splitlines() if line.startswith("local:") and " onnx " in line
                        and line.split()[-2:] == ["2", "2"])
    assert generic_line


@pytest.mark.slow
def test_raised_passes_measure_the_models_rows_again(tmp_path, tiny_onnx):
    """`--passes 2` on a slice filled with one pass gives every key of the model its second
    pass (as `lutbuild build --passes` resumes), and a third run with `--passes 2` measures nothing."""
    db, out = tmp_path / "lut.sqlite", tmp_path / "p.json"
    common = ("predict", tiny_onnx, "--db", db, "--device", "local", "--runtime", "onnx", "--measure-missing",
              "--quiet", "--cache-dir", tmp_path / "cache", "--json", out)
    seen = "SELECT json_extract(state_after, '$.profiler.passes') FROM measurements WHERE layer_key = ?"
    keys = list(dict.fromkeys(m.key.key for m in map_graph(load_model(str(tiny_onnx))).layers))
    code, text = run(*common)
    assert code == 0, text
    handle = open_lut(db, create=False)
    assert [handle.execute(seen, [k]).fetchone()[0] for k in keys] == [None] * len(keys)  # one pass, no record
    handle.close()
    for again, measured in ((2, len(keys)), (2, 0)):
        code, text = run(*common, "--passes", again)
        assert code == 0, text
        assert json.loads(out.read_text())["measured_now"] == measured
    handle = open_lut(db, create=False)
    assert [handle.execute(seen, [k]).fetchone()[0] for k in keys] == [2] * len(keys)
    handle.close()


@pytest.fixture
def partial_lut(tmp_path):
    """A LUT whose slice holds one row only: the stem of the tiny model."""
    db = tmp_path / "partial.sqlite"
    handle = open_lut(db)
    stem = LayerConfig("conv", 32, 32, 3, 16, kernel=3, stride=1, act="hswish")
    LutWriter(handle).write([MeasurementRow(stem, "dev-x", RuntimeSpec("onnx", "ort", delegate="cpu"), 5, 0.1, 0.1,
                                            0.09, 0.11, 0.01)])
    handle.close()
    return db


def _opset5(path):
    model = onnx.helper.make_model(onnx.helper.make_graph(
        [onnx.helper.make_node("Relu", ["x"], ["y"])], "g",
        [onnx.helper.make_tensor_value_info("x", onnx.TensorProto.FLOAT, [1, 4])],
        [onnx.helper.make_tensor_value_info("y", onnx.TensorProto.FLOAT, [1, 4])]),
        opset_imports=[onnx.helper.make_opsetid("", 5)])
    model.ir_version = 3
    onnx.save(model, str(path))
    return path


def test_bad_inputs_one_line_exit_1(tmp_path, partial_lut):
    text_file = tmp_path / "notes.onnx"
    text_file.write_text("hello")
    dynamic = tmp_path / "dynamic.onnx"
    torch.onnx.export(tiny_net(), (torch.randn(1, 3, 32, 32),), str(dynamic), dynamo=False,
                      dynamic_axes={"x": {0: "n", 2: "h", 3: "w"}}, input_names=["x"])
    base = ["--db", partial_lut, "--device", "dev-x", "--runtime", "onnx"]
    cases = {
        (text_file,): "not an ONNX model",
        (tmp_path / "nothing.txt",): "not a model",
        (_opset5(tmp_path / "old.onnx"),): "opset 5 is not supported",
        (dynamic,): "dynamic dimensions; give --input-shape",
        ("tests.test_predict_model:raising_factory", "--input-shape", "1,3,32,32"): "factory raised RuntimeError",
        ("no_such_package.mod:make", "--input-shape", "1,3,32,32"): "cannot import no_such_package.mod",
        (FACTORY,): "needs --input-shape",
        (FACTORY, "--input-shape", "1,three"): "--input-shape: expected positive integers",
        (FACTORY, "--input-shape", "1,3,32,32"): "give --measure-missing",
    }
    for args, expected in cases.items():
        code, text = run("predict", *args, *base)
        assert code == 1, (args, text)
        assert expected in text and len(text.strip().splitlines()) == 1, (args, text)
    code, text = run("predict", FACTORY, "--input-shape", "1,3,32,32", *base)
    assert "conv:32x32:3->16" not in text  # the stem is in the LUT: not listed as missing
    assert "8 of 9 operators" in text


def test_dynamic_onnx_with_input_shape_predicts_the_same_keys(tmp_path, tiny_onnx):
    dynamic = tmp_path / "dynamic.onnx"
    torch.onnx.export(tiny_net(), (torch.randn(1, 3, 32, 32),), str(dynamic), dynamo=False,
                      dynamic_axes={"x": {0: "n", 2: "h", 3: "w"}}, input_names=["x"])
    keys = [m.key.key for m in map_graph(load_model(str(dynamic), (1, 3, 32, 32))).layers]
    assert keys == [m.key.key for m in map_graph(load_model(str(tiny_onnx))).layers]
