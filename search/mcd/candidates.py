"""Candidate generation of Multi-layer Coordinate Descent.

Each candidate starts from the current network and shrinks L randomly chosen *dimensions*,
each just enough that the candidate meets every constraint's target of the iteration.
A dimension is a width variable (``s1.b0.expand``, ``s1.b1.out``, ``stem``...; a residual
block's ``.out``/``.expand`` may reach 0, which removes the block through CBC, so depth is
searched as width) or a block's depthwise kernel (``kernel:s1.b0``, 7 -> 5 -> 3).

How the reduction is shared among the L dimensions: one choice step at a time, round-robin
over the L dimensions in the random order they were drawn, stopping the moment every target
holds. Why: (1) "just enough" - the candidate lands right at the target, so all J candidates
spend the same resource and the most accurate one is a fair winner; (2) the change is spread
over the L layers instead of tearing one layer down, which is what lets a multi-layer step
remove more resource than the smallest layer holds (NetAdaptV2's argument against
single-layer descent); (3) the random draw order decides which layer takes the extra step.
A kernel step is only taken where it lowers an unmet constraint's value (on some runtimes a
5x5 depthwise costs what a 3x3 does; shrinking it would lose accuracy for nothing); a width
step is always taken (a LUT can be locally non-monotone, the next step usually recovers).
Candidates are deduplicated on their canonical config.
"""
from __future__ import annotations

import random
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field

from search.errors import SearchError
from search.spaces.space import SearchSpace, SubnetConfig

from .metrics import Constraint

KERNEL_PREFIX = "kernel:"
_EPS = 1e-9


@dataclass(frozen=True)
class Candidate:
    """One proposal of an iteration: its network, which dimensions it shrank, its metric values."""

    config: SubnetConfig
    shrunk: tuple[str, ...]  # dimensions drawn for it (width vars, ``kernel:<block>``)
    values: Mapping[str, float] = field(default_factory=dict)  # metric name -> value

    def to_dict(self) -> dict:
        return {"config": self.config.to_dict(), "shrunk": list(self.shrunk), "values": dict(self.values)}

    @classmethod
    def from_dict(cls, data: Mapping) -> Candidate:
        return cls(SubnetConfig.from_dict(data["config"]), tuple(data["shrunk"]), dict(data["values"]))


def dimensions(space: SearchSpace) -> list[str]:
    """Every shrinkable dimension of `space`, in a fixed order (width vars, then kernels)."""
    dims = list(space.width_vars)
    dims += [KERNEL_PREFIX + b.name for b in space.blocks if len(b.kernel_choices) > 1]
    return dims


def _block(space: SearchSpace, name: str):
    return next(b for b in space.blocks if b.name == name)


def shrink_step(space: SearchSpace, config: SubnetConfig, dim: str) -> SubnetConfig | None:
    """`config` (canonical) with `dim` one choice smaller, canonical; None if it cannot shrink.

    Steps that leave the network unchanged (a kernel of a removed block) count as "cannot".
    """
    if dim.startswith(KERNEL_PREFIX):
        block_name = dim[len(KERNEL_PREFIX):]
        block = _block(space, block_name)
        if space.is_removed(block, config):
            return None
        smaller = [k for k in block.kernel_choices if k < config.kernels[block_name]]
        return config.replace(kernels={block_name: max(smaller)}) if smaller else None
    value = config.widths[dim]
    for choice in sorted((c for c in space.width_vars[dim].choices if c < value), reverse=True):
        shrunk = space.canonical(config.replace(widths={dim: choice}))
        if shrunk != config:
            return shrunk
    return None


