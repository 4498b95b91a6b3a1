"""A `GenericKey` -> a PyTorch module of that one operator (or fused group), to export and measure.

`lutbuild predict --measure-missing` measures a generic key like any LUT key: this module
builds the operator alone, `export.export_module` writes it (ONNX or TFLite, with the
project's I/O convention: images NHWC at a TFLite model's boundary), and the build engine
benchmarks it into the slice. Run-time inputs are random; constant inputs (weights, a
scale) are module buffers of their shape. An operator without a builder here is a one-line
`ProfilerError` naming it.

TFLite, layout-free operators (`CHANNELS_LAST_OPS`: element-wise ones, Concat, Split, a
standalone BatchNormalization): the one-operator model is built on NHWC tensors directly
(the key's NCHW axis and broadcast shapes moved to NHWC), so the file holds the operator
alone, as a network converted to NHWC runs it. Built NCHW behind `to_channel_last_io`, the
converter kept it NCHW and wrapped it in TRANSPOSEs at the boundary (a Concat of two
inputs: 3 TRANSPOSEs + CONCATENATION), which no whole network pays (docs/predict.md,
"mixnet_s: over-prediction").
"""
from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

import torch
from torch import nn
from torch.nn import functional as F

from lut_db.layer_key import GenericKey

from .errors import ProfilerError
from .export import export_module


def _ints(key: GenericKey, name: str, default: str) -> list[int]:
    return [int(v) for v in key.attr(name, default).split(",")]


def _floats(key: GenericKey, name: str) -> list[float]:
    text = key.attr(name)
    return [float(v) for v in text.split(",")] if text else []


class _Op(nn.Module):
    """Applies `fn` to the run-time inputs, with the constant inputs in their positions
    (`channels_last`: constants aligned to NCHW as ONNX broadcasts them, then permuted to NHWC)."""

    def __init__(self, key: GenericKey, fn: Callable, channels_last: bool = False):
        super().__init__()
        self.fn = fn
        self.const_pos = [i for i, c in enumerate(key.const_inputs) if c]
        for i in self.const_pos:
            values = _floats(key, f"in{i}")
            shape = key.inputs[i]
            t = torch.tensor(values).reshape(shape) if values and len(values) == _numel(shape) \
                else torch.rand(shape) + 0.5
            if channels_last and 0 < t.dim() <= 4:  # NCHW broadcasting aligns trailing axes: (C, 1, 1) = (1, C, 1, 1)
                t = t.reshape((1,) * (4 - t.dim()) + tuple(t.shape)).permute(0, 2, 3, 1).contiguous()
            self.register_buffer(f"c{i}", t)

    def forward(self, *dynamic):
        args, it = [], iter(dynamic)
        for i in range(len(self.const_pos) + len(dynamic)):
            args.append(getattr(self, f"c{i}") if i in self.const_pos else next(it))
        return self.fn(*args)


def _numel(shape) -> int:
    n = 1
    for d in shape:
        n *= d
    return n


def _pool(key: GenericKey, kind: str):
    k, s = _ints(key, "kernel_shape", "1,1"), _ints(key, "strides", "1,1")
    p = _ints(key, "pads", "0,0,0,0")
    ceil = key.attr("ceil_mode", "0") == "1"

    def fn(x):
        x = F.pad(x, (p[1], p[3], p[0], p[2]), value=float("-inf") if kind == "max" else 0.0)
        if kind == "max":
            return F.max_pool2d(x, k, s, ceil_mode=ceil)
        return F.avg_pool2d(x, k, s, ceil_mode=ceil, count_include_pad=key.attr("count_include_pad", "0") == "1")
    return fn


def _clip(key: GenericKey):
    lo = _floats(key, "in1") or _floats(key, "min") or [float("-inf")]
    hi = _floats(key, "in2") or _floats(key, "max") or [float("inf")]
    return lambda x, *_: torch.clamp(x, lo[0], hi[0])


