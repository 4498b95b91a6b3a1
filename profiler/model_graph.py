"""A user's model as one small graph: `.onnx`, `.tflite` or a PyTorch `package.module:factory`.

`lutbuild predict` maps any model onto LUT keys (`graph_keys.py`); this module only reads
it, in ONE vocabulary whatever the file: ONNX operator names and NCHW shapes. A TFLite
file's builtin operators are translated (CONV_2D -> Conv, a fused activation -> its own
activation node after it, NHWC shapes -> NCHW); a PyTorch factory is called with no
arguments and exported to ONNX in a temporary folder (`export.export_module`, the
profiler's own ONNX exporter). Every shape is static: ONNX shape inference fills them,
and a dynamic dimension needs `--input-shape`.

Everything a user can get wrong (not a model file, an opset outside what we read, a
dynamic shape without `--input-shape`, a factory that cannot be imported or raises) is a
`ProfilerError` with one line, raised here before any work.
"""
from __future__ import annotations

import importlib
import re
import tempfile
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import onnx
import onnx.numpy_helper
import torch
from onnx import shape_inference

from .errors import ProfilerError
from .export import export_module
from .model_files import is_tflite

#: ai.onnx opsets this reader understands (attribute vs. input forms of Clip/ReduceMean/Resize...).
MIN_OPSET, MAX_OPSET = 9, onnx.defs.onnx_opset_version()
#: `package.module:factory`
_FACTORY = re.compile(r"^[A-Za-z_][\w.]*:[A-Za-z_]\w*$")
_DTYPES = {onnx.TensorProto.FLOAT: "float32", onnx.TensorProto.FLOAT16: "float16", onnx.TensorProto.INT8: "int8",
           onnx.TensorProto.UINT8: "uint8"}


@dataclass(frozen=True)
class Node:
    """One operator: ONNX `op` name, tensor names in and out, attributes as plain Python values."""

    name: str
    op: str
    inputs: tuple[str, ...]
    outputs: tuple[str, ...]
    attrs: dict = field(default_factory=dict, compare=False, hash=False)

    def attr(self, name: str, default=None):
        return self.attrs.get(name, default)


@dataclass
class ModelGraph:
    """The operators of a model in execution order, every tensor's static shape (NCHW for
    images), and the constant tensors (weights; values kept for small ones, e.g. Clip bounds)."""

    source: str  # what the user gave (file or factory), for messages
    nodes: list[Node]
    shapes: dict[str, tuple[int, ...]]
    consts: dict[str, np.ndarray | None]  # None: a constant too large to keep
    inputs: list[str]
    dtype: str = "float32"
    _consumers: dict[str, list[Node]] | None = None

    def consumers(self, tensor: str) -> list[Node]:
        if self._consumers is None:
            self._consumers = {}
            for node in self.nodes:
                for name in node.inputs:
                    if name:
                        self._consumers.setdefault(name, []).append(node)
        return self._consumers.get(tensor, [])

    def is_const(self, tensor: str) -> bool:
        return tensor in self.consts

    def const_value(self, tensor: str) -> np.ndarray | None:
        return self.consts.get(tensor)

    @property
    def weight_bytes(self) -> int:
        """Bytes of the model's stored constants (weights, biases, scales) at its dtype: what a
        network reads from memory per inference beside its activations (`--context cold`)."""
        produced = {t for node in self.nodes for t in node.outputs}  # an Identity of a weight is not a second one
        size = {"float32": 4, "float16": 2}.get(self.dtype, 1)
        return size * sum(int(np.prod(self.shapes[c], dtype=np.int64)) for c in self.consts
                          if c not in produced and c in self.shapes)


def parse_input_shape(text: str | None) -> tuple[int, ...] | None:
    """``1,3,224,224`` -> (1, 3, 224, 224); a `ProfilerError` naming --input-shape otherwise."""
    if text is None:
        return None
    try:
        shape = tuple(int(v) for v in text.replace("x", ",").split(","))
    except ValueError:
        shape = ()
    if not shape or any(d < 1 for d in shape):
        raise ProfilerError(f"--input-shape: expected positive integers such as 1,3,224,224, got {text!r}")
    return shape


