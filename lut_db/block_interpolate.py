"""Estimate the latency (ms) of a whole-block key (`BlockConfig`) that was not measured.

The block counterpart of `interpolate.py` (same rules, one more channel axis). A block
*family* is every block that differs only in its channels: (in, expand, out) vary, and
what follows from them (the SE width); kind, input size, kernel, stride, activation,
SE or not, residual or not and dtype are fixed. Inside a family:

- point inside the measured grid (all eight surrounding (in, expand, out) corners measured):
  trilinear interpolation. A block's MACs are sums of `in * expand`, `expand`,
  `expand * out` and `out` terms, each multilinear, so a MAC-proportional latency is
  recovered exactly and measured curvature is followed locally (as the layer rule does).
- otherwise (outside the grid, or a corner that cannot exist: a residual block's CBC width is
  at most its input, so the corner (in_lo, e, out_hi) of a near-diagonal point is often not a
  block of the space): least squares over the family's measured points of
  `ms = a + b * in * expand + c * expand + d * expand * hidden + f * expand * out + g * out`,
  one coefficient per layer of the block (expand 1x1, depthwise, SE, project 1x1, add),
  the per-component form of `interpolate.py`'s MAC line. Clamped at 0 ms.
A point that cannot be estimated (fewer than two measured points) is left out of the result:
the caller treats it as missing, never as zero.
"""
from __future__ import annotations

from collections.abc import Iterable, Mapping

import numpy as np

from .interpolate import bracket, weight
from .layer_key import BlockConfig

Point3 = tuple[int, int, int]  # (cin, expand, cout)
#: How a block estimate was made, from the most to the least local rule.
BLOCK_METHODS = ("measured", "trilinear", "fit")


def block_family(cfg: BlockConfig) -> tuple:
    """Every field of a block key except the channel-derived ones (cin, expand, cout, SE width)."""
    return (cfg.kind, cfg.h, cfg.w, cfg.kernel, cfg.stride, cfg.act, cfg.hidden > 0, cfg.residual, cfg.dtype)


def _features(cfg: BlockConfig) -> list[float]:
    """One regressor per layer of the block (see the module docstring); sizes in channels."""
    e = float(cfg.expand)
    return [1.0, cfg.cin * e if cfg.kind == "ir" else 0.0, e, e * cfg.hidden, e * cfg.cout,
            float(cfg.cout) if cfg.residual else 0.0]


def estimate_blocks(measured: Mapping[BlockConfig, float],
                    wanted: Iterable[BlockConfig]) -> dict[BlockConfig, tuple[float, str]]:
    """(ms, method) of each wanted block that can be estimated from the measured blocks of its family."""
    families: dict[tuple, dict[BlockConfig, float]] = {}
    for cfg, ms in measured.items():
        families.setdefault(block_family(cfg), {})[cfg] = ms
    by_family: dict[tuple, list[BlockConfig]] = {}
    for cfg in wanted:
        by_family.setdefault(block_family(cfg), []).append(cfg)
    out: dict[BlockConfig, tuple[float, str]] = {}
    for fam, cfgs in by_family.items():
        out.update(_estimate_family(families.get(fam, {}), cfgs))
    return out


def interpolate_blocks(measured: Mapping[BlockConfig, float],
                       wanted: Iterable[BlockConfig]) -> dict[BlockConfig, float]:
    """`estimate_blocks` without the methods: ms of each wanted block that has an estimate."""
    return {cfg: ms for cfg, (ms, _) in estimate_blocks(measured, wanted).items()}


def _estimate_family(measured: Mapping[BlockConfig, float],
                     wanted: list[BlockConfig]) -> dict[BlockConfig, tuple[float, str]]:
    points = {(c.cin, c.expand, c.cout): ms for c, ms in measured.items()}
    axes = [sorted({p[i] for p in points}) for i in range(3)]
    coef: np.ndarray | None = None
    fitted = False
    out: dict[BlockConfig, tuple[float, str]] = {}
    for cfg in wanted:
        point = (cfg.cin, cfg.expand, cfg.cout)
        if point in points:
            out[cfg] = (points[point], "measured")
            continue
        est = _trilinear(points, axes, point)
        if est is not None:
            out[cfg] = (est, "trilinear")
            continue
        if not fitted:
            coef, fitted = _fit(measured), True
        if coef is not None:
            out[cfg] = (max(0.0, float(np.dot(coef, _features(cfg)))), "fit")
    return out


def _trilinear(points: Mapping[Point3, float], axes: list[list[int]], point: Point3) -> float | None:
    brackets = [bracket(axis, x) for axis, x in zip(axes, point)]
    if any(b is None for b in brackets):
        return None
    total = 0.0
    weights = [weight(*b, x) for b, x in zip(brackets, point)]
    for i, ci in enumerate(brackets[0]):
        for j, e in enumerate(brackets[1]):
            for k, co in enumerate(brackets[2]):
                ms = points.get((ci, e, co))
                if ms is None:
                    return None
                w = ((weights[0] if i else 1 - weights[0]) * (weights[1] if j else 1 - weights[1])
                     * (weights[2] if k else 1 - weights[2]))
                total += w * ms
    return total


def _fit(measured: Mapping[BlockConfig, float]) -> np.ndarray | None:
    """Least-squares coefficients over the family (minimum norm when features coincide), None if
    fewer than two measured points."""
    if len(measured) < 2:
        return None
    x = np.array([_features(c) for c in measured], dtype=float)
    y = np.array(list(measured.values()), dtype=float)
    scale = np.abs(x).max(axis=0)
    scale[scale == 0] = 1.0
    coef, *_ = np.linalg.lstsq(x / scale, y, rcond=None)
    return coef / scale