def _conv(key: GenericKey) -> nn.Module:
    k, s = _ints(key, "kernel_shape", "1,1"), _ints(key, "strides", "1,1")
    d, p = _ints(key, "dilations", "1,1"), _ints(key, "pads", "0,0,0,0")
    groups = int(key.attr("group", "1"))
    conv = nn.Conv2d(key.cin, key.cout, tuple(k), tuple(s), 0, tuple(d), groups=groups)

    class PadConv(nn.Module):
        def __init__(self):
            super().__init__()
            self.conv = conv

        def forward(self, x):
            return self.conv(F.pad(x, (p[1], p[3], p[0], p[2])))
    return PadConv()


def _axis(key: GenericKey, default: str, channels_last: bool) -> int:
    """The key's NCHW `axis` attribute, moved to NHWC for a channels-last model of a 4-D operator."""
    axis = int(key.attr("axis", default))
    rank = len(key.output) if key.output else len(key.inputs[0])
    return _NHWC_POS[axis % 4] if channels_last and rank == 4 else axis


def _split(key: GenericKey, channels_last: bool = False):
    axis = _axis(key, "0", channels_last)
    sizes = _ints(key, "split", "") if key.attr("split") else _ints(key, "in1", "")
    return lambda x, *_: torch.split(x, sizes, dim=axis)


def _batchnorm(key: GenericKey) -> nn.Module:
    bn = nn.BatchNorm2d(key.cin, eps=float(key.attr("epsilon", "1e-05")))
    with torch.no_grad():
        bn.running_mean.uniform_(-0.1, 0.1)
        bn.running_var.uniform_(0.5, 1.5)
    return bn


class _ChannelsLastBatchNorm(nn.Module):
    """Inference BatchNormalization on an NHWC image, spelled as PyTorch decomposes it
    ((x - mean) * rsqrt(var + eps) * weight + bias, per channel on the last axis) with
    trained-looking statistics: the converter writes what it writes for a network's BatchNorm
    it cannot fold into a conv (SUB, MUL, MUL, ADD with litert-torch 0.10), not the 2 ops of a
    BatchNorm whose weight is 1 and bias 0."""

    def __init__(self, channels: int, eps: float):
        super().__init__()
        torch.manual_seed(0)
        self.register_buffer("mean", torch.randn(channels) * 0.1)
        self.register_buffer("var", torch.rand(channels) + 0.5)
        self.register_buffer("weight", torch.rand(channels) + 0.5)
        self.register_buffer("bias", torch.randn(channels) * 0.1)
        self.eps = eps

    def forward(self, x):
        return (x - self.mean) * torch.rsqrt(self.var + self.eps) * self.weight + self.bias


def _with_act(key: GenericKey, module: nn.Module) -> nn.Module:
    """`module` followed by the key's fused ``act`` (relu / relu6; `graph_keys.batchnorm_act`)."""
    act = {"relu": nn.ReLU, "relu6": nn.ReLU6}.get(key.attr("act", ""))
    return nn.Sequential(module, act()) if act else module


_BUILDERS: dict[str, Callable[[GenericKey], nn.Module | Callable]] = {
    "Split": _split,
    "BatchNormalization": lambda k: _with_act(k, _batchnorm(k)),
    "Relu": lambda k: torch.relu,
    "Sigmoid": lambda k: torch.sigmoid,
    "Tanh": lambda k: torch.tanh,
    "HardSwish": lambda k: F.hardswish,
    "HardSigmoid": lambda k: (lambda x: torch.clamp(x * float(k.attr("alpha", "0.2")) + float(k.attr("beta", "0.5")),
                                                    0, 1)),
    "Swish": lambda k: (lambda x: x * torch.sigmoid(x)),
    "Clip": _clip,
    "Add": lambda k: torch.add,
    "Sub": lambda k: torch.sub,
    "Mul": lambda k: torch.mul,
    "Div": lambda k: torch.div,
    "MaxPool": lambda k: _pool(k, "max"),
    "AveragePool": lambda k: _pool(k, "avg"),
    "Softmax": lambda k: (lambda x: torch.softmax(x, int(k.attr("axis", "-1")))),
    "Concat": lambda k: (lambda *xs: torch.cat(xs, int(k.attr("axis", "1")))),
    "Transpose": lambda k: (lambda x: x.permute(*_ints(k, "perm", ",".join(map(str, range(len(k.inputs[0])))[::-1])))),
    "Conv": _conv,
}