def load_model(model: str, input_shape: tuple[int, ...] | None = None) -> ModelGraph:
    """The graph of `model`: an ``.onnx`` file, a ``.tflite`` file or ``package.module:factory``."""
    path = Path(model)
    if path.suffix.lower() in (".onnx", ".tflite") or path.exists():
        if not path.is_file():
            raise ProfilerError(f"{model}: no such model file (expected an .onnx or .tflite file)")
        with path.open("rb") as f:
            head = f.read(8)  # enough to tell a TFLite FlatBuffer; the reader then reads the file once
        if path.suffix.lower() == ".tflite" or is_tflite(head):
            return read_tflite(path, input_shape)
        return read_onnx(path, input_shape)
    if is_factory(model):
        if input_shape is None:
            raise ProfilerError(f"{model}: a PyTorch factory needs --input-shape (e.g. 1,3,224,224)")
        return read_factory(model, input_shape)
    raise ProfilerError(f"{model}: not a model: expected an .onnx or .tflite file or a PyTorch "
                        "package.module:factory")


# ----------------------------------------------------------------------------- PyTorch
def is_factory(model: str) -> bool:
    """`model` names a PyTorch factory (`package.module:factory`), not a file."""
    return bool(_FACTORY.match(model)) and not Path(model).exists()


def call_factory(spec: str) -> torch.nn.Module:
    """The module `package.module:factory()` returns, in eval mode (one-line errors)."""
    module_name, factory_name = spec.split(":")
    try:
        module = importlib.import_module(module_name)
    except Exception as exc:  # noqa: BLE001 - any failure of the user's import is theirs to fix
        raise ProfilerError(f"{spec}: cannot import {module_name}: {type(exc).__name__}: {exc}") from exc
    factory = getattr(module, factory_name, None)
    if not callable(factory):
        raise ProfilerError(f"{spec}: {module_name} has no callable {factory_name!r}")
    try:
        model = factory()
    except Exception as exc:  # noqa: BLE001
        raise ProfilerError(f"{spec}: the factory raised {type(exc).__name__}: {exc}") from exc
    if not isinstance(model, torch.nn.Module):
        raise ProfilerError(f"{spec}: the factory returned {type(model).__name__}, expected a torch.nn.Module")
    return model.eval()


def read_factory(spec: str, input_shape: tuple[int, ...]) -> ModelGraph:
    """Call `package.module:factory()` and read its graph through an ONNX export."""
    model = call_factory(spec)
    with tempfile.TemporaryDirectory(prefix="lutbuild-predict-") as tmp:
        path = Path(tmp) / "model.onnx"
        try:
            export_module(model, (torch.randn(*input_shape),), "onnx", path)
        except Exception as exc:  # noqa: BLE001 - a model the exporter cannot trace at this shape
            raise ProfilerError(f"{spec}: cannot export to ONNX at input shape {input_shape}: "
                                f"{type(exc).__name__}: {str(exc).splitlines()[0] if str(exc) else ''}") from exc
        graph = read_onnx(path, None)
    graph.source = spec
    return graph


