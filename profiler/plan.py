"""Which LUT keys to measure: the `full` and `sparse` plans, deduplicated, in a fixed order.

- `full`: every distinct key of `space.all_layer_configs()`.
- `sparse`: a channel grid per *family* (`lut_db.interpolate.family_key`: same op, size,
  kernel, stride, activation; only channels differ). Along each channel axis of a family
  the grid keeps the smallest and largest value and every `step`-th value in between, with
  `step = max(2, ceil((n - 1) / (max_points - 1)))` for an axis of n distinct values: every
  other choice on small axes (mbv3-tiny), at most `max_points` values on wide ones
  (mbv3-large's head has 120 x 160 width pairs). Keys off the grid are written as
  `source='interpolated'` rows after the grid is measured (bilinear inside the grid, a MAC
  fit outside, `lut_db.interpolate`). A family whose grid would leave nothing to
  interpolate from (fewer than two points) is measured in full.

Order: sorted by key, so two runs of one plan visit keys in the same order and a resumed run
continues where the last committed batch ended. Resume = the plan minus `measured_keys` of
the slice (interpolated rows do not count: a later `full` plan measures them).
"""
from __future__ import annotations

import math
from dataclasses import dataclass
from collections.abc import Iterable, Iterator, Sequence

from lut_db.interpolate import family_key
from lut_db.layer_key import LayerConfig

from .errors import ProfilerError

PLANS = ("full", "sparse")
#: Most grid values per channel axis of one family in the sparse plan (see module docstring).
#: Measured on mbv3-large (`benchmarks/bench_sparse.py`, docs/lut.md "Sparse plan on
#: mbv3-large"): at 9 the interpolation error per key is no larger than at half the density and
#: both are at the measurement's own noise, so a denser grid (17: 1,442 keys) bought nothing.
#: It changes only wide axes: mbv3-tiny's plan is the same for any value >= 7.
SPARSE_MAX_POINTS = 9


@dataclass(frozen=True)
class Plan:
    """What a build of `space` on one slice needs: keys to measure and keys to interpolate."""

    name: str  # "full" or "sparse"
    space: str
    measure: tuple[LayerConfig, ...]  # sorted by key
    interpolate: tuple[LayerConfig, ...]  # sorted by key; empty for `full`

    @property
    def keys(self) -> tuple[LayerConfig, ...]:
        """Every key of the space (measured or interpolated), sorted by key."""
        return tuple(sorted(self.measure + self.interpolate, key=lambda c: c.key))

    def remaining(self, measured_keys: Iterable[str]) -> list[LayerConfig]:
        """Keys of `measure` that the slice has not measured yet (resume), in plan order."""
        done = set(measured_keys)
        return [c for c in self.measure if c.key not in done]


def make_plan(space, name: str = "full", max_points: int = SPARSE_MAX_POINTS) -> Plan:
    """The plan `name` (`full` or `sparse`) of search space `space` (a `SearchSpace`)."""
    if name not in PLANS:
        raise ProfilerError(f"--plan: unknown plan {name!r}, expected one of {', '.join(PLANS)}")
    keys = sorted(space.all_layer_configs(), key=lambda c: c.key)
    if name == "full":
        return Plan("full", space.name, tuple(keys), ())
    grid = set(sparse_grid(keys, max_points))
    return Plan("sparse", space.name, tuple(c for c in keys if c in grid), tuple(c for c in keys if c not in grid))


def grid_values(values: Iterable[int], max_points: int = SPARSE_MAX_POINTS) -> set[int]:
    """Grid of one channel axis: min, max, and every `step`-th value between (see module doc)."""
    values = sorted(set(values))
    n = len(values)
    if n <= 2:
        return set(values)
    step = max(2, math.ceil((n - 1) / max(1, max_points - 1)))
    return set(values[::step]) | {values[0], values[-1]}


def sparse_grid(keys: Sequence[LayerConfig], max_points: int = SPARSE_MAX_POINTS) -> list[LayerConfig]:
    """The keys of `keys` on their family's channel grid (sorted by key)."""
    families: dict[tuple, list[LayerConfig]] = {}
    for cfg in keys:
        families.setdefault(family_key(cfg), []).append(cfg)
    chosen: list[LayerConfig] = []
    for members in families.values():
        if all(c.cin == c.cout for c in members):  # dwconv, SE, gap: one axis
            axis = grid_values((c.cin for c in members), max_points)
            picked = [c for c in members if c.cin in axis]
        else:
            cins = grid_values((c.cin for c in members), max_points)
            couts = grid_values((c.cout for c in members), max_points)
            picked = [c for c in members if c.cin in cins and c.cout in couts]
        if len({(c.cin, c.cout) for c in picked}) < 2:  # nothing to interpolate from
            picked = members
        chosen.extend(picked)
    return sorted(chosen, key=lambda c: c.key)


def batches(items: Sequence, size: int) -> Iterator[list]:
    """`items` in consecutive chunks of at most `size`."""
    size = max(1, int(size))
    for start in range(0, len(items), size):
        yield list(items[start:start + size])


def reference_layer(keys: Sequence[LayerConfig]) -> LayerConfig:
    """The drift reference of a slice: the conv key whose MACs are the median of the plan's
    convs (a mid-cost layer, neither noise-dominated nor slow), ties broken by key."""
    convs = sorted((c for c in keys if c.op == "conv"), key=lambda c: (c.macs(), c.key)) or \
        sorted(keys, key=lambda c: (c.macs(), c.key))
    return convs[len(convs) // 2]
