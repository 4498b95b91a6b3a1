"""A standalone, physically small PyTorch network for one `SubnetConfig`.

Built from the same resolved blocks and the same op classes as the LUT keys
(`SearchSpace.layer_configs`), so layer i of this network is LUT key i. Removed (CBC)
blocks are absent. Module names follow the space: ``blocks["s1_b0"]`` is block ``s1.b0``;
the super-network copies sliced weights into these modules.
"""
from __future__ import annotations

import torch
from torch import nn

from .ops import ConvBNAct, GlobalPool, InvertedResidualOps, LinearAct
from .config import ResolvedBlock, ResolvedSpace, SubnetConfig, se_hidden


def module_name(block_name: str) -> str:
    """ModuleDict key of a block (``s1.b0`` -> ``s1_b0``)."""
    return block_name.replace(".", "_")


class ConvBlock(nn.Module):
    """``cn`` block: one conv + BN + act."""

    def __init__(self, block: ResolvedBlock, cin: int, cout: int):
        super().__init__()
        self.conv = ConvBNAct(cin, cout, block.default_kernel, block.stride, 1, block.act)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.conv(x)


class InvertedResidual(InvertedResidualOps):
    """``ir``/``ds`` block of a resolved space at these widths (`ops.InvertedResidualOps`)."""

    def __init__(self, block: ResolvedBlock, cin: int, expand: int, out: int, kernel: int):
        super().__init__(block.kind, cin, expand, out, kernel, block.stride, block.act,
                         se_hidden(expand) if block.se else 0, block.residual)


class ClassifierHead(nn.Module):
    """Global pool -> FC + act -> dropout -> classifier (MobileNetV3 head)."""

    def __init__(self, cin: int, hidden: int, classes: int, act: str, dropout: float = 0.0):
        super().__init__()
        self.pool = GlobalPool()
        self.fc = LinearAct(cin, hidden, act)
        self.dropout = nn.Dropout(dropout)
        self.classifier = LinearAct(hidden, classes, "none")

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.classifier(self.dropout(self.fc(self.pool(x))))


class SubnetModel(nn.Module):
    """The concrete network of `config` in `space` (built by `SearchSpace.build_subnet`)."""

    def __init__(self, space: ResolvedSpace, config: SubnetConfig, dropout: float = 0.0):
        super().__init__()
        space.validate(config)
        config = space.canonical(config)
        self.space_name = space.name
        self.config = config
        stem = space.stem
        self.stem = ConvBNAct(space.spec.in_channels, config.widths["stem"], stem.default_kernel, stem.stride, 1,
                              stem.act)
        self.blocks = nn.ModuleDict()
        for block in space.blocks:
            cin, expand, out, _ = space.block_widths(block, config)
            if block.residual and out == 0:
                continue
            if block.kind == "cn":
                self.blocks[module_name(block.name)] = ConvBlock(block, cin, out)
            else:
                self.blocks[module_name(block.name)] = InvertedResidual(block, cin, expand, out,
                                                                        config.kernels[block.name])
        self.head = ClassifierHead(config.widths[space.final_stream], config.widths["head.fc"],
                                   space.spec.num_classes, space.spec.head_act, dropout)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = self.stem(x)
        for block in self.blocks.values():
            x = block(x)
        return self.head(x)

