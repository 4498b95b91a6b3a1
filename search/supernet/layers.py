"""Elastic layers of the super-network.

Only the depthwise layer needs its own class (the super-kernel); every other layer is a
plain `ConvBNAct` / `SqueezeExcite` / `LinearAct` at max width whose output the network
multiplies by an OD mask in its forward pass. Module and parameter names match
`search/spaces/subnet.py`, so `SuperNet.subnet` slices weights by name.
"""
from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from search.spaces.ops import make_act


def centre_crop(weight: torch.Tensor, kernel: int) -> torch.Tensor:
    """The centre `kernel` x `kernel` of a (..., K, K) super-kernel (3x3 = centre of the 7x7)."""
    k_max = weight.shape[-1]
    if kernel == k_max:
        return weight
    if kernel > k_max or (k_max - kernel) % 2:
        raise ValueError(f"kernel {kernel} is not a centred sub-kernel of {k_max}x{k_max}")
    o = (k_max - kernel) // 2
    return weight[..., o:o + kernel, o:o + kernel]


class BatchPermute(torch.autograd.Function):
    """``x[order]`` along the batch in memory format `fmt`; backward is the inverse permutation
    (a gather, not index_select's scatter-add, whose NCHW gradient slows later layers)."""

    @staticmethod
    def forward(ctx, x, order, inverse, fmt):
        ctx.save_for_backward(inverse)
        ctx.fmt = fmt
        return x.index_select(0, order).contiguous(memory_format=fmt)

    @staticmethod
    def backward(ctx, grad):
        (inverse,) = ctx.saved_tensors
        return grad.index_select(0, inverse).contiguous(memory_format=ctx.fmt), None, None, None


class ElasticDepthwise(nn.Module):
    """k x k depthwise conv + BN + act with one `max_kernel` super-kernel for every k.

    `kernel` is an int (whole batch), a tuple of ints (one per contiguous equal group of the
    batch, grouped OD) or a LongTensor (N,) with a kernel per image. Per-image
    kernels split the batch into at most len(choices) groups, each convolved with its centre
    crop ('same' padding k // 2 keeps the output size for every odd k), and put the outputs
    back in batch order. BN then normalises the whole batch at once, as in the max network
    (per group under grouped OD: `GroupedBatchNorm2d`).
    """

    def __init__(self, channels: int, max_kernel: int, stride: int, act: str):
        super().__init__()
        self.channels, self.max_kernel, self.stride = channels, max_kernel, stride
        self.conv = nn.Conv2d(channels, channels, max_kernel, stride, max_kernel // 2, groups=channels, bias=False)
        self.bn = nn.BatchNorm2d(channels)
        self.act = make_act(act)

    def _conv(self, x: torch.Tensor, kernel: int) -> torch.Tensor:
        return F.conv2d(x, centre_crop(self.conv.weight, kernel), None, self.stride, kernel // 2, 1, self.channels)

    def _per_image(self, x: torch.Tensor, kernel: torch.Tensor) -> torch.Tensor:
        """Sort the batch by kernel, convolve contiguous runs with their centre crops, unsort.

        One gather in and one out (index_select), runs taken with `narrow` so a
        channels-last batch stays channels-last (a plain gather would not, and CPU
        depthwise backward is ~3x slower in NCHW).
        """
        ks, counts = torch.unique(kernel, return_counts=True)
        if len(ks) == 1:
            return self._conv(x, int(ks[0]))
        fmt = torch.channels_last if (x.is_contiguous(memory_format=torch.channels_last)
                                      and not x.is_contiguous()) else torch.contiguous_format
        order = torch.argsort(kernel, stable=True).to(x.device)
        inverse = torch.argsort(order)
        xs = BatchPermute.apply(x, order, inverse, fmt)
        outs, start = [], 0
        for k, n in zip(ks.tolist(), counts.tolist()):
            outs.append(self._conv(xs.narrow(0, start, n), k))
            start += n
        return BatchPermute.apply(torch.cat(outs), inverse, order, fmt)

    def forward(self, x: torch.Tensor, kernel: int | torch.Tensor | None = None) -> torch.Tensor:
        if kernel is None:
            y = self._conv(x, self.max_kernel)
        elif isinstance(kernel, int):
            y = self._conv(x, kernel)
        elif isinstance(kernel, tuple):  # grouped OD: one kernel per contiguous equal group (fixed shapes)
            y = torch.cat([self._conv(part, k) for part, k in zip(x.chunk(len(kernel)), kernel)])
        else:
            y = self._per_image(x, kernel)
        return self.act(self.bn(y))


class MaskedSqueezeExcite(nn.Module):
    """MobileNetV3 SE whose hidden layer is masked to se_hidden(expansion width) per image."""

    def __init__(self, channels: int, hidden: int):
        super().__init__()
        self.reduce = nn.Conv2d(channels, hidden, 1)
        self.expand = nn.Conv2d(hidden, channels, 1)

    def forward(self, x: torch.Tensor, hidden_mask: torch.Tensor | None) -> torch.Tensor:
        s = x.mean((2, 3), keepdim=True)
        s = masked(torch.relu(self.reduce(s)), hidden_mask)
        return x * F.hardsigmoid(self.expand(s))


class GroupedBatchNorm2d(nn.BatchNorm2d):
    """BatchNorm2d that, in training with ``groups`` = G > 1, normalises each of G contiguous
    equal runs of the batch with that run's own mean/variance (one sub-network per run, grouped
    OD). Running statistics are updated with the average over runs. Same parameters, buffers
    and state-dict names as nn.BatchNorm2d, so sub-network slicing is unchanged; with G = 1 or
    in eval mode it *is* nn.BatchNorm2d.

    Each run goes through the fused `F.batch_norm` kernel: a grouped OD step then costs about
    what a max-network step does on CPU (written as plain tensor ops it took ~2.2x; both
    side by side in `benchmarks/bench_supernet.py`)."""

    groups: int = 1

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        g = self.groups
        if not self.training or g <= 1:
            return super().forward(x)
        track = self.track_running_stats
        # momentum 1: each run's statistics land in its own scratch buffers (unbiased variance, as
        # nn.BatchNorm2d keeps); the real buffers then take their average with the layer's momentum
        means = [torch.zeros_like(self.running_mean) for _ in range(g)] if track else [None] * g
        variances = [torch.ones_like(self.running_var) for _ in range(g)] if track else [None] * g
        y = torch.cat([F.batch_norm(part, mean, var, self.weight, self.bias, True, 1.0, self.eps)
                       for part, mean, var in zip(x.chunk(g), means, variances)])
        if track:
            with torch.no_grad():
                m = self.momentum if self.momentum is not None else 1.0 / float(self.num_batches_tracked + 1)
                self.num_batches_tracked.add_(1)
                self.running_mean.mul_(1 - m).add_(torch.stack(means).mean(0), alpha=m)
                self.running_var.mul_(1 - m).add_(torch.stack(variances).mean(0), alpha=m)
        return y


def grouped_batchnorm(module: nn.Module) -> list[GroupedBatchNorm2d]:
    """Turn every nn.BatchNorm2d of `module` into a `GroupedBatchNorm2d` in place (same state)."""
    out = []
    for bn in module.modules():
        if type(bn) is nn.BatchNorm2d:
            bn.__class__ = GroupedBatchNorm2d
        if isinstance(bn, GroupedBatchNorm2d):
            out.append(bn)
    return out


def masked(x: torch.Tensor, mask: torch.Tensor | None) -> torch.Tensor:
    """`x * mask` (mask (N|1, C, 1, 1), or None = full width: nothing to drop)."""
    return x if mask is None else x * mask
