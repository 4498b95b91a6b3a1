"""Generic keys' one-operator models (`profiler/generic_ops.py`) run what a network runs.

A mixnet-style mixed-conv block (Split -> convs -> Concat -> BatchNorm -> Swish), exported
here, mapped by `graph_keys`; its generic keys' TFLite models are real files run by the
LiteRT interpreter: the operator alone (no TRANSPOSE the network does not have), NHWC at
the boundary, computing the key's operator."""
from __future__ import annotations

import collections

import numpy as np
import onnx
import pytest
import torch
from torch import nn

from lut_db.layer_key import GenericKey, parse_key
from profiler.export import export_module
from profiler.generic_ops import CHANNELS_LAST_OPS, export_generic
from profiler.graph_keys import MODEL_VERSIONS, generic_key, map_graph
from profiler.model_graph import ModelGraph, Node, load_model


class MixedBlock(nn.Module):
    """mixnet's MixedConv2d (two 1x1 groups) + BatchNorm + Swish, then the SE-style gate multiply."""

    def __init__(self):
        super().__init__()
        self.convs = nn.ModuleList(nn.Conv2d(8, 12, 1, bias=False) for _ in range(2))
        self.bn = nn.BatchNorm2d(24)

    def forward(self, x):
        a, b = torch.split(x, [8, 8], 1)
        y = self.bn(torch.cat([self.convs[0](a), self.convs[1](b)], 1))
        y = y * torch.sigmoid(y)
        return y * torch.sigmoid(y.mean((2, 3), keepdim=True))


@pytest.fixture(scope="module")
def block_keys(tmp_path_factory):
    torch.manual_seed(0)
    path = export_module(MixedBlock().eval(), (torch.randn(1, 16, 12, 12),), "onnx",
                         tmp_path_factory.mktemp("block") / "block.onnx", image_out=True)
    layers = map_graph(load_model(str(path))).layers
    return {m.key.op_type: m.key for m in layers if m.generic}


def tflite_ops(path) -> tuple[collections.Counter, object]:
    from ai_edge_litert.interpreter import Interpreter  # why: optional runtime, heavy to load

    interpreter = Interpreter(model_path=str(path), num_threads=1)
    interpreter.allocate_tensors()
    return collections.Counter(op["op_name"] for op in interpreter._get_ops_details()), interpreter


def test_block_generic_keys_carry_their_model_version(block_keys):
    assert {"Split", "Concat", "BatchNormalization", "Swish", "Mul"} <= set(block_keys)
    for key in block_keys.values():
        assert key.attr("model") == str(MODEL_VERSIONS[key.op_type]) == "2", key.key
        assert parse_key(key.key) == key
    assert block_keys["Concat"].key == "generic:Concat:1x12x12x12,1x12x12x12->1x24x12x12:axis=1;model=2:float32"
    # every operator built channels-last has a version that retires the rows of its old model
    assert all(MODEL_VERSIONS.get(op, 1) >= 2 for op in CHANNELS_LAST_OPS)


def test_vector_generic_keys_are_not_versioned():
    graph = ModelGraph("g", [Node("s", "Sigmoid", ("x",), ("y",))], {"x": (1, 10), "y": (1, 10)}, {}, ["x"])
    assert generic_key(graph, graph.nodes[0]).key == "generic:Sigmoid:1x10->1x10:-:float32"


#: TFLite operators each one-operator model must hold (besides the DELEGATE node), no TRANSPOSE
EXPECTED = {"Split": {"SLICE": 2}, "Concat": {"CONCATENATION": 1}, "Swish": {"LOGISTIC": 1, "MUL": 1},
            "Mul": {"MUL": 1}, "BatchNormalization": {"SUB": 1, "MUL": 2, "ADD": 1}}