# ----------------------------------------------------------------------------- ONNX
def read_onnx(path: Path, input_shape: tuple[int, ...] | None) -> ModelGraph:
    try:
        proto = onnx.load(str(path))
    except Exception as exc:  # noqa: BLE001 - protobuf raises several types for a bad file
        raise ProfilerError(f"{path}: not an ONNX model ({type(exc).__name__})") from exc
    if not proto.graph.node:
        raise ProfilerError(f"{path}: not an ONNX model (no operators)")
    opset = next((o.version for o in proto.opset_import if o.domain in ("", "ai.onnx")), None)
    if opset is None or not MIN_OPSET <= opset <= MAX_OPSET:
        raise ProfilerError(f"{path}: ONNX opset {opset} is not supported (expected {MIN_OPSET}..{MAX_OPSET})")
    inits = {i.name for i in proto.graph.initializer}
    inputs = [i for i in proto.graph.input if i.name not in inits]
    for i in inputs:
        dims = i.type.tensor_type.shape.dim
        static = all(d.HasField("dim_value") and d.dim_value > 0 for d in dims)
        if input_shape is not None:
            if len(inputs) != 1 or len(input_shape) != len(dims):
                raise ProfilerError(f"{path}: --input-shape {input_shape} does not fit input {i.name!r} "
                                    f"of rank {len(dims)} ({len(inputs)} input(s))")
            for d, v in zip(dims, input_shape):
                d.Clear()
                d.dim_value = v
        elif not static:
            raise ProfilerError(f"{path}: input {i.name!r} has dynamic dimensions; give --input-shape")
    try:
        proto = shape_inference.infer_shapes(proto, strict_mode=True, data_prop=True)
    except Exception as exc:  # noqa: BLE001
        raise ProfilerError(f"{path}: ONNX shape inference failed: {str(exc).splitlines()[0]}") from exc
    shapes: dict[str, tuple[int, ...]] = {}
    dtype = "float32"
    for vi in [*proto.graph.input, *proto.graph.value_info, *proto.graph.output]:
        t = vi.type.tensor_type
        if all(d.HasField("dim_value") for d in t.shape.dim):
            shapes[vi.name] = tuple(int(d.dim_value) for d in t.shape.dim)
    if inputs:
        dtype = _DTYPES.get(inputs[0].type.tensor_type.elem_type, "float32")
    consts: dict[str, np.ndarray | None] = {}
    for init in proto.graph.initializer:
        shapes[init.name] = tuple(init.dims)
        consts[init.name] = onnx.numpy_helper.to_array(init) if np.prod(init.dims, dtype=np.int64) <= 64 else None
    nodes = []
    for i, n in enumerate(proto.graph.node):
        attrs = {a.name: onnx.helper.get_attribute_value(a) for a in n.attribute}
        if n.op_type == "Constant" and "value" in attrs:
            value = onnx.numpy_helper.to_array(attrs["value"])
            consts[n.output[0]] = value if value.size <= 64 else None
            shapes[n.output[0]] = tuple(value.shape)
            continue
        attrs = {k: (v.decode() if isinstance(v, bytes) else v) for k, v in attrs.items()
                 if not isinstance(v, onnx.TensorProto)}
        nodes.append(Node(n.name or f"{n.op_type}_{i}", n.op_type, tuple(n.input), tuple(n.output), attrs))
    for n in nodes:
        for t in n.outputs:
            if t and t not in shapes:
                raise ProfilerError(f"{path}: tensor {t!r} of {n.op} has no static shape; give --input-shape")
    _propagate_constants(nodes, consts)
    return ModelGraph(str(path), nodes, shapes, consts, [i.name for i in inputs], dtype)


def _propagate_constants(nodes: list[Node], consts: dict) -> None:
    """Identity/Shape-of-constant nodes are constants too (the exporter wraps shared weights in Identity)."""
    for n in nodes:
        if n.op in ("Identity", "Cast", "Unsqueeze", "Reshape", "Squeeze") and n.inputs and n.inputs[0] in consts \
                and all(t in consts for t in n.inputs if t):
            consts[n.outputs[0]] = None


# ----------------------------------------------------------------------------- TFLite
#: TFLite builtin -> ONNX op name of this graph (the others keep their name as ``tflite.NAME``).
_TFL_OPS = {"CONV_2D": "Conv", "DEPTHWISE_CONV_2D": "Conv", "ADD": "Add", "MUL": "Mul", "SUB": "Sub",
            "DIV": "Div", "MEAN": "ReduceMean", "FULLY_CONNECTED": "Gemm", "HARD_SWISH": "HardSwish",
            "LOGISTIC": "Sigmoid", "RELU": "Relu", "RELU6": "Clip", "AVERAGE_POOL_2D": "AveragePool",
            "MAX_POOL_2D": "MaxPool", "RESHAPE": "Reshape", "SQUEEZE": "Squeeze", "PAD": "Pad", "PADV2": "Pad",
            "CONCATENATION": "Concat", "RESIZE_NEAREST_NEIGHBOR": "Resize", "SOFTMAX": "Softmax",
            "TANH": "Tanh", "TRANSPOSE": "Transpose", "EXPAND_DIMS": "Unsqueeze"}
_FUSED = {1: "Relu", 3: "Clip"}  # TFLite ActivationFunctionType: RELU, RELU6 (RELU_N1_TO_1=2 unused here)
_NHWC_AXIS = {0: 0, 1: 2, 2: 3, 3: 1}  # an NHWC axis -> its NCHW axis


