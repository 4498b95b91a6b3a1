"""PyTorch modules for each LUT op kind, shared by the profiler and the networks.

The profiler exports `build_layer(cfg)` alone (one builder per op kind of
`lut_db/op_kinds.py`, in `BUILDERS`); `subnet.py` and `fastdepth_net.py` compose the same
classes into whole networks, so a whole network is exactly the sum of LUT layers plus
what the runtime does between them. BatchNorm is folded by both exporters.
"""
from __future__ import annotations

from collections.abc import Callable

import torch
from torch import nn

from lut_db.layer_key import LayerConfig
from lut_db.op_kinds import IMAGE, OP_KINDS


def make_act(name: str) -> nn.Module:
    """Activation by LUT name (``none``, ``relu``, ``relu6``, ``hswish``, ``hsigmoid``)."""
    acts = {"none": nn.Identity, "relu": nn.ReLU, "relu6": nn.ReLU6, "hswish": nn.Hardswish,
            "hsigmoid": nn.Hardsigmoid}
    if name not in acts:
        raise ValueError(f"unknown activation {name!r}; expected one of {sorted(acts)}")
    return acts[name]()


class ConvBNAct(nn.Sequential):
    """k x k convolution (no bias) + BatchNorm + activation; 'same' padding k // 2."""

    def __init__(self, cin: int, cout: int, kernel: int = 1, stride: int = 1, groups: int = 1, act: str = "none"):
        super().__init__()
        self.conv = nn.Conv2d(cin, cout, kernel, stride, kernel // 2, groups=groups, bias=False)
        self.bn = nn.BatchNorm2d(cout)
        self.act = make_act(act)


class SqueezeExcite(nn.Module):
    """MobileNetV3 SE: global pool, 1x1 reduce + ReLU, 1x1 expand + hard-sigmoid, scale."""

    def __init__(self, channels: int, hidden: int):
        super().__init__()
        self.reduce = nn.Conv2d(channels, hidden, 1)
        self.expand = nn.Conv2d(hidden, channels, 1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        s = x.mean((2, 3), keepdim=True)
        s = torch.relu(self.reduce(s))
        return x * nn.functional.hardsigmoid(self.expand(s))


class ResidualAdd(nn.Module):
    """Residual add with a Channel-level Bypass Connection.

    `block_out` has `computed` channels, `stream` has `width` >= computed; the first
    `computed` stream channels get the block's output added, the rest pass through.
    """

    def __init__(self, computed: int, width: int):
        super().__init__()
        if computed > width:
            raise ValueError(f"ResidualAdd: computed channels {computed} exceed stream width {width}")
        self.computed, self.width = computed, width

    def forward(self, block_out: torch.Tensor, stream: torch.Tensor) -> torch.Tensor:
        if self.computed == self.width:
            return block_out + stream
        return torch.cat([block_out + stream[:, : self.computed], stream[:, self.computed:]], 1)


class GlobalPool(nn.Module):
    """Global average pool to a (N, C) vector."""

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x.mean((2, 3))


class LinearAct(nn.Sequential):
    """Fully connected layer (with bias) + activation, on a (N, C) vector."""

    def __init__(self, cin: int, cout: int, act: str = "none"):
        super().__init__()
        self.fc = nn.Linear(cin, cout)
        self.act = make_act(act)


class Upsample(nn.Module):
    """Nearest-neighbour upsampling by an integer factor (depth decoders)."""

    def __init__(self, factor: int):
        super().__init__()
        self.factor = factor

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return nn.functional.interpolate(x, scale_factor=self.factor, mode="nearest")


class InvertedResidualOps(nn.Module):
    """``ir``/``ds`` block: [1x1 expand] -> k x k depthwise -> [SE] -> 1x1 project [-> CBC add].

    The one composition of a block: the sub-network's blocks (`subnet.InvertedResidual`) and the
    whole-block LUT key (op ``block``, `lut_db.layer_key.BlockConfig`) are both this module, so
    a block row times the very graph a network runs. `se_hidden` 0: no SE."""

    def __init__(self, kind: str, cin: int, expand: int, out: int, kernel: int, stride: int, act: str,
                 se_hidden: int, residual: bool):
        super().__init__()
        self.expand = ConvBNAct(cin, expand, 1, 1, 1, act) if kind == "ir" else None
        self.dw = ConvBNAct(expand, expand, kernel, stride, expand, act)
        self.se = SqueezeExcite(expand, se_hidden) if se_hidden else None
        self.project = ConvBNAct(expand, out, 1, 1, 1, "none")
        self.add = ResidualAdd(out, cin) if residual else None

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        h = self.expand(x) if self.expand is not None else x
        h = self.dw(h)
        if self.se is not None:
            h = self.se(h)
        h = self.project(h)
        return self.add(h, x) if self.add is not None else h


#: LUT op kind -> the module of one key (BN statistics still at their defaults).
BUILDERS: dict[str, Callable[[LayerConfig], nn.Module]] = {
    "conv": lambda c: ConvBNAct(c.cin, c.cout, c.kernel, c.stride, c.groups, c.act),
    "dwconv": lambda c: ConvBNAct(c.cin, c.cout, c.kernel, c.stride, c.groups, c.act),
    "se": lambda c: SqueezeExcite(c.cin, c.hidden),
    "add": lambda c: ResidualAdd(c.cin, c.cout),
    "gap": lambda c: GlobalPool(),
    "linear": lambda c: LinearAct(c.cin, c.cout, c.act),
    "upsample": lambda c: Upsample(c.stride),
    "block": lambda c: InvertedResidualOps(c.kind, c.cin, c.expand, c.cout, c.kernel, c.stride, c.act,
                                           c.hidden, c.residual),
}
if set(BUILDERS) != set(OP_KINDS):
    raise ValueError(f"search/spaces/ops.py: builders for {sorted(BUILDERS)} but the LUT op kinds are "
                     f"{sorted(OP_KINDS)} (lut_db/op_kinds.py)")


def example_inputs(cfg: LayerConfig) -> tuple[torch.Tensor, ...]:
    """Random inputs of one LUT key, shaped by its op kind's declared `inputs` (`lut_db/op_kinds.py`):
    the first has `cin` channels, a second image (``add``) is the `cout`-wide stream."""
    channels = (cfg.cin, cfg.cout)
    return tuple(torch.randn(1, channels[i], cfg.h, cfg.w) if kind == IMAGE else torch.randn(1, channels[i])
                 for i, kind in enumerate(OP_KINDS[cfg.op].inputs))


def build_layer(cfg: LayerConfig) -> tuple[nn.Module, tuple[torch.Tensor, ...]]:
    """The module of one LUT key, in eval mode, with example NCHW (or NC) inputs."""
    inputs = example_inputs(cfg)  # inputs, then weights: the order of the random draws under a seed
    module = BUILDERS[cfg.op](cfg)
    _randomize_bn(module)
    return module.eval(), inputs


def _randomize_bn(module: nn.Module) -> None:
    """Give BN non-trivial statistics so exported graphs are not simplified away."""
    generator = torch.Generator().manual_seed(0)
    for m in module.modules():
        if isinstance(m, nn.BatchNorm2d):
            m.running_mean.copy_(torch.randn(m.num_features, generator=generator) * 0.1)
            m.running_var.copy_(torch.rand(m.num_features, generator=generator) + 0.5)
