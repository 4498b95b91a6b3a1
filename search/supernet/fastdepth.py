"""The FastDepth super-network: OD masks per image, CBC bypass, `subnet(config)` slicing.

Reused from `od.py`: the OD sampling policy and per-image width tensors
(`ODPolicy`, `sample`, `fixed`, `ODSample.masks`), which only read the space's width
variables and CBC flags, so they serve this encoder-decoder unchanged (the decoder's own
variables ``d1.out``/``d5.out`` are ordinary width variables; the skip-tied ones are encoder
variables). Not reused: the MobileNetV3 elastic blocks (inverted residual, SE,
super-kernels, residual add); FastDepth needs plain depthwise-separable layers with a
bypass-only CBC and a decoder with skip adds, so the masked forward below is depth-specific.

The weights live in a max-width `FastDepthNet` (same module names as every sub-network),
so `subnet(config)` copies the leading slices ``weight[:out, :in]`` by module name.

Masked forward (OD, visible here rather than in hooks), per layer: conv + BN + act at full
width, then multiply by the 0/1 mask of its width variable (per image: (N, C, 1, 1)).
A CBC layer with per-image width ``w`` keeps its first ``w`` computed channels and the input
stream's channels from ``w`` on: ``y = m_w * f(x) + (1 - m_w) * x``; ``w = 0`` is identity.
Since masks zero the last channels of every stream, a masked image equals the sliced
sub-network in eval mode (test: `tests/test_depth_supernet.py`, 1e-5).
"""
from __future__ import annotations

import torch
from torch import nn

from search.spaces.fastdepth import DepthSearchSpace
from search.spaces.fastdepth_net import FastDepthNet
from search.spaces.space import SubnetConfig
from search.spaces.subnet import module_name

from .od import ODPolicy, ODSample, fixed, sample


class DepthSuperNet(nn.Module):
    """OD super-network of a `DepthSearchSpace` (task ``depth``)."""

    def __init__(self, space: DepthSearchSpace, policy: ODPolicy | None = None):
        super().__init__()
        if space.task != "depth":
            raise ValueError(f"DepthSuperNet: space {space.name} is a {space.task} space")
        self.space = space
        self.policy = policy or ODPolicy()
        self.dropout = 0.0  # no classifier dropout; read by `search.checkpoint.save_supernet`
        self.net = FastDepthNet(space, space.max_config())
        self._channels = {name: var.max for name, var in space.width_vars.items()}

    # ----------------------------------------------------------------- OD
    def sample_od(self, batch_size: int, generator: torch.Generator | None = None) -> ODSample:
        """Per-image widths for one training batch (distribution: `search/supernet/od.py`)."""
        return sample(self.space, batch_size, generator, self.policy)

    def masks_for(self, config: SubnetConfig, batch_size: int = 1) -> ODSample:
        """The same candidate for every image (masked evaluation)."""
        return fixed(self.space, config, batch_size)

    def forward(self, x: torch.Tensor, od: ODSample | None = None) -> torch.Tensor:
        """Depth (N, 1, H, W); `od` None runs the max network."""
        if od is None:
            return self.net(x)
        space, net = self.space, self.net
        masks = od.masks(self._channels, x.device, x.dtype)

        def masked(t: torch.Tensor, var: str) -> torch.Tensor:
            m = masks.get(var)
            return t if m is None else t * m

        x = masked(net.stem(x), "stem")
        saved = {"stem": x}
        wanted = {stage.skip for stage in space.decoder if stage.skip}
        for block in space.blocks:
            layer = net.encoder[module_name(block.name)]
            h = masked(layer.dw(x), block.in_var)
            h = layer.pw(h)
            if block.residual:  # CBC bypass: od widths are canonical (clamped to the stream)
                m = masks.get(block.out_var)
                x = h if m is None else m * h + (1 - m) * x
            else:
                x = masked(h, block.out_var)
            if block.name in wanted:
                saved[block.name] = x
        for stage in space.decoder:
            layer = net.decoder[stage.name]
            h = masked(layer.dw(x), stage.in_var)
            h = layer.up(masked(layer.pw(h), stage.out_var))
            x = h + saved[stage.skip] if stage.skip else h
        return net.head(x)

    # ----------------------------------------------------------------- slicing
    def subnet(self, config: SubnetConfig) -> FastDepthNet:
        """Standalone, physically smaller network of `config` with weights sliced from this one (eval mode)."""
        sub = FastDepthNet(self.space, config)
        copy_slices(self.net, sub)
        return sub.eval()


@torch.no_grad()
def copy_slices(source: nn.Module, target: nn.Module) -> None:
    """Copy the leading slice of every Conv2d/BatchNorm2d tensor of `source` into `target` (same names)."""
    modules = dict(source.named_modules())
    for name, sub in target.named_modules():
        if not isinstance(sub, (nn.Conv2d, nn.BatchNorm2d)):
            continue
        sup = modules[name]
        for key, tensor in list(sub.named_parameters(recurse=False)) + list(sub.named_buffers(recurse=False)):
            big = getattr(sup, key)
            if tensor.dim() == 0:
                tensor.copy_(big)
            else:
                tensor.copy_(big[tuple(slice(0, d) for d in tensor.shape)])