def read_tflite(path: Path, input_shape: tuple[int, ...] | None) -> ModelGraph:
    # why: the flatbuffer schema ships with the LiteRT interpreter (an optional runtime to load)
    from ai_edge_litert import schema_py_generated as tfl

    data = path.read_bytes()
    if not is_tflite(data):
        raise ProfilerError(f"{path}: not a TFLite model (no TFL3 identifier)")
    try:
        model = tfl.Model.GetRootAsModel(data, 0)
        sub = model.Subgraphs(0)
        codes = {v: k for k, v in vars(tfl.BuiltinOperator).items() if not k.startswith("_")}
        tensors = [sub.Tensors(i) for i in range(sub.TensorsLength())]
    except Exception as exc:  # noqa: BLE001 - a damaged flatbuffer raises anything
        raise ProfilerError(f"{path}: not a readable TFLite model ({type(exc).__name__})") from exc

    def name(i: int) -> str:
        return f"t{i}"

    def nchw(shape: tuple[int, ...]) -> tuple[int, ...]:
        return (shape[0], shape[3], shape[1], shape[2]) if len(shape) == 4 else shape

    shapes: dict[str, tuple[int, ...]] = {}
    consts: dict[str, np.ndarray | None] = {}
    for i, t in enumerate(tensors):
        shape = tuple(int(d) for d in t.ShapeAsNumpy()) if t.ShapeLength() else ()
        sig = tuple(int(d) for d in t.ShapeSignatureAsNumpy()) if t.ShapeSignatureLength() else shape
        if any(d < 0 for d in sig) and input_shape is None and i in list(sub.InputsAsNumpy()):
            raise ProfilerError(f"{path}: input {t.Name().decode()!r} has dynamic dimensions; give --input-shape")
        buf = model.Buffers(t.Buffer()) if t.Buffer() < model.BuffersLength() else None
        is_const = buf is not None and (buf.DataLength() > 0 or buf.Offset() > 1)
        weightlike = is_const  # conv/FC weights keep TFLite's layout (read by index below)
        shapes[name(i)] = shape if weightlike else nchw(shape)
        if is_const:
            consts[name(i)] = None
            kind = {tfl.TensorType.FLOAT32: np.float32, tfl.TensorType.INT32: np.int32}.get(t.Type())
            if buf.DataLength() and buf.DataLength() <= 256 and kind is not None:
                consts[name(i)] = np.frombuffer(buf.DataAsNumpy().tobytes(), dtype=kind).reshape(shape)
    if input_shape is not None:
        inputs = list(sub.InputsAsNumpy())
        if len(inputs) != 1:
            raise ProfilerError(f"{path}: --input-shape needs a model with one input ({len(inputs)} found)")
        if len(input_shape) != len(shapes[name(inputs[0])]) or shapes[name(inputs[0])] != input_shape:
            raise ProfilerError(f"{path}: --input-shape {input_shape} differs from the file's input "
                                f"{shapes[name(inputs[0])]} (NCHW); a TFLite file has static shapes")
    nodes: list[Node] = []
    for i in range(sub.OperatorsLength()):
        op = sub.Operators(i)
        code = model.OperatorCodes(op.OpcodeIndex())
        builtin = codes.get(max(code.BuiltinCode(), code.DeprecatedBuiltinCode()), "CUSTOM")
        ins = tuple(name(j) if j >= 0 else "" for j in op.InputsAsNumpy())
        outs = tuple(name(j) for j in op.OutputsAsNumpy())
        nodes.extend(_tflite_node(tfl, f"{builtin}_{i}", builtin, op, ins, outs, shapes, consts))
    dtype = "float32"
    return ModelGraph(str(path), nodes, shapes, consts, [name(j) for j in sub.InputsAsNumpy()], dtype)


def _options(tfl, op, cls_name: str):
    table = op.BuiltinOptions()
    if table is None:
        return None
    opts = getattr(tfl, cls_name)()
    opts.Init(table.Bytes, table.Pos)
    return opts


