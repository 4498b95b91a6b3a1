"""The torch-free data of search spaces: the tables a person writes, the resolved blocks, a sub-network.

Both sides of the space read these: `space.py`/`fastdepth.py` resolve tables into them and
enumerate LUT keys from them; `subnet.py`/`fastdepth_net.py` build PyTorch networks from
them. The networks type their `space` argument with the small protocols below, so the
network modules never import the space classes (which import the networks to offer
`space.build_subnet`).
"""
from __future__ import annotations

import json
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Protocol


def make_divisible(value: float, divisor: int = 8) -> int:
    """Round to the nearest multiple of `divisor`, not below 90% of `value` (MobileNet rule)."""
    rounded = max(divisor, int(value + divisor / 2) // divisor * divisor)
    if rounded < 0.9 * value:
        rounded += divisor
    return rounded


def se_hidden(channels: int) -> int:
    """SE reduction width for `channels` (MobileNetV3: 1/4, multiple of 8)."""
    return make_divisible(channels / 4, 8)


@dataclass(frozen=True)
class SearchSpaceSpec:
    """The table a person writes. Widths are at ``width_mult = 1``."""

    name: str
    description: str
    input_hw: tuple[int, int]
    stem: str  # a `cn` block string
    stages: tuple[tuple[str, ...], ...]
    head_fc: int  # hidden FC width after global pooling (MobileNetV3: 1280)
    num_classes: int
    kernel_choices: tuple[int, ...] = (3, 5, 7)  # depthwise kernels; smaller = centre of the largest
    granularity: int = 8  # channel step of every width choice
    width_mult: float = 1.0  # scales every max width (rounded to granularity)
    in_channels: int = 3
    head_act: str = "hswish"
    task: str = "classification"  # or "depth"; picks datasets, losses and metrics


@dataclass(frozen=True)
class DepthSpaceSpec(SearchSpaceSpec):
    """A `SearchSpaceSpec` (encoder) plus decoder stage strings.

    Decoder stage string: ``nn_k5_c256_re_x5``: nearest-neighbour stage, depthwise kernel 5,
    256 pointwise filters at full width, ReLU, additive skip from encoder layer 5 after the
    upsampling (``x<i>`` optional; FastDepth numbering, 0 = stem). The head is a 1x1 conv to
    ``num_classes`` (= 1) output channels with activation ``head_act``.
    """

    decoder: tuple[str, ...] = ()


@dataclass(frozen=True)
class WidthVar:
    """One searchable width: values are `choices` (ascending)."""

    name: str
    max: int
    choices: tuple[int, ...]
    zero_allowed: bool  # True where CBC can remove the layer


@dataclass(frozen=True)
class ResolvedBlock:
    """One block of the resolved space, with the width variables it reads."""

    name: str
    kind: str  # cn, ds, ir
    in_hw: tuple[int, int]
    stride: int
    act: str
    se: bool
    residual: bool  # stride 1 and same stream width: CBC applies
    in_var: str  # width var giving the input (stream) channels
    expand_var: str | None  # ir only
    out_var: str  # stream width (non-residual) or CBC width (residual)
    stream_var: str  # stream width after the block (== in_var for residual blocks)
    kernel_choices: tuple[int, ...]  # () for cn blocks
    default_kernel: int

    @property
    def out_hw(self) -> tuple[int, int]:
        return -(-self.in_hw[0] // self.stride), -(-self.in_hw[1] // self.stride)


@dataclass(frozen=True)
class DecoderStage:
    """One resolved decoder stage: dw k x k on `in_var` channels, pw to `out_var`, upsample, [skip]."""

    name: str  # d1..d5
    in_hw: tuple[int, int]
    kernel: int
    act: str
    in_var: str
    out_var: str  # own variable, or the tied encoder stream variable when `skip` is set
    skip: str | None  # encoder block name whose output is added (``stem`` or ``s0.bN``)
    skip_layer: int | None  # the same in FastDepth's layer numbering (0 = stem)
    upsample: int = 2

    @property
    def out_hw(self) -> tuple[int, int]:
        return self.in_hw[0] * self.upsample, self.in_hw[1] * self.upsample


@dataclass(frozen=True, eq=False)
class SubnetConfig:
    """A sub-network: channels per width variable and kernel per block (plain dicts)."""

    widths: Mapping[str, int]
    kernels: Mapping[str, int] = field(default_factory=dict)

    def _items(self) -> tuple:
        return tuple(sorted(self.widths.items())), tuple(sorted(self.kernels.items()))

    def __eq__(self, other: object) -> bool:
        return isinstance(other, SubnetConfig) and self._items() == other._items()

    def __hash__(self) -> int:
        return hash(self._items())

    def replace(self, widths: Mapping[str, int] | None = None,
                kernels: Mapping[str, int] | None = None) -> SubnetConfig:
        return SubnetConfig({**self.widths, **(widths or {})}, {**self.kernels, **(kernels or {})})

    def to_dict(self) -> dict:
        return {"widths": dict(self.widths), "kernels": dict(self.kernels)}

    @classmethod
    def from_dict(cls, data: Mapping) -> SubnetConfig:
        if not isinstance(data, Mapping) or "widths" not in data:
            raise ValueError("subnet config: expected an object with 'widths' (and 'kernels')")
        return cls({str(k): int(v) for k, v in data["widths"].items()},
                   {str(k): int(v) for k, v in data.get("kernels", {}).items()})

    def to_json(self) -> str:
        return json.dumps(self.to_dict(), sort_keys=True)


class ResolvedSpace(Protocol):
    """What a standalone network reads of a resolved space (`SearchSpace` satisfies it)."""

    name: str
    spec: SearchSpaceSpec
    stem: ResolvedBlock
    blocks: Sequence[ResolvedBlock]
    final_stream: str  # width variable of the stream entering the head

    def validate(self, config: SubnetConfig) -> None: ...

    def canonical(self, config: SubnetConfig) -> SubnetConfig: ...

    def block_widths(self, block: ResolvedBlock, config: SubnetConfig) -> tuple[int, int, int, int]: ...


class ResolvedDepthSpace(ResolvedSpace, Protocol):
    """A resolved encoder-decoder space (`DepthSearchSpace` satisfies it)."""

    decoder: Sequence[DecoderStage]
    decoder_stream: str  # width variable of the stream entering the 1x1 head
