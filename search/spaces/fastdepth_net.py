"""The standalone FastDepth sub-network of one `SubnetConfig`, built from `search/spaces/ops.py` classes.

Layer i of this network is LUT key i of `DepthSearchSpace.layer_configs` (stem, encoder
blocks dw/pw[/bypass], decoder stages dw/pw/upsample[/skip add], head), except that a CBC
bypass is a concatenation (`ChannelBypass`) where the LUT costs it with an ``add`` key (the
LUT has no concat kind; see `search/spaces/fastdepth.py`). Module names follow the space:
``encoder["s0_b4"]``, ``decoder["d2"]``; the super-network slices its weights into these.
"""
from __future__ import annotations

import torch
from torch import nn

from .config import DecoderStage, ResolvedBlock, ResolvedDepthSpace, SubnetConfig
from .ops import ConvBNAct, ResidualAdd, Upsample
from .subnet import module_name


HEAD_BIAS_M = 2.5  # metres: about NYU's mean depth (2.7 m) and the built-in rooms' (3.6 m)


class ChannelBypass(nn.Module):
    """CBC without a residual: the first `computed` channels come from the layer, the rest of the
    `width`-channel input stream passes through unchanged."""

    def __init__(self, computed: int, width: int):
        super().__init__()
        if not 0 < computed < width:
            raise ValueError(f"ChannelBypass: need 0 < computed ({computed}) < width ({width})")
        self.computed, self.width = computed, width

    def forward(self, layer_out: torch.Tensor, stream: torch.Tensor) -> torch.Tensor:
        return torch.cat([layer_out, stream[:, self.computed:]], 1)


class DepthwiseSeparable(nn.Module):
    """MobileNetV1 layer: 3x3 depthwise + BN + ReLU6, 1x1 pointwise + BN + ReLU6 [+ CBC bypass]."""

    def __init__(self, block: ResolvedBlock, cin: int, out: int):
        super().__init__()
        self.dw = ConvBNAct(cin, cin, block.default_kernel, block.stride, cin, block.act)
        self.pw = ConvBNAct(cin, out, 1, 1, 1, block.act)
        self.bypass = ChannelBypass(out, cin) if block.residual and out < cin else None

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        h = self.pw(self.dw(x))
        return self.bypass(h, x) if self.bypass is not None else h


class NNConvStage(nn.Module):
    """NNConv5 decoder stage: k x k depthwise + BN + ReLU, 1x1 + BN + ReLU, nearest x2 [, + skip]."""

    def __init__(self, stage: DecoderStage, cin: int, out: int):
        super().__init__()
        self.dw = ConvBNAct(cin, cin, stage.kernel, 1, cin, stage.act)
        self.pw = ConvBNAct(cin, out, 1, 1, 1, stage.act)
        self.up = Upsample(stage.upsample)
        self.skip = ResidualAdd(out, out) if stage.skip else None

    def forward(self, x: torch.Tensor, skip: torch.Tensor | None = None) -> torch.Tensor:
        h = self.up(self.pw(self.dw(x)))
        return self.skip(h, skip) if self.skip is not None else h


class FastDepthNet(nn.Module):
    """Encoder (stem + MobileNetV1 layers, CBC-removed ones absent), NNConv5 decoder, 1x1 head.

    Input: (N, 3, H, W) RGB in [0, 1]; output: (N, 1, H, W) depth in metres (ReLU: >= 0).
    Built by `DepthSearchSpace.build_subnet`.
    """

    def __init__(self, space: ResolvedDepthSpace, config: SubnetConfig):
        super().__init__()
        space.validate(config)
        config = space.canonical(config)
        self.space_name = space.name
        self.config = config
        w = config.widths
        stem = space.stem
        self.stem = ConvBNAct(space.spec.in_channels, w["stem"], stem.default_kernel, stem.stride, 1, stem.act)
        self.encoder = nn.ModuleDict()
        self.block_order = [module_name(b.name) for b in space.blocks]  # removed blocks included (skips)
        for block in space.blocks:
            cin, _, out, _ = space.block_widths(block, config)
            if block.residual and out == 0:
                continue
            self.encoder[module_name(block.name)] = DepthwiseSeparable(block, cin, out)
        self.decoder = nn.ModuleDict()
        self.skip_of: dict[str, str] = {}
        for stage in space.decoder:
            self.decoder[stage.name] = NNConvStage(stage, w[stage.in_var], w[stage.out_var])
            if stage.skip:
                self.skip_of[stage.name] = module_name(stage.skip)
        self.head = ConvBNAct(w[space.decoder_stream], space.spec.num_classes, 1, 1, 1, space.spec.head_act)
        # Start the ReLU head at a typical indoor depth instead of 0 m: otherwise the first few
        # hundred steps only learn this offset (BN bias moves by ~lr per step).
        nn.init.constant_(self.head.bn.bias, HEAD_BIAS_M)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = self.stem(x)
        saved: dict[str, torch.Tensor] = {"stem": x}
        wanted = set(self.skip_of.values())
        for name in self.block_order:
            if name in self.encoder:
                x = self.encoder[name](x)
            if name in wanted:
                saved[name] = x  # the stream after this layer (its input if CBC removed it)
        for name, stage in self.decoder.items():
            x = stage(x, saved.get(self.skip_of.get(name, ""), None))
        return self.head(x)

