"""Ordered Dropout (OD) samples: a width per image per width variable, a kernel per image per block.

OD trains many sub-networks in one forward/backward pass: image i of the batch runs
sub-network i, simulated by zeroing, in every elastic layer, the channels from that
layer's sampled width on. The *last* channels are always the ones dropped, so a
sub-network is the first w channels of each layer: exactly what `SuperNet.subnet` slices
out at evaluation (no training/evaluation mismatch).

Sampling distribution (`ODPolicy`), per batch of N images:
- ``round(max_share * N)`` images run the max network (every width at max, kernel 7),
- ``round(min_share * N)`` images run the min network (`SearchSpace.min_config`: every
  removable CBC block removed, every other width at one granularity step, kernel 3),
- the others draw every width variable independently and uniformly from its choices
  (0 included where CBC can remove the block) and every kernel uniformly from 3/5/7.
This is the "sandwich rule" of slimmable networks / OFA, applied per image: the two
extremes bound the space MCD walks through (it starts at max and shrinks towards min), so
both get a guaranteed share of every batch; uniform sampling covers the rest. Default
shares are 1/4 each.

Grouped OD (`ODPolicy.groups` = G > 0, the classification default, `sample_groups`): the same
sandwich rule over G contiguous equal groups of images instead of single images, one
sub-network per group, so that BatchNorm can normalise each group with its own statistics
(`layers.GroupedBatchNorm2d`). Per-image draws (G = 0) put every sub-network under the
statistics of the mixed batch, which the wide images dominate: the narrow sub-networks then
never learn (docs/search.md, "Training the super-network").

Kernels are sampled per image too. The depthwise layer splits the batch by kernel size and
runs each group with the centre crop of the 7x7 super-kernel (3 smaller convolutions
instead of one 7x7 over the batch), see `ElasticDepthwise`. Kernel draws are stratified:
the uniform images are split evenly between 3/5/7 and the split is randomly permuted, so
each image's kernel is still uniform, but the group sizes are the same every step —
oneDNN/cuDNN cache convolution plans per shape, and random group sizes re-planned the
three convolutions at every step (measured on CPU: a 6-step training test took 105 s
with random group sizes, 13 s with fixed ones).

After sampling, widths are made canonical per image, like `SearchSpace.canonical`: a
residual block's CBC width is clamped to its stream width, and a block with a zero CBC
width or zero expansion is removed (both set to 0). The SE hidden width of each block is
derived from its expansion width (``<block>.se``), as `se_hidden` does for sub-networks.
"""
from __future__ import annotations

from dataclasses import dataclass, field

import torch

from search.spaces.space import SearchSpace, SubnetConfig, se_hidden


@dataclass(frozen=True)
class ODPolicy:
    """How `SuperNet.sample_od` draws sub-networks (see the module docstring)."""

    max_share: float = 0.25  # sandwich rule: the max network always trains (MCD's start point)
    min_share: float = 0.25  # ... and the min network (MCD's end point); the rest is uniform
    per_image_kernels: bool = True  # False: one kernel per block per batch (cheaper bookkeeping)
    groups: int = 0  # >0: G contiguous equal groups, one sub-network each, BN statistics per group (see below)


@dataclass
class ODSample:
    """Per-image sub-networks of one batch.

    `widths[var]` and `kernels[block]` are either an int (the same for every image: a fixed
    candidate, `SuperNet.masks_for`) or a CPU LongTensor of shape (N,) (OD training).
    Widths are canonical (CBC clamped, removed blocks at 0) and include the derived SE
    hidden widths ``<block>.se``.
    """

    batch_size: int
    widths: dict[str, int | torch.Tensor]
    kernels: dict[str, int | torch.Tensor] = field(default_factory=dict)
    groups: int = 1  # >1: the batch is `groups` contiguous equal runs, each one sub-network; BN
    # (training) normalises each run with its own batch statistics, as if it ran alone

    def masks(self, channels: dict[str, int], device: torch.device, dtype: torch.dtype) -> dict[str, torch.Tensor]:
        """{var: (N or 1, C, 1, 1) 0/1 mask keeping the first w channels}; full-width vars are omitted."""
        out = {}
        for var, width in self.widths.items():
            c = channels[var]
            if isinstance(width, int):
                if width >= c:
                    continue
                out[var] = (torch.arange(c, device=device) < width).to(dtype).view(1, c, 1, 1)
            else:
                keep = torch.arange(c).view(1, c) < width.view(-1, 1)
                out[var] = keep.to(device=device, dtype=dtype, non_blocking=True).view(-1, c, 1, 1)
        return out

    def config(self, index: int) -> SubnetConfig:
        """The sub-network image `index` runs (without the derived ``.se`` widths)."""
        def pick(v):
            return int(v) if isinstance(v, int) else int(v[index])
        return SubnetConfig({k: pick(v) for k, v in self.widths.items() if not k.endswith(".se")},
                            {k: pick(v) for k, v in self.kernels.items()})


def _se_var(block_name: str) -> str:
    return f"{block_name}.se"


