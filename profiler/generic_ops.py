"""A `GenericKey` -> a PyTorch module of that one operator (or fused group), to export and measure.

`lutbuild predict --measure-missing` measures a generic key like any LUT key: this module
builds the operator alone, `export.export_module` writes it (ONNX or TFLite, with the
project's I/O convention: images NHWC at a TFLite model's boundary), and the build engine
benchmarks it into the slice. Run-time inputs are random; constant inputs (weights, a
scale) are module buffers of their shape. An operator without a builder here is a one-line
`ProfilerError` naming it.
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
    """Applies `fn` to the run-time inputs, with the constant inputs in their positions."""

    def __init__(self, key: GenericKey, fn: Callable):
        super().__init__()
        self.fn = fn
        self.const_pos = [i for i, c in enumerate(key.const_inputs) if c]
        for i in self.const_pos:
            values = _floats(key, f"in{i}")
            shape = key.inputs[i]
            t = torch.tensor(values).reshape(shape) if values and len(values) == _numel(shape) \
                else torch.rand(shape) + 0.5
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


def _split(key: GenericKey):
    axis = int(key.attr("axis", "0"))
    sizes = _ints(key, "split", "") if key.attr("split") else _ints(key, "in1", "")
    return lambda x, *_: torch.split(x, sizes, dim=axis)


def _batchnorm(key: GenericKey) -> nn.Module:
    bn = nn.BatchNorm2d(key.cin, eps=float(key.attr("epsilon", "1e-05")))
    with torch.no_grad():
        bn.running_mean.uniform_(-0.1, 0.1)
        bn.running_var.uniform_(0.5, 1.5)
    return bn


_BUILDERS: dict[str, Callable[[GenericKey], nn.Module | Callable]] = {
    "Split": _split,
    "BatchNormalization": _batchnorm,
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


def generic_module(key: GenericKey) -> tuple[nn.Module, tuple[torch.Tensor, ...]]:
    """(module, example NCHW inputs) of one generic key; `ProfilerError` if it has no builder."""
    builder = _BUILDERS.get(key.op_type)
    if builder is None:
        raise ProfilerError(f"cannot measure operator {key.op_type} alone (no one-operator builder; key {key.key}); "
                            f"operators measurable alone: {', '.join(sorted(_BUILDERS))}")
    torch.manual_seed(0)
    inputs = tuple(torch.randn(shape) for shape, const in zip(key.inputs, key.const_inputs) if not const)
    made = builder(key)
    module = made if isinstance(made, nn.Module) else _Op(key, made)
    return module.eval(), inputs


def export_generic(key: GenericKey, runtime: str, path: Path) -> Path:
    """Export the one-operator model of `key` to `path` (images NHWC at a TFLite boundary)."""
    module, inputs = generic_module(key)
    image_args = [i for i, x in enumerate(inputs) if x.dim() == 4]
    return export_module(module, inputs, runtime, path, image_args=image_args, image_out=len(key.output) == 4)
