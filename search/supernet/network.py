"""The OD super-network of a search space: one network at max width holding every sub-network.

Forward pass, with `m` the OD masks of the batch (see `od.py`; a mask keeps the first w
channels of a layer, per image):

    x = stem(x) * m[stem]
    for each block:                                # inverted residual
        h = expand(x) * m[expand]                  # 1x1 conv + BN + act
        h = dw(h, kernel) * m[expand]              # k x k centre of the 7x7 super-kernel
        h = se(h, m[se hidden])
        h = project(h)                             # 1x1 conv + BN
        x = x + h * m[cbc out]   if residual       # CBC: masked channels pass x through
            h * m[stage out]     otherwise         # new stream width
    logits = classifier(fc(pool(x)) * m[head.fc])

Masks go *after* BN and activation, so a dropped channel is exactly zero and the next
layer sees the same input as the physically smaller sub-network. A residual block whose
CBC width (or expansion) is 0 contributes nothing: its output equals its input.
"""
from __future__ import annotations

import torch
from torch import nn

from search.spaces.ops import ConvBNAct, GlobalPool, LinearAct
from search.spaces.space import ResolvedBlock, SearchSpace, SubnetConfig, se_hidden
from search.spaces.subnet import SubnetModel, module_name

from . import od as od_lib
from .layers import ElasticDepthwise, MaskedSqueezeExcite, centre_crop, grouped_batchnorm, masked
from .od import ODPolicy, ODSample


class SuperBlock(nn.Module):
    """``ir``/``ds`` block at max width: [1x1 expand] -> elastic dw -> [SE] -> 1x1 project [-> CBC add]."""

    def __init__(self, block: ResolvedBlock, cin: int, expand: int, out: int, max_kernel: int):
        super().__init__()
        self.block = block
        self.expand = ConvBNAct(cin, expand, 1, 1, 1, block.act) if block.kind == "ir" else None
        self.dw = ElasticDepthwise(expand, max_kernel, block.stride, block.act)
        self.se = MaskedSqueezeExcite(expand, se_hidden(expand)) if block.se else None
        self.project = ConvBNAct(expand, out, 1, 1, 1, "none")

    def forward(self, x: torch.Tensor, m: dict[str, torch.Tensor], kernel) -> torch.Tensor:
        b = self.block
        h = masked(self.expand(x), m.get(b.expand_var)) if self.expand is not None else x
        h = masked(self.dw(h, kernel), m.get(b.expand_var or b.in_var))
        if self.se is not None:
            h = self.se(h, m.get(f"{b.name}.se"))
        h = self.project(h)
        if b.residual:
            return x + masked(h, m.get(b.out_var))  # Channel-level Bypass Connection
        return masked(h, m.get(b.out_var))


class SuperConv(nn.Module):
    """``cn`` block at max width."""

    def __init__(self, block: ResolvedBlock, cin: int, cout: int):
        super().__init__()
        self.block = block
        self.conv = ConvBNAct(cin, cout, block.default_kernel, block.stride, 1, block.act)

    def forward(self, x: torch.Tensor, m: dict[str, torch.Tensor], kernel=None) -> torch.Tensor:
        return masked(self.conv(x), m.get(self.block.out_var))


class SuperHead(nn.Module):
    """Global pool -> FC + act (elastic width ``head.fc``) -> dropout -> classifier."""

    def __init__(self, cin: int, hidden: int, classes: int, act: str, dropout: float):
        super().__init__()
        self.pool = GlobalPool()
        self.fc = LinearAct(cin, hidden, act)
        self.dropout = nn.Dropout(dropout)
        self.classifier = LinearAct(hidden, classes, "none")

    def forward(self, x: torch.Tensor, mask: torch.Tensor | None) -> torch.Tensor:
        h = self.fc(self.pool(x))
        h = h if mask is None else h * mask.flatten(1)
        return self.classifier(self.dropout(h))