def grow_step(space: SearchSpace, config: SubnetConfig, dim: str) -> SubnetConfig | None:
    """`config` (canonical) with `dim` one choice larger, canonical; None if it cannot grow.

    The mirror of `shrink_step`, for the landing phase (`landing.py`). Growing the ``.out``
    or ``.expand`` width of a block CBC removed restores the block at the smallest non-zero
    choice of both (one alone would leave it removed). Steps that leave the network
    unchanged (a CBC width already at its stream's width) count as "cannot".
    """
    if dim.startswith(KERNEL_PREFIX):
        block_name = dim[len(KERNEL_PREFIX):]
        block = _block(space, block_name)
        if space.is_removed(block, config):
            return None
        larger = [k for k in block.kernel_choices if k > config.kernels[block_name]]
        return config.replace(kernels={block_name: min(larger)}) if larger else None
    value = config.widths[dim]
    partner = next(((b.out_var, b.expand_var) for b in space.blocks
                    if b.residual and b.expand_var and dim in (b.out_var, b.expand_var)), None)
    for choice in sorted(c for c in space.width_vars[dim].choices if c > value):
        widths = {dim: choice}
        if partner is not None:
            for var in partner:
                if var != dim and config.widths[var] == 0:
                    widths[var] = min(c for c in space.width_vars[var].choices if c > 0)
        grown = space.canonical(config.replace(widths=widths))
        if grown != config:
            return grown
    return None


def meets(values: Mapping[str, float], targets: Mapping[str, float]) -> bool:
    """Every value at or under its target (relative slack 1e-9 for float sums)."""
    return all(values[name] <= target * (1 + _EPS) + _EPS for name, target in targets.items())


def make_candidate(space: SearchSpace, current: SubnetConfig, constraints: Sequence[Constraint],
                   targets: Mapping[str, float], dims: Sequence[str]) -> Candidate | None:
    """Shrink `dims` of `current` round-robin, one step each, until `targets` hold; None if they never do."""
    config = current
    values = {c.name: c.metric.value(config) for c in constraints}
    active = list(dims)
    while not meets(values, targets):
        if not active:
            return None
        for dim in list(active):
            smaller = shrink_step(space, config, dim)
            if smaller is None:
                active.remove(dim)
                continue
            new_values = {c.name: c.metric.value(smaller) for c in constraints}
            if dim.startswith(KERNEL_PREFIX) and not any(
                    new_values[n] < values[n] for n, t in targets.items() if values[n] > t):
                active.remove(dim)  # a smaller kernel that saves nothing of what is needed
                continue
            config, values = smaller, new_values
            if meets(values, targets):
                break
    return Candidate(config, tuple(dims), values)


def generate_candidates(space: SearchSpace, current: SubnetConfig, constraints: Sequence[Constraint],
                        targets: Mapping[str, float], rng: random.Random, count: int, layers: int,
                        attempts_per_candidate: int = 4) -> list[Candidate]:
    """Up to `count` distinct candidates, each shrinking `layers` random dimensions of `current`.

    Draws are retried (at most `attempts_per_candidate` x `count` in all) when a draw cannot
    reach the targets or repeats a candidate. If no draw succeeds, one candidate shrinking
    every shrinkable dimension is tried (it reaches any target the smallest network meets).
    Raises `SearchError` when even that fails.
    """
    if count < 1 or layers < 1:
        raise ValueError(f"generate_candidates: count and layers must be >= 1, got {count}, {layers}")
    current = space.canonical(current)
    shrinkable = [d for d in dimensions(space) if shrink_step(space, current, d) is not None]
    seen = {current}
    out: list[Candidate] = []
    for _ in range(count * attempts_per_candidate):
        if len(out) >= count or not shrinkable:
            break
        dims = rng.sample(shrinkable, min(layers, len(shrinkable)))
        candidate = make_candidate(space, current, constraints, targets, dims)
        if candidate is not None and candidate.config not in seen:
            seen.add(candidate.config)
            out.append(candidate)
    if not out and shrinkable:
        dims = list(shrinkable)
        rng.shuffle(dims)
        candidate = make_candidate(space, current, constraints, targets, dims)
        if candidate is not None:
            out.append(candidate)
    if not out:
        wanted = ", ".join(f"{n} <= {t:.4g}" for n, t in targets.items())
        raise SearchError(f"no candidate of space {space.name} reaches the iteration target ({wanted}); "
                          "the smallest network does not meet it")
    return out
