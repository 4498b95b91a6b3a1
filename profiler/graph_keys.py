"""A model graph (`model_graph.ModelGraph`) -> the LUT keys its runtime executes, fusion-aware.

The rules follow what TFLite (XNNPACK) and ONNX Runtime run as one kernel, and what the
project's own LUT rows measure (`search/spaces/ops.py` exported alone):

- Conv [+ BatchNormalization] [+ ReLU / ReLU6 / hard-swish / hard-sigmoid] = one ``conv``
  key (groups 1) or ``dwconv`` key (groups = channels), when the kernel is square, dilation
  1, and the padding is 'same' (k - 1 pixels per axis, a Pad in front included); the
  activation is fused only when the conv's output feeds nothing else.
- squeeze-excite (global pool -> 1x1 conv -> ReLU -> 1x1 conv -> hard-sigmoid -> multiply
  with the pooled tensor) = one ``se`` key; global average pooling alone = ``gap``.
- Gemm / MatMul(+Add) on a vector [+ activation] = ``linear``; the add of two run-time
  tensors of one image shape = ``add``; nearest Resize by an integer factor = ``upsample``.
- Flatten, Reshape, Squeeze, Unsqueeze, Identity, Dropout and operators of constants only
  are free (no kernel, or folded by the converter): no key.
- Everything else is a `GenericKey` (operator type + shapes + attributes); a Sigmoid
  feeding a Mul with its own input is one ``Swish`` group; a standalone BatchNormalization
  and the ReLU / ReLU6 after it are one BatchNormalization key with ``act=``; an activation
  that could not be fused is its own generic key.

Keys of the project's kinds are built by `search.spaces.keys` (the helpers the search
spaces use), so a layer of a user's model that equals a search-space layer has the very
same key, and shares its measurement.
"""
from __future__ import annotations

from dataclasses import dataclass, replace

import numpy as np

from lut_db.layer_key import GenericKey, LayerConfig
from search.spaces import keys

from .model_graph import ModelGraph, Node

#: Operators with no kernel of their own at run time (views, or folded by the converters).
FREE_OPS = frozenset({"Flatten", "Reshape", "Squeeze", "Unsqueeze", "Identity", "Dropout"})
#: ONNX attribute defaults, left out of generic keys (TFLite-read graphs do not spell them).
_DEFAULTS = {"ceil_mode": "0", "dilations": "1,1", "group": "1", "auto_pad": "NOTSET", "storage_order": "0"}
_ACTS = {"Relu": "relu", "HardSwish": "hswish", "HardSigmoid": "hsigmoid"}
#: Version of the one-operator model (`generic_ops.py`) of a generic key on images, spelled
#: ``model=<n>`` in the key when > 1, so a LUT row measured with an older model is not reused
#: (it stays in the LUT, unused). 2: the layout-free operators are built on NHWC tensors for
#: TFLite, without the TRANSPOSEs the converter put around them (docs/predict.md, "mixnet_s:
#: over-prediction"); a standalone BatchNormalization has trained-looking statistics.
MODEL_VERSIONS = {op: 2 for op in ("Relu", "Sigmoid", "Tanh", "HardSwish", "HardSigmoid", "Swish", "Clip", "Add",
                                   "Sub", "Mul", "Div", "Concat", "Split", "BatchNormalization")}


@dataclass(frozen=True)
class MappedLayer:
    """One line of a prediction: the graph operators it covers and their LUT key."""

    name: str  # first operator's name
    ops: tuple[str, ...]  # operator types covered, in order ("Conv", "HardSwish")
    key: LayerConfig | GenericKey

    @property
    def generic(self) -> bool:
        return isinstance(self.key, GenericKey)


@dataclass(frozen=True)
class GraphMapping:
    """All keyed layers of a model in execution order, and how many operators were free."""

    layers: list[MappedLayer]
    free_ops: int


def map_graph(graph: ModelGraph) -> GraphMapping:
    """The fusion-aware LUT keys of `graph` (module docstring)."""
    mapper = _Mapper(graph)
    return GraphMapping(mapper.run(), mapper.free)