class SuperNet(nn.Module):
    """The OD super-network of `space` (classification spaces).

    ``forward(x, widths=None)``: None runs the max network (no masks, max kernels); an
    `ODSample` runs one sub-network per image; a `SubnetConfig` runs that candidate for every
    image (masked evaluation, same as ``masks_for(config, N)``).
    """

    def __init__(self, space: SearchSpace, dropout: float = 0.0, policy: ODPolicy | None = None):
        super().__init__()
        if space.task != "classification":
            raise ValueError(f"SuperNet builds classification spaces; {space.name} is a {space.task} space")
        self.space = space
        self.policy = policy or ODPolicy()
        self.dropout = dropout
        wv = space.width_vars
        self.channels = {name: v.max for name, v in wv.items()}  # mask length per width variable
        max_kernel = max(space.kernel_choices)
        stem = space.stem
        self.stem = ConvBNAct(space.spec.in_channels, wv["stem"].max, stem.default_kernel, stem.stride, 1, stem.act)
        self.blocks = nn.ModuleDict()
        for block in space.blocks:
            cin = wv[block.in_var].max
            if block.kind == "cn":
                self.blocks[module_name(block.name)] = SuperConv(block, cin, wv[block.out_var].max)
            else:
                expand = wv[block.expand_var].max if block.expand_var else cin
                self.blocks[module_name(block.name)] = SuperBlock(block, cin, expand, wv[block.out_var].max,
                                                                  max_kernel)
                if block.se:
                    self.channels[f"{block.name}.se"] = se_hidden(expand)
        self.head = SuperHead(wv[space.final_stream].max, wv["head.fc"].max, space.spec.num_classes,
                              space.spec.head_act, dropout)
        self._bns = grouped_batchnorm(self)  # BN per sub-network group under grouped OD (od.py)

    # ------------------------------------------------------------------ OD
    def sample_od(self, batch_size: int, generator: torch.Generator | None = None,
                  policy: ODPolicy | None = None) -> ODSample:
        """One random sub-network per image (`od.py` documents the distribution)."""
        return od_lib.sample(self.space, batch_size, generator, policy or self.policy)

    def masks_for(self, config: SubnetConfig, batch_size: int) -> ODSample:
        """`config` for every image of a batch of `batch_size` (masked evaluation)."""
        return od_lib.fixed(self.space, config, batch_size)

    def forward(self, x: torch.Tensor, widths: ODSample | SubnetConfig | None = None) -> torch.Tensor:
        if isinstance(widths, SubnetConfig):
            widths = self.masks_for(widths, x.shape[0])
        m = widths.masks(self.channels, x.device, x.dtype) if widths is not None else {}
        kernels = widths.kernels if widths is not None else {}
        groups = widths.groups if widths is not None else 1
        if groups > 1:  # one kernel per group: G fixed-shape convolutions instead of a sort by kernel
            per = x.shape[0] // groups
            kernels = {b: (k if isinstance(k, int) else tuple(k[::per].tolist())) for b, k in kernels.items()}
        for bn in self._bns:
            bn.groups = groups
        try:
            x = masked(self.stem(x), m.get("stem"))
            for block in self.blocks.values():
                x = block(x, m, kernels.get(block.block.name))
            return self.head(x, m.get("head.fc"))
        finally:
            for bn in self._bns:
                bn.groups = 1

    # ------------------------------------------------------------------ sub-networks
    def subnet(self, config: SubnetConfig) -> SubnetModel:
        """A standalone, physically smaller network with weights sliced from this one.

        Ordered slicing (``weight[:out, :in]``), BN parameters and running statistics
        sliced, depthwise kernels centre-cropped from the super-kernel. The result is on
        this network's device and in its train/eval mode; its outputs equal the masked
        super-network's for `config` (tests/test_supernet.py).
        """
        self.space.validate(config)
        config = self.space.canonical(config)
        model = self.space.build_subnet(config, self.dropout)
        source = self.state_dict()
        sliced = {name: slice_like(source[name], target.shape) for name, target in model.state_dict().items()}
        model.load_state_dict(sliced)
        param = next(self.parameters())
        return model.to(device=param.device, dtype=param.dtype).train(self.training)

    def max_config(self) -> SubnetConfig:
        return self.space.max_config()

    def min_config(self) -> SubnetConfig:
        return self.space.min_config()


def slice_like(source: torch.Tensor, shape: torch.Size) -> torch.Tensor:
    """The leading `shape` of `source`; 4-D conv weights take the *centre* of larger kernels."""
    if source.dim() == 0:
        return source.clone()
    if source.dim() == 4 and source.shape[-1] != shape[-1]:
        source = centre_crop(source, shape[-1])
    return source[tuple(slice(0, n) for n in shape)].clone()
