"""The operation kinds the LUT knows, each declared once: what it computes, its I/O, its MACs.

Read by `LayerConfig` (validation, `macs()`), by `search/spaces/ops.py` (one PyTorch builder
per kind, example inputs from `inputs`) and by the profiler's exporter (I/O layout of a
layer exported alone, from `inputs`/`output`). A new kind is one entry here plus one
builder in `search/spaces/ops.py` (checked at import).

I/O shapes: an ``image`` is a (1, C, H, W) tensor, a ``vector`` a (1, C) tensor. The first
input has ``cin`` channels at the key's H x W; a second ``image`` input (``add``) is the
``cout``-wide stream at the same H x W.

``block`` is a whole inverted-residual / depthwise-separable block measured as one model
(`lutbuild build --granularity block`): its key is a `BlockConfig` (`layer_key.py`), which adds
the fields a block has beyond one layer (`expand`, `kind`, `residual`).
"""
from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Protocol

IMAGE, VECTOR = "image", "vector"


class LayerShape(Protocol):
    """The fields of a `LayerConfig` (`layer_key.py`) the MAC formulas read; sizes in pixels and channels."""

    h: int
    w: int
    cin: int
    cout: int
    kernel: int
    groups: int
    hidden: int

    @property
    def out_hw(self) -> tuple[int, int]: ...


class BlockShape(LayerShape, Protocol):
    """The extra fields of a `BlockConfig` (`layer_key.py`) the block MAC formula reads."""

    expand: int
    kind: str
    residual: bool


@dataclass(frozen=True)
class OpKind:
    """One LUT op kind. `macs(cfg)` counts multiply-accumulates (adds and pooling count one per element)."""

    name: str
    doc: str
    inputs: tuple[str, ...]  # "image" / "vector", in call order
    output: str  # "image" or "vector"
    macs: Callable[[LayerShape], int]


def _conv_macs(c: LayerShape) -> int:
    oh, ow = c.out_hw
    return oh * ow * c.cout * c.cin // c.groups * c.kernel * c.kernel


def _dwconv_macs(c: LayerShape) -> int:
    oh, ow = c.out_hw
    return oh * ow * c.cout * c.kernel * c.kernel


def _block_macs(c: BlockShape) -> int:
    """The sum of the MACs of the block's layer keys (1x1 expand, dw, SE, 1x1 project, add)."""
    oh, ow = c.out_hw
    e = c.expand
    macs = c.h * c.w * c.cin * e if c.kind == "ir" else 0
    macs += oh * ow * e * c.kernel * c.kernel
    if c.hidden:
        macs += oh * ow * e * 2 + 2 * e * c.hidden
    macs += oh * ow * e * c.cout
    return macs + (oh * ow * c.cout if c.residual else 0)


_KINDS = (
    OpKind("conv", "k x k convolution + BN + act (groups=1)", (IMAGE,), IMAGE, _conv_macs),
    OpKind("dwconv", "depthwise k x k convolution + BN + act", (IMAGE,), IMAGE, _dwconv_macs),
    OpKind("se", "squeeze-excite: global pool, 1x1 reduce to `hidden` + ReLU, 1x1 expand + hard sigmoid, "
           "multiply", (IMAGE,), IMAGE, lambda c: c.h * c.w * c.cin * 2 + 2 * c.cin * c.hidden),
    OpKind("add", "residual add of `cin` block-output channels onto a `cout`-wide stream; the remaining "
           "`cout - cin` stream channels bypass unchanged (CBC)", (IMAGE, IMAGE), IMAGE, lambda c: c.h * c.w * c.cin),
    OpKind("gap", "global average pool to a vector", (IMAGE,), VECTOR, lambda c: c.h * c.w * c.cin),
    OpKind("linear", "fully connected `cin -> cout` (+ act) on a vector", (VECTOR,), VECTOR, lambda c: c.cin * c.cout),
    OpKind("upsample", "nearest x`stride` upsampling of `cin` channels (depth decoder)", (IMAGE,), IMAGE,
           lambda c: 0),
    OpKind("block", "a whole `ir`/`ds` block: [1x1 expand + act] -> dw k x k + act -> [SE] -> 1x1 project "
           "-> [CBC residual add of `cout` channels onto the `cin`-wide input]", (IMAGE,), IMAGE, _block_macs),
)

#: Op name -> its declaration, in the order above.
OP_KINDS: dict[str, OpKind] = {kind.name: kind for kind in _KINDS}
