"""In-context ONNX rows (`--context nchwc`): each layer timed between layout-keeping neighbours.

Why: at ORT_ENABLE_ALL ONNX Runtime runs convolutions in its blocked NCHWc layout and keeps
consecutive ones in it; a layer exported alone pays a NCHW -> NCHWc reorder on its input and
NCHWc -> NCHW on its output that it does not pay between NCHWc neighbours in a network
(docs/lut.md, "Boundary costs"). An in-context row removes that: the layer is exported
*wrapped* between cheap neighbours that ORT keeps in NCHWc, and the neighbours' cost is
measured in the same benchmark batch and subtracted.

The neighbours: a 1x1 *depthwise* convolution (one multiply-add per element, the cheapest op
ORT's NCHWc transformer takes) on every image input of the layer and on its image output.
What stays out of NCHWc in a whole network (SE's ReduceMean/Mul, a channel-padded residual
Add's Slice/Concat, global pooling) then pays, inside the wrapped model, exactly the reorders
the network pays around it: the row of such a layer includes them, and the conv rows around
it do not. Vector I/O (`linear`, the output of `gap`) gets no neighbour: the network runs
those ops in NCHW as the layer alone does.

The subtraction (all times are raw medians of one batch, ms): a *pair model* of an image
tensor (C, H, W) is two such neighbours back to back; it costs overhead + reorder in +
2 neighbours + reorder out. With n image tensors at the layer's boundary (inputs + output),
wrapped W = overhead + reorders of the graph I/O + n neighbours + layer, so

    row = W - 1/2 * sum(pair(t) for t in boundary tensors) + overhead * (n/2 - 1)

leaves the layer's in-context time: each pair supplies one neighbour and half a reorder in
and out of its tensor, which cancels the wrapped model's graph I/O reorders when a reorder
in and out of one tensor cost the same (exact for a same-shape layer such as a stride-1
depthwise conv). With n = 0 (`linear`) this is the plain row: W - overhead. Pair models
depend only on a tensor shape, so a batch times each shape's pair once for all its keys.

A layer with two graph inputs (`add`) feeds one input more per invoke than the network's one
image, a per-input binding cost (0.8-1.1 us in ONNX Runtime's Python API here, more than a
fused residual Add itself): the batch also times a two-input overhead model (`TwoInputs`, a
one-element Add), and `(inputs - 1) * (two-input overhead - overhead)` is taken out too.

The network boundary: rows charge the layout changes *inside* a network (to the non-NCHWc
layers); what is left is the network's own input: its first layer reads the graph's NCHW
image, not a neighbour's output. The slice's `boundary` calibration (`context_boundary.py`)
is that difference, measured on the space's input layers (`input_boundary_ms`) after the
build; `LatencyTable.predict` adds it once per network. An image *output* (a depth network's
last layer) would pay a reorder out too: not measured (the classification spaces end in
`gap` -> `linear`, whose rows carry it).
"""
from __future__ import annotations

from dataclasses import dataclass

import torch
from torch import nn

from lut_db.layer_key import LayerConfig
from lut_db.op_kinds import IMAGE, OP_KINDS



@dataclass(frozen=True, order=True)
class Tensor:
    """An image tensor at a layer's boundary: channels, height, width (batch 1)."""

    c: int
    h: int
    w: int

    @property
    def name(self) -> str:
        """File-name-safe id of the tensor's pair model."""
        return f"pair-c{self.c}-{self.h}x{self.w}"


def boundary_tensors(cfg: LayerConfig) -> tuple[Tensor, ...]:
    """The image tensors at `cfg`'s boundary: each image input (the first has `cin` channels,
    a second one, `add`'s stream, `cout`), then the image output; vectors are left out."""
    kind = OP_KINDS[cfg.op]
    tensors = [Tensor(cfg.cin if i == 0 else cfg.cout, cfg.h, cfg.w)
               for i, role in enumerate(kind.inputs) if role == IMAGE]
    if kind.output == IMAGE:
        tensors.append(Tensor(cfg.cout, *cfg.out_hw))
    return tuple(tensors)


def neighbour(channels: int) -> nn.Conv2d:
    """A layout-keeping neighbour: 1x1 depthwise conv (with bias, so nothing folds it away)."""
    conv = nn.Conv2d(channels, channels, 1, groups=channels, bias=True)
    with torch.no_grad():
        conv.weight.uniform_(0.5, 1.5)
        conv.bias.uniform_(-0.1, 0.1)
    return conv