#: Operators whose TFLite one-operator model is built on NHWC tensors (module docstring): the
#: result depends on the layout only through an axis or a broadcast shape, which are moved.
CHANNELS_LAST_OPS = frozenset({"Relu", "Sigmoid", "Tanh", "HardSwish", "HardSigmoid", "Swish", "Clip", "Add", "Sub",
                               "Mul", "Div", "Concat", "Split", "BatchNormalization"})
#: an NCHW axis -> its position in NHWC
_NHWC_POS = {0: 0, 1: 3, 2: 1, 3: 2}
_CHANNELS_LAST_BUILDERS: dict[str, Callable[[GenericKey], nn.Module | Callable]] = {
    "Split": lambda k: _split(k, channels_last=True),
    "Concat": lambda k: (lambda *xs: torch.cat(xs, _axis(k, "1", channels_last=True))),
    "BatchNormalization": lambda k: _with_act(k, _ChannelsLastBatchNorm(k.cin, float(k.attr("epsilon", "1e-05")))),
}


def channels_last_model(key: GenericKey, runtime: str) -> bool:
    """Whether `key`'s one-operator model for `runtime` is built on NHWC tensors (module docstring)."""
    dynamic = [s for s, const in zip(key.inputs, key.const_inputs) if not const]
    return runtime == "tflite" and key.op_type in CHANNELS_LAST_OPS and len(key.output) == 4 and \
        all(len(s) == 4 for s in dynamic)


def generic_module(key: GenericKey, channels_last: bool = False) -> tuple[nn.Module, tuple[torch.Tensor, ...]]:
    """(module, example inputs) of one generic key; `ProfilerError` if it has no builder. The
    inputs are NCHW, or NHWC with `channels_last` (only for `CHANNELS_LAST_OPS`)."""
    builder = _BUILDERS.get(key.op_type)
    if builder is None:
        raise ProfilerError(f"cannot measure operator {key.op_type} alone (no one-operator builder; key {key.key}); "
                            f"operators measurable alone: {', '.join(sorted(_BUILDERS))}")
    if channels_last and key.op_type not in CHANNELS_LAST_OPS:
        raise ValueError(f"generic_module: {key.op_type} has no channels-last model")
    torch.manual_seed(0)
    shapes = [(s[0], s[2], s[3], s[1]) if channels_last and len(s) == 4 else s
              for s, const in zip(key.inputs, key.const_inputs) if not const]
    inputs = tuple(torch.randn(shape) for shape in shapes)
    made = (_CHANNELS_LAST_BUILDERS.get(key.op_type, builder) if channels_last else builder)(key)
    module = made if isinstance(made, nn.Module) else _Op(key, made, channels_last)
    return module.eval(), inputs


def export_generic(key: GenericKey, runtime: str, path: Path) -> Path:
    """Export the one-operator model of `key` to `path` (images NHWC at a TFLite boundary: for
    `CHANNELS_LAST_OPS` built so, for the others converted so by `export_module`)."""
    if channels_last_model(key, runtime):
        module, inputs = generic_module(key, channels_last=True)
        return export_module(module, inputs, runtime, path, image_args=(), image_out=False)
    module, inputs = generic_module(key)
    image_args = [i for i, x in enumerate(inputs) if x.dim() == 4]
    return export_module(module, inputs, runtime, path, image_args=image_args, image_out=len(key.output) == 4)
