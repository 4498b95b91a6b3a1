"""The search space as CBC-off candidates see it (the benchmark's CBC ablation).

Channel-bypass connections (CBC) let a residual block compute fewer channels than its stream
(`<block>.out` < stream: the rest bypasses it) or none (`.out` or `.expand` 0: removed).
CBC off means a residual block computes its whole stream: `.out` tied to the stream width,
and no 0 choices. The view:

- drops 0 from the choices of every residual block's `.out` and `.expand`;
- ties `.out` to the stream in `canonical` (the largest choice <= the stream width, which is
  the stream width: both variables share the stream's channel grid), before the space's
  own canonicalisation. A residual `.out` step then leaves the network unchanged, which
  `shrink_step` / `grow_step` count as "cannot", so MCD, the landing and random draws never
  produce a partial bypass; shrinking the stream shrinks the block's output with it.

Why not a single max choice for `.out`: `SearchSpace.canonical` clamps the CBC width to a
choice <= the stream, and with only the max choice there is none once the stream shrinks.
Configs of the view are valid configs of the space (choices are a subset), so the
super-network slices them as it does any candidate.
"""
from __future__ import annotations

import copy
import dataclasses

from search.spaces.space import SearchSpace, SubnetConfig


class _TiedCBC:
    """Mixin placed before the space's own class: residual `.out` follows the stream."""

    def canonical(self, config: SubnetConfig) -> SubnetConfig:
        widths = dict(config.widths)
        for block in self.blocks:
            if block.residual:
                stream = widths[block.in_var]
                widths[block.out_var] = max(c for c in self.width_vars[block.out_var].choices if c <= stream)
        return super().canonical(SubnetConfig(widths, dict(config.kernels)))


def no_removal_view(space: SearchSpace) -> SearchSpace:
    """`space` without CBC: every residual block computes its whole stream (never removed)."""
    residual_vars = {v for b in space.blocks if b.residual for v in (b.out_var, b.expand_var) if v}
    view = copy.copy(space)
    view.__class__ = type(f"NoCBC{type(space).__name__}", (_TiedCBC, type(space)), {})
    view.width_vars = {n: dataclasses.replace(v, choices=tuple(c for c in v.choices if c > 0), zero_allowed=False)
                       if n in residual_vars else v for n, v in space.width_vars.items()}
    return view


def computes_whole_stream(space: SearchSpace, config: SubnetConfig) -> bool:
    """True when every residual block of `config` computes all of its input stream (out == in)."""
    for block in space.blocks:
        if block.residual:
            cin, _, out, _ = space.block_widths(block, config)
            if out != cin:
                return False
    return True