class Wrapped(nn.Module):
    """`layer` with a neighbour on each image input and on its image output."""

    def __init__(self, layer: nn.Module, inputs: list[int | None], output: int | None):
        super().__init__()
        self.layer = layer
        self.pre = nn.ModuleList([neighbour(c) if c else nn.Identity() for c in inputs])
        self.post = neighbour(output) if output else nn.Identity()

    def forward(self, *xs: torch.Tensor) -> torch.Tensor:
        return self.post(self.layer(*(pre(x) for pre, x in zip(self.pre, xs))))


class TwoInputs(nn.Module):
    """The two-input overhead model: a one-element Add (the cost of feeding a second input)."""

    def forward(self, a: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
        return a + b


def two_inputs_module() -> tuple[nn.Module, tuple[torch.Tensor, ...]]:
    """(module, inputs) of the two-input overhead model: two (1, 1, 1, 1) images."""
    return TwoInputs(), (torch.zeros(1, 1, 1, 1), torch.zeros(1, 1, 1, 1))


def graph_inputs(cfg: LayerConfig) -> int:
    """How many inputs the layer's model (alone or wrapped) is fed per invoke."""
    return len(OP_KINDS[cfg.op].inputs)


class Pair(nn.Sequential):
    """Two neighbours back to back on one tensor: the context cost a batch subtracts."""

    def __init__(self, channels: int):
        super().__init__(neighbour(channels), neighbour(channels))


def wrap_layer(cfg: LayerConfig, layer: nn.Module, pre: bool = True) -> nn.Module:
    """`layer` (the module of `cfg`) between neighbours on its image inputs and output
    (`pre=False`: on its output only, the layer fed by the graph's input as a network's first)."""
    kind = OP_KINDS[cfg.op]
    torch.manual_seed(1)  # identical neighbours -> identical files for one key
    image_in = iter(boundary_tensors(cfg))
    inputs = [next(image_in).c if role == IMAGE else None for role in kind.inputs]
    output = next(image_in).c if kind.output == IMAGE else None
    return Wrapped(layer, inputs if pre else [None] * len(inputs), output).eval()


def pair_module(t: Tensor) -> tuple[nn.Module, tuple[torch.Tensor, ...]]:
    """(module, NCHW sample) of the pair model of tensor `t`."""
    torch.manual_seed(1)
    return Pair(t.c).eval(), (torch.randn(1, t.c, t.h, t.w),)


def input_boundary_ms(fed_ms: float, wrapped_ms: float, input_pair_ms: float, overhead_ms: float) -> float:
    """What a network's first layer pays beyond its in-context row for taking the graph's NCHW
    input instead of a neighbour's output (ms), from raw medians of one batch: `fed_ms` the
    layer with its output neighbour only, `wrapped_ms` its in-context model, `input_pair_ms`
    the pair model of its input tensor. (fed - out pair/2 - overhead/2) - (wrapped - in pair/2
    - out pair/2) = fed - wrapped + in pair/2 - overhead/2: a reorder in when ONNX Runtime
    reorders the network's input (about (reorder in + out)/2 of it), ~0 when its first conv
    reads NCHW directly (a 3-channel image)."""
    return fed_ms - wrapped_ms + 0.5 * input_pair_ms - 0.5 * overhead_ms


def context_row_ms(wrapped_ms: float, pairs_ms: list[float], overhead_ms: float, inputs: int = 1,
                   two_inputs_ms: float | None = None) -> float:
    """A layer's in-context time (ms) from raw medians of one batch (module docstring); may be
    slightly negative for a layer cheaper than the noise (the caller clamps). `inputs`: graph
    inputs of the wrapped model; above 1, `two_inputs_ms` (the two-input overhead model) is needed."""
    n = len(pairs_ms)
    row = wrapped_ms - 0.5 * sum(pairs_ms) + overhead_ms * (n / 2 - 1)
    if inputs > 1:
        if two_inputs_ms is None:
            raise ValueError(f"a {inputs}-input layer needs the two-input overhead model's time")
        row -= (inputs - 1) * (two_inputs_ms - overhead_ms)
    return row