class _Mapper:
    def __init__(self, graph: ModelGraph) -> None:
        self.g = graph
        self.claimed: set[int] = set()
        self.index = {id(n): i for i, n in enumerate(graph.nodes)}
        self.free = 0

    # ------------------------------------------------------------ helpers
    def shape(self, tensor: str) -> tuple[int, ...]:
        return self.g.shapes.get(tensor, ())

    def only_consumer(self, tensor: str) -> Node | None:
        users = self.g.consumers(tensor)
        if len(users) == 1 and id(users[0]) not in self.claimed:
            return users[0]
        return None

    def claim(self, *nodes: Node) -> None:
        self.claimed.update(id(n) for n in nodes)

    def dynamic_inputs(self, node: Node) -> list[str]:
        return [t for t in node.inputs if t and not self.g.is_const(t)]

    def run(self) -> list[MappedLayer]:
        out: list[MappedLayer] = []
        for node in self.g.nodes:
            if id(node) in self.claimed:
                continue
            if node.op in FREE_OPS or not self.dynamic_inputs(node):
                self.claim(node)
                self.free += 1
                for t in node.outputs:
                    if not self.dynamic_inputs(node):
                        self.g.consts.setdefault(t, None)
                continue
            layer = (self.se(node) or self.gap(node) or self.conv(node) or self.linear(node) or self.add(node)
                     or self.upsample(node) or self.swish(node) or self.padded_pool(node) or self.batchnorm_act(node)
                     or self.generic(node))
            out.append(layer)
        return out

    # ------------------------------------------------------------ activations
    def activation(self, tensor: str) -> tuple[str, Node | None]:
        """The LUT activation fused after `tensor` (and its node), or ("none", None)."""
        node = self.only_consumer(tensor)
        if node is None:
            return "none", None
        if node.op in _ACTS:
            if node.op == "HardSigmoid" and abs(node.attr("alpha", 0.2) - 1 / 6) > 1e-3:
                return "none", None  # ONNX's default alpha 0.2 is not torch's hard-sigmoid
            return _ACTS[node.op], node
        if node.op == "Clip" and self.clip_bounds(node) == (0.0, 6.0):
            return "relu6", node
        return "none", None

    def clip_bounds(self, node: Node) -> tuple[float, float] | None:
        lo, hi = node.attr("min"), node.attr("max")
        if len(node.inputs) > 1:
            values = [self.g.const_value(t) if t else None for t in node.inputs[1:3]]
            lo = float(values[0]) if len(values) > 0 and values[0] is not None else lo
            hi = float(values[1]) if len(values) > 1 and values[1] is not None else hi
        if lo is None or hi is None:
            return None
        return float(lo), float(hi)

    # ------------------------------------------------------------ patterns
    def is_global_pool(self, node: Node) -> bool:
        if node.op == "GlobalAveragePool":
            return len(self.shape(node.inputs[0])) == 4
        if node.op == "ReduceMean":
            axes = node.attr("axes")
            if axes is None and len(node.inputs) > 1 and node.inputs[1]:
                value = self.g.const_value(node.inputs[1])
                axes = None if value is None else [int(a) for a in np.ravel(value)]
            return len(self.shape(node.inputs[0])) == 4 and axes is not None and \
                sorted(a % 4 for a in axes) == [2, 3]
        return False

    def se(self, pool: Node) -> MappedLayer | None:
        if not self.is_global_pool(pool):
            return None
        x = pool.inputs[0]
        n, c, h, w = self.shape(x)
        reduce = self.only_consumer(pool.outputs[0])
        if reduce is None or reduce.op != "Conv" or self.shape(reduce.outputs[0])[1:] in ((), None):
            return None
        hidden = self.shape(reduce.outputs[0])[1]
        relu = self.only_consumer(reduce.outputs[0])
        if relu is None or relu.op != "Relu":
            return None
        expand = self.only_consumer(relu.outputs[0])
        if expand is None or expand.op != "Conv" or self.shape(expand.outputs[0])[1] != c:
            return None
        gate_nodes = self.hard_sigmoid(expand.outputs[0])
        if gate_nodes is None:
            return None
        gate_node = gate_nodes[-1]
        mul = self.only_consumer(gate_node.outputs[0])
        if mul is None or mul.op != "Mul" or set(mul.inputs) != {x, gate_node.outputs[0]}:
            return None
        if any(self.conv_params(k) is None or self.conv_params(k)[0] != 1 for k in (reduce, expand)):
            return None
        self.claim(pool, reduce, relu, expand, *gate_nodes, mul)
        key = LayerConfig("se", h, w, c, c, hidden=hidden)
        return MappedLayer(pool.name, (pool.op, "Conv", "Relu", "Conv", *(n.op for n in gate_nodes), "Mul"), key)

    def hard_sigmoid(self, tensor: str) -> list[Node] | None:
        """The node(s) of torch's hard-sigmoid after `tensor`: HardSigmoid (ONNX), or ReLU6 then
        a multiply by 1/6 (TFLite: the converter folds the +3 into the conv's bias)."""
        act, node = self.activation(tensor)
        if act == "hsigmoid":
            return [node]
        if act != "relu6":
            return None
        mul = self.only_consumer(node.outputs[0])
        if mul is None or mul.op not in ("Mul", "Div"):
            return None
        const = next((self.g.const_value(t) for t in mul.inputs if t != node.outputs[0]), None)
        factor = 6.0 if mul.op == "Div" else 1 / 6
        if const is None or const.size != 1 or abs(float(const.ravel()[0]) - factor) > 1e-4:
            return None
        return [node, mul]

    def gap(self, pool: Node) -> MappedLayer | None:
        if not self.is_global_pool(pool):
            return None
        _, c, h, w = self.shape(pool.inputs[0])
        self.claim(pool)
        return MappedLayer(pool.name, (pool.op,), keys.gap((h, w), c))

    def conv_params(self, node: Node, extra_pads: tuple[int, int] = (0, 0),
                    x: tuple[int, ...] | None = None) -> tuple[int, int, int] | None:
        """(kernel, stride, groups) of a conv a LUT conv/dwconv key describes, else None; `x`:
        the input shape before a fused Pad."""
        x, y = x or self.shape(node.inputs[0]), self.shape(node.outputs[0])
        if len(x) != 4 or len(y) != 4 or x[0] != 1:
            return None
        kernel = list(node.attr("kernel_shape") or self.shape(node.inputs[1])[2:])
        strides = list(node.attr("strides", [1, 1]))
        dilations = list(node.attr("dilations", [1, 1]))
        pads = list(node.attr("pads", [0, 0, 0, 0]))
        if node.attr("auto_pad", "NOTSET") not in ("NOTSET", "") or len(kernel) != 2 or len(pads) != 4:
            return None
        if kernel[0] != kernel[1] or strides[0] != strides[1] or dilations != [1, 1]:
            return None
        k, s = kernel[0], strides[0]
        if pads[0] + pads[2] + extra_pads[0] != k - 1 or pads[1] + pads[3] + extra_pads[1] != k - 1:
            return None
        if (y[2], y[3]) != (-(-x[2] // s), -(-x[3] // s)):
            return None
        return k, s, int(node.attr("group", 1))

    def conv(self, node: Node) -> MappedLayer | None:
        if node.op == "Pad":
            conv = self.only_consumer(node.outputs[0])
            pads = self.pad_amounts(node)
            if conv is None or conv.op != "Conv" or pads is None:
                return None
            return self.conv_group(conv, pad=node, extra=pads)
        if node.op != "Conv":
            return None
        return self.conv_group(node)

    def pad_values(self, pad: Node) -> list[int] | None:
        """ONNX `pads` (N, C, H, W begins, then ends) of a constant-mode Pad that pads only H and W."""
        values = pad.attr("pads")
        if values is None and len(pad.inputs) > 1:
            v = self.g.const_value(pad.inputs[1])
            values = None if v is None else [int(a) for a in np.ravel(v)]
        if values is None or len(values) != 8 or pad.attr("mode", "constant") != "constant":
            return None
        if any(values[i] or values[i + 4] for i in (0, 1)):
            return None
        return list(values)

    def pad_amounts(self, pad: Node) -> tuple[int, int] | None:
        """Total (H, W) padding of a Pad that pads only the spatial axes of an NCHW image."""
        values = self.pad_values(pad)
        return None if values is None else (values[2] + values[6], values[3] + values[7])

    def conv_group(self, conv: Node, pad: Node | None = None, extra: tuple[int, int] = (0, 0)) -> MappedLayer | None:
        x = pad.inputs[0] if pad is not None else conv.inputs[0]
        params = self.conv_params(conv, extra, self.shape(x))
        if params is None:
            return None
        k, s, groups = params
        _, cin, h, w = self.shape(x)
        cout = self.shape(conv.outputs[0])[1]
        if groups not in (1, cin) or (groups == cin and cout != cin and groups != 1):
            return None
        ops, nodes, tail = ["Conv"], [conv], conv.outputs[0]
        bn = self.only_consumer(tail)
        if bn is not None and bn.op == "BatchNormalization":
            ops.append("BatchNormalization")
            nodes.append(bn)
            tail = bn.outputs[0]
        act, act_node = self.activation(tail)
        if act_node is not None:
            ops.append(act_node.op)
            nodes.append(act_node)
        if pad is not None:
            ops.insert(0, "Pad")
            nodes.insert(0, pad)
        self.claim(*nodes)
        if groups == 1:
            key = keys.conv((h, w), cin, cout, k, s, act)
        else:
            key = keys.dwconv((h, w), cin, k, s, act)
        return MappedLayer(nodes[0].name, tuple(ops), key)

    def linear(self, node: Node) -> MappedLayer | None:
        ops, nodes = [node.op], [node]
        if node.op == "Gemm":
            if node.attr("transA", 0) or not self.g.is_const(node.inputs[1]):
                return None
        elif node.op == "MatMul":
            if not self.g.is_const(node.inputs[1]):
                return None
            bias = self.only_consumer(node.outputs[0])
            if bias is not None and bias.op == "Add" and any(self.g.is_const(t) for t in bias.inputs):
                ops.append("Add")
                nodes.append(bias)
        else:
            return None
        x, y = self.shape(node.inputs[0]), self.shape(nodes[-1].outputs[0])
        if len(x) == 4 and x[2:] == (1, 1):  # TFLite's FULLY_CONNECTED reads a 1x1 image as its vector
            x = x[:2]
        if len(x) != 2 or len(y) != 2 or x[0] != 1:
            return None
        act, act_node = self.activation(nodes[-1].outputs[0])
        if act_node is not None:
            ops.append(act_node.op)
            nodes.append(act_node)
        self.claim(*nodes)
        return MappedLayer(node.name, tuple(ops), keys.linear(x[1], y[1], act))

    def add(self, node: Node) -> MappedLayer | None:
        if node.op != "Add" or len(self.dynamic_inputs(node)) != 2:
            return None
        a, b = (self.shape(t) for t in node.inputs)
        if len(a) != 4 or a != b or a[0] != 1:
            return None
        self.claim(node)
        return MappedLayer(node.name, ("Add",), keys.add((a[2], a[3]), a[1], a[1]))

    def upsample(self, node: Node) -> MappedLayer | None:
        if node.op not in ("Resize", "Upsample") or node.attr("mode", "nearest") != "nearest":
            return None
        x, y = self.shape(node.inputs[0]), self.shape(node.outputs[0])
        if len(x) != 4 or len(y) != 4 or y[2] % x[2] or y[2] // x[2] != y[3] // x[3] or y[3] % x[3] \
                or y[2] // x[2] < 2 or x[:2] != y[:2]:
            return None
        self.claim(node)
        return MappedLayer(node.name, (node.op,), keys.upsample((x[2], x[3]), x[1], y[2] // x[2]))

    def swish(self, node: Node) -> MappedLayer | None:
        if node.op != "Sigmoid":
            return None
        mul = self.only_consumer(node.outputs[0])
        if mul is None or mul.op != "Mul" or set(mul.inputs) != {node.inputs[0], node.outputs[0]}:
            return None
        self.claim(node, mul)
        x = self.shape(node.inputs[0])
        return MappedLayer(node.name, ("Sigmoid", "Mul"),
                           GenericKey("Swish", (x,), (False,), self.shape(mul.outputs[0]),
                                      _versioned("Swish", [x], {}), self.g.dtype))

    def padded_pool(self, pad: Node) -> MappedLayer | None:
        """A Pad feeding a MaxPool (TFLite writes PyTorch's symmetric pooling padding so) = one
        generic MaxPool key with the padding in its `pads`, as an ONNX graph spells it."""
        if pad.op != "Pad":
            return None
        pool = self.only_consumer(pad.outputs[0])
        v = self.pad_values(pad) if pool is not None and pool.op == "MaxPool" else None
        if v is None or any(pool.attr("pads", [0, 0, 0, 0])):
            return None
        merged = Node(pool.name, pool.op, (pad.inputs[0],), pool.outputs,
                      {**pool.attrs, "pads": [v[2], v[3], v[6], v[7]]})
        self.claim(pad, pool)
        return MappedLayer(pad.name, ("Pad", "MaxPool"), generic_key(self.g, merged))

    def batchnorm_act(self, bn: Node) -> MappedLayer | None:
        """A standalone BatchNormalization + the ReLU / ReLU6 after it = one generic
        BatchNormalization key with ``act=relu|relu6``: TFLite fuses the activation into the
        BatchNorm's last element-wise op (mixnet_s's whole model has no RELU operator)."""
        if bn.op != "BatchNormalization":
            return None
        act, act_node = self.activation(bn.outputs[0])
        if act not in ("relu", "relu6"):
            return None
        key = generic_key(self.g, bn)
        self.claim(bn, act_node)
        return MappedLayer(bn.name, (bn.op, act_node.op),
                           replace(key, attrs=tuple(sorted({**dict(key.attrs), "act": act}.items()))))

    def generic(self, node: Node) -> MappedLayer:
        self.claim(node)
        return MappedLayer(node.name, (node.op,), generic_key(self.g, node))


def generic_key(graph: ModelGraph, node: Node) -> GenericKey:
    """The canonical `GenericKey` of one operator: its type, its inputs' shapes (constants
    marked), its first output's shape, its attributes and the small constant inputs' values
    (``in<i>``: Clip bounds, Pad amounts, Resize scales), all as sorted canonical strings."""
    inputs = [t for t in node.inputs if t]
    attrs = {name: _canon(value) for name, value in node.attrs.items()}
    attrs = {k: v for k, v in attrs.items() if _DEFAULTS.get(k) != v}  # one key whether a writer spelled defaults
    for i, t in enumerate(node.inputs):
        value = graph.const_value(t) if t else None
        if value is not None and value.size <= 16:
            attrs[f"in{i}"] = _canon(value.ravel().tolist())
    op = node.op.replace(":", ".")
    shapes = [graph.shapes.get(t, ()) for t in [*inputs, node.outputs[0]]]
    return GenericKey(op, tuple(shapes[:-1]), tuple(graph.is_const(t) for t in inputs),
                      shapes[-1], _versioned(op, shapes, attrs), graph.dtype)


def _versioned(op: str, shapes: list[tuple[int, ...]], attrs: dict[str, str]) -> tuple[tuple[str, str], ...]:
    """`attrs` sorted, with ``model=<n>`` for an operator on images whose one-operator model
    is at version n > 1 (`MODEL_VERSIONS`)."""
    if MODEL_VERSIONS.get(op, 1) > 1 and any(len(s) == 4 for s in shapes):
        attrs = {**attrs, "model": str(MODEL_VERSIONS[op])}
    return tuple(sorted(attrs.items()))


def _canon(value) -> str:
    """A canonical string for an attribute value: numbers in short form, lists comma-joined."""
    if isinstance(value, (list, tuple)):
        return ",".join(_canon(v) for v in value) or "[]"
    if isinstance(value, float):
        return f"{value:.6g}"
    if isinstance(value, (int, np.integer)):
        return str(int(value))
    if isinstance(value, np.floating):
        return f"{float(value):.6g}"
    text = str(value)
    return "".join(c if c not in ":;=" else "_" for c in text) or "''"