@pytest.mark.parametrize("op", sorted(EXPECTED))
def test_tflite_one_operator_model_is_the_operator_alone_on_nhwc(block_keys, op, tmp_path):
    key: GenericKey = block_keys[op]
    ops, interpreter = tflite_ops(export_generic(key, "tflite", tmp_path / f"{op}.tflite"))
    assert {k: v for k, v in ops.items() if k != "DELEGATE"} == EXPECTED[op], (key.key, ops)
    dynamic = [s for s, c in zip(key.inputs, key.const_inputs) if not c]
    nhwc = [(n, h, w, c) for n, c, h, w in dynamic]
    assert sorted(tuple(d["shape"]) for d in interpreter.get_input_details()) == sorted(nhwc)
    if op == "BatchNormalization":
        return  # random statistics: no reference; the op list above is the check
    rng = np.random.default_rng(0)
    xs = {d["index"]: rng.standard_normal(d["shape"]).astype(np.float32) for d in interpreter.get_input_details()}
    for index, x in xs.items():
        interpreter.set_tensor(index, x)
    interpreter.invoke()
    nchw = [torch.from_numpy(x).permute(0, 3, 1, 2) for x in xs.values()]
    if op == "Concat":  # the converter may order the inputs; the channel sum is exact either way
        got = interpreter.get_tensor(interpreter.get_output_details()[0]["index"])
        assert got.shape == (1, 12, 12, 24)
        assert np.allclose(np.sort(got.ravel()), np.sort(torch.cat(nchw, 1).numpy().ravel()))
        return
    outs = [interpreter.get_tensor(d["index"]) for d in interpreter.get_output_details()]
    if op == "Split":
        want = [t.permute(0, 2, 3, 1).numpy() for t in torch.split(nchw[0], [8, 8], 1)]
        assert sorted(o.shape for o in outs) == [(1, 12, 12, 8)] * 2
        assert any(np.allclose(outs[0], w) for w in want) and any(np.allclose(outs[1], w) for w in want)
    elif op == "Swish":
        assert np.allclose(outs[0], (nchw[0] * torch.sigmoid(nchw[0])).permute(0, 2, 3, 1).numpy(), atol=1e-5)
    else:  # Mul of the image and the (1, C, 1, 1) gate
        want = (nchw[0] * nchw[1]).permute(0, 2, 3, 1).numpy()
        assert outs[0].shape == want.shape and np.allclose(outs[0], want, atol=1e-6)


def test_onnx_one_operator_model_stays_nchw(block_keys, tmp_path):
    key = block_keys["Concat"]
    model = onnx.load(str(export_generic(key, "onnx", tmp_path / "concat.onnx")))
    dims = [tuple(d.dim_value for d in i.type.tensor_type.shape.dim) for i in model.graph.input]
    assert dims == [(1, 12, 12, 12), (1, 12, 12, 12)]
    assert [n.op_type for n in model.graph.node] == ["Concat"]


class ConcatBnRelu(nn.Module):
    """mixnet_s's first expansion: Concat -> standalone BatchNorm -> ReLU."""

    def __init__(self):
        super().__init__()
        self.bn = nn.BatchNorm2d(16)

    def forward(self, a, b):
        return torch.relu(self.bn(torch.cat([a, b], 1)))


def test_standalone_batchnorm_and_its_relu_are_one_key_run_as_tflite_fuses_them(tmp_path):
    inputs = (torch.randn(1, 8, 6, 6), torch.randn(1, 8, 6, 6))
    path = export_module(ConcatBnRelu().eval(), inputs, "onnx", tmp_path / "cbr.onnx", image_args=(0, 1))
    layers = map_graph(load_model(str(path))).layers
    assert [m.ops for m in layers] == [("Concat",), ("BatchNormalization", "Relu")]
    key = layers[1].key
    assert key.attr("act") == "relu" and key.attr("model") == "2" and parse_key(key.key) == key
    ops, _ = tflite_ops(export_generic(key, "tflite", tmp_path / "bn.tflite"))
    assert {k: v for k, v in ops.items() if k != "DELEGATE"} == {"SUB": 1, "MUL": 2, "ADD": 1}  # ReLU fused
    model = onnx.load(str(export_generic(key, "onnx", tmp_path / "bn.onnx")))
    assert [n.op_type for n in model.graph.node] == ["BatchNormalization", "Relu"]


def test_channels_last_constant_broadcasts_as_in_nchw(tmp_path):
    """An ONNX bias of shape (C, 1, 1) added to an NCHW image: the NHWC model adds it per channel."""
    key = GenericKey("Add", ((1, 4, 3, 3), (4, 1, 1)), (False, True), (1, 4, 3, 3), (("in1", "1,2,3,4"),))
    ops, interpreter = tflite_ops(export_generic(key, "tflite", tmp_path / "add.tflite"))
    assert {k: v for k, v in ops.items() if k != "DELEGATE"} == {"ADD": 1}
    x = np.random.default_rng(0).standard_normal((1, 3, 3, 4)).astype(np.float32)
    interpreter.set_tensor(interpreter.get_input_details()[0]["index"], x)
    interpreter.invoke()
    got = interpreter.get_tensor(interpreter.get_output_details()[0]["index"])
    assert np.allclose(got, x + np.array([1, 2, 3, 4], dtype=np.float32))
