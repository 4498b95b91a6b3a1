"""One LUT-key helper per op kind (`lut_db/op_kinds.py`), named after it, so spaces spell keys one way.

`hw` is the layer's *input* (height, width) in pixels; channels are counts.
"""
from __future__ import annotations

from lut_db.layer_key import BLOCK, BlockConfig, LayerConfig

from .config import se_hidden


def conv(hw: tuple[int, int], cin: int, cout: int, kernel: int, stride: int, act: str) -> LayerConfig:
    return LayerConfig("conv", hw[0], hw[1], cin, cout, kernel=kernel, stride=stride, act=act)


def dwconv(hw: tuple[int, int], channels: int, kernel: int, stride: int, act: str) -> LayerConfig:
    return LayerConfig("dwconv", hw[0], hw[1], channels, channels, kernel=kernel, stride=stride, groups=channels,
                       act=act)


def se(hw: tuple[int, int], channels: int) -> LayerConfig:
    return LayerConfig("se", hw[0], hw[1], channels, channels, hidden=se_hidden(channels))


def add(hw: tuple[int, int], computed: int, stream: int) -> LayerConfig:
    """`computed` block-output channels added onto a `stream`-wide stream (the rest bypass: CBC)."""
    return LayerConfig("add", hw[0], hw[1], cin=computed, cout=stream)


def gap(hw: tuple[int, int], channels: int) -> LayerConfig:
    return LayerConfig("gap", hw[0], hw[1], channels, channels)


def linear(cin: int, cout: int, act: str = "none") -> LayerConfig:
    return LayerConfig("linear", 1, 1, cin, cout, act=act)


def upsample(hw: tuple[int, int], channels: int, factor: int) -> LayerConfig:
    return LayerConfig("upsample", hw[0], hw[1], cin=channels, cout=channels, stride=factor)


def block(hw: tuple[int, int], kind: str, cin: int, expand: int, out: int, kernel: int, stride: int, act: str,
          se: bool, residual: bool) -> BlockConfig:
    """A whole ``ir``/``ds`` block (`BlockConfig`): `cin` input channels, `expand` depthwise
    channels (== `cin` for ``ds``), `out` projection filters, SE width from `se_hidden(expand)`."""
    return BlockConfig(BLOCK, hw[0], hw[1], cin, out, kernel=kernel, stride=stride, act=act,
                       hidden=se_hidden(expand) if se else 0, expand=expand, kind=kind, residual=residual)