def _tflite_node(tfl, node_name: str, builtin: str, op, ins, outs, shapes, consts) -> list[Node]:
    """One TFLite operator as ONNX-vocabulary node(s): a fused activation becomes its own node."""
    onnx_op = _TFL_OPS.get(builtin, f"tflite.{builtin}")
    attrs: dict = {}
    fused = 0
    if builtin in ("CONV_2D", "DEPTHWISE_CONV_2D"):
        opts = _options(tfl, op, "Conv2DOptions" if builtin == "CONV_2D" else "DepthwiseConv2DOptions")
        weight = shapes[ins[1]]  # CONV_2D (O, kh, kw, I); DEPTHWISE (1, kh, kw, C)
        x = shapes[ins[0]]
        attrs = {"kernel_shape": [weight[1], weight[2]], "strides": [opts.StrideH(), opts.StrideW()],
                 "dilations": [opts.DilationHFactor(), opts.DilationWFactor()],
                 "group": x[1] if builtin == "DEPTHWISE_CONV_2D" else max(1, x[1] // weight[3])}
        attrs["pads"] = _same_pads(x, shapes[outs[0]], attrs) if opts.Padding() == tfl.Padding.SAME else [0, 0, 0, 0]
        fused = opts.FusedActivationFunction()
    elif builtin in ("AVERAGE_POOL_2D", "MAX_POOL_2D"):
        opts = _options(tfl, op, "Pool2DOptions")
        attrs = {"kernel_shape": [opts.FilterHeight(), opts.FilterWidth()],
                 "strides": [opts.StrideH(), opts.StrideW()]}
        attrs["pads"] = _same_pads(shapes[ins[0]], shapes[outs[0]], attrs) \
            if opts.Padding() == tfl.Padding.SAME else [0, 0, 0, 0]
        fused = opts.FusedActivationFunction()
    elif builtin in ("ADD", "MUL", "SUB", "DIV"):
        cls = {"ADD": "AddOptions", "MUL": "MulOptions", "SUB": "SubOptions", "DIV": "DivOptions"}[builtin]
        opts = _options(tfl, op, cls)
        fused = opts.FusedActivationFunction() if opts is not None else 0
    elif builtin == "FULLY_CONNECTED":
        opts = _options(tfl, op, "FullyConnectedOptions")
        fused = opts.FusedActivationFunction() if opts is not None else 0
        attrs = {"transB": 1}
    elif builtin == "MEAN":
        axes = consts.get(ins[1])
        attrs = {"axes": sorted(_NHWC_AXIS.get(int(a), int(a)) for a in np.ravel(axes))} if axes is not None else {}
        opts = _options(tfl, op, "ReducerOptions")
        attrs["keepdims"] = int(bool(opts.KeepDims())) if opts is not None else 0
        ins = ins[:1]
    elif builtin in ("PAD", "PADV2"):
        pads = consts.get(ins[1])
        if pads is not None and pads.shape == (4, 2):  # NHWC (begin, end) rows -> ONNX NCHW begins + ends
            rows = [pads[0], pads[3], pads[1], pads[2]]
            attrs = {"pads": [int(r[0]) for r in rows] + [int(r[1]) for r in rows], "mode": "constant"}
            value = consts.get(ins[2]) if len(ins) > 2 and ins[2] else None
            if value is not None:
                attrs["value"] = float(np.ravel(value)[0])
            ins = ins[:1]
    elif builtin == "RELU6":
        attrs = {"min": 0.0, "max": 6.0}
    elif builtin == "RESIZE_NEAREST_NEIGHBOR":
        x, y = shapes[ins[0]], shapes[outs[0]]
        attrs = {"mode": "nearest", "scales": [1.0, 1.0, y[2] / x[2], y[3] / x[3]]}
        ins = ins[:1]
    elif builtin == "CONCATENATION":
        opts = _options(tfl, op, "ConcatenationOptions")
        axis = opts.Axis() if opts is not None else -1
        rank = len(shapes[outs[0]])
        attrs = {"axis": _NHWC_AXIS[axis % 4] if rank == 4 else axis % max(rank, 1)}
        fused = opts.FusedActivationFunction() if opts is not None else 0
    nodes = []
    if fused in _FUSED:
        mid = f"{outs[0]}.prefused"
        shapes[mid] = shapes[outs[0]]
        nodes.append(Node(node_name, onnx_op, ins, (mid,), attrs))
        act_attrs = {"min": 0.0, "max": 6.0} if fused == 3 else {}
        nodes.append(Node(f"{node_name}.act", _FUSED[fused], (mid,), outs, act_attrs))
    else:
        nodes.append(Node(node_name, onnx_op, ins, outs, attrs))
    return nodes


def _same_pads(x: tuple[int, ...], y: tuple[int, ...], attrs: dict) -> list[int]:
    """TFLite SAME padding as ONNX pads [top, left, bottom, right] (the extra pixel at the end)."""
    pads = []
    for i, axis in enumerate((2, 3)):
        k = (attrs["kernel_shape"][i] - 1) * attrs.get("dilations", [1, 1])[i] + 1
        total = max(0, (y[axis] - 1) * attrs["strides"][i] + k - x[axis])
        pads.append((total // 2, total - total // 2))
    return [pads[0][0], pads[1][0], pads[0][1], pads[1][1]]