def derived_se_widths(space: SearchSpace, widths: dict) -> dict:
    """Add ``<block>.se`` = se_hidden(expansion width) for every SE block (ints or tensors)."""
    out = dict(widths)
    for block in space.blocks:
        if not block.se:
            continue
        expand = widths[block.expand_var or block.in_var]
        if isinstance(expand, int):
            out[_se_var(block.name)] = se_hidden(expand) if expand > 0 else 0
        else:
            table = torch.tensor([se_hidden(e) if e > 0 else 0 for e in range(int(space.width_vars[
                block.expand_var or block.in_var].max) + 1)])
            out[_se_var(block.name)] = table[expand]
    return out


def canonical_tensors(space: SearchSpace, widths: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    """Per-image `SearchSpace.canonical`: clamp CBC widths to the stream, zero removed blocks."""
    widths = dict(widths)
    for block in space.blocks:
        if not block.residual:
            continue
        out = torch.minimum(widths[block.out_var], widths[block.in_var])
        removed = out == 0
        if block.expand_var:
            removed = removed | (widths[block.expand_var] == 0)
            widths[block.expand_var] = torch.where(removed, 0, widths[block.expand_var])
        widths[block.out_var] = torch.where(removed, 0, out)
    return widths


def sample(space: SearchSpace, batch_size: int, generator: torch.Generator | None, policy: ODPolicy) -> ODSample:
    """Draw one `ODSample` (see the module docstring for the distribution)."""
    if policy.groups > 0:
        return sample_groups(space, batch_size, generator, policy)
    n = batch_size
    n_max = min(n, round(policy.max_share * n))
    n_min = min(n - n_max, round(policy.min_share * n))
    lo, hi = space.min_config(), space.max_config()
    widths = {}
    for name, var in space.width_vars.items():
        choices = torch.tensor(var.choices)
        w = choices[torch.randint(len(choices), (n,), generator=generator)]
        w[:n_max] = hi.widths[name]
        w[n_max:n_max + n_min] = lo.widths[name]
        widths[name] = w
    kernels: dict[str, int | torch.Tensor] = {}
    for block in space.blocks:
        if not block.kernel_choices:
            continue
        choices = torch.tensor(block.kernel_choices)
        if policy.per_image_kernels:
            # stratified: each kernel gets an equal share of the uniform images, in random order
            n_uniform = n - n_max - n_min
            k = torch.empty(n, dtype=torch.long)
            k[n_max + n_min:] = choices.repeat(-(-n_uniform // len(choices)))[:n_uniform][
                torch.randperm(n_uniform, generator=generator)]
            k[:n_max] = hi.kernels[block.name]
            k[n_max:n_max + n_min] = lo.kernels[block.name]
            kernels[block.name] = k
        else:
            kernels[block.name] = int(choices[torch.randint(len(choices), (1,), generator=generator)])
    widths = derived_se_widths(space, canonical_tensors(space, widths))
    return ODSample(n, widths, kernels)


def sample_groups(space: SearchSpace, batch_size: int, generator: torch.Generator | None,
                  policy: ODPolicy) -> ODSample:
    """Grouped OD: G = `policy.groups` sub-networks, each run by a contiguous run of N / G images.

    Same sandwich rule over groups: the first ``round(max_share * G)`` groups (at least one)
    run the max network, the next ``round(min_share * G)`` the min network, the others one
    uniform draw each (widths and kernels). Still one forward/backward pass for all of them,
    but each sub-network has images of its own in the batch, so BN statistics can be taken
    per sub-network (`GroupedBatchNorm2d`): per-image mixing normalised every sub-network
    with statistics of the mixture, which trains none of them but the max network.
    """
    g_count, n = policy.groups, batch_size
    if n % g_count:
        raise ValueError(f"OD groups: batch of {n} does not split into {g_count} equal groups")
    per = n // g_count
    g_max = max(1, min(g_count, round(policy.max_share * g_count)))
    g_min = min(g_count - g_max, round(policy.min_share * g_count))
    lo, hi = space.min_config(), space.max_config()

    def per_image(choices: tuple[int, ...], max_value: int, min_value: int) -> torch.Tensor:
        """One value per group (max groups, min groups, uniform draws), repeated for its images."""
        values = torch.tensor(choices)[torch.randint(len(choices), (g_count,), generator=generator)]
        values[:g_max] = max_value
        values[g_max:g_max + g_min] = min_value
        return values.repeat_interleave(per)

    widths = {name: per_image(var.choices, hi.widths[name], lo.widths[name])
              for name, var in space.width_vars.items()}
    kernels: dict[str, int | torch.Tensor] = {
        b.name: per_image(b.kernel_choices, hi.kernels[b.name], lo.kernels[b.name])
        for b in space.blocks if b.kernel_choices}
    widths = derived_se_widths(space, canonical_tensors(space, widths))
    return ODSample(n, widths, kernels, groups=g_count)


def fixed(space: SearchSpace, config: SubnetConfig, batch_size: int) -> ODSample:
    """The same (canonical) sub-network for every image: masked evaluation of one candidate."""
    space.validate(config)
    config = space.canonical(config)
    widths = {k: int(v) for k, v in config.widths.items()}
    for block in space.blocks:  # block_widths' clamp, so masks equal the sliced network exactly
        if block.residual:
            widths[block.out_var] = space.block_widths(block, config)[2]
    return ODSample(batch_size, derived_se_widths(space, widths), {k: int(v) for k, v in config.kernels.items()})
