"""Estimate the latency (ms) of a layer that was not measured from measured neighbours.

A *family* is every layer that differs only in its channel counts (cin, cout, and what
follows from them: SE `hidden`, depthwise `groups`); inside a family latency is a smooth
function of (cin, cout). The profiler's `sparse` plan measures a subset of channel values
and fills the rest with `interpolate_layers`; `LatencyTable(interpolate=True)` does the same
at read time for a key nobody measured.

The method, and why:
- point inside the measured grid (the four surrounding (cin, cout) corners measured):
  bilinear interpolation. Conv/linear MACs are `cin * cout`, itself bilinear, so a
  MAC-proportional latency is recovered exactly, and measured curvature (cache, tiling
  effects) is followed locally instead of being averaged away.
- families measured along one line (dwconv, SE, add: cin == cout; or one side fixed, e.g.
  the stem's cin=3): the same rule degenerates to 1-D linear interpolation along that line.
- anything else (outside the grid, or corners missing): `ms = a + b * MACs`, fitted by least
  squares over all of the family's points. A global fit is less sensitive to one noisy
  point than extending the last segment, and MACs are the quantity latency scales with when
  channels grow. Extrapolated values are clamped at 0 ms.
A point that cannot be estimated (fewer than two distinct MAC values to fit) is left out of
the result: the caller must treat it as missing, never as zero.
"""
from __future__ import annotations

import bisect
import dataclasses
from collections.abc import Callable, Iterable, Mapping

import numpy as np

from .layer_key import LayerConfig

Point = tuple[int, int]  # (cin, cout)
Family = tuple  # see family_key


def family_key(cfg: LayerConfig) -> Family:
    """Every field of `cfg` except the channel-derived ones (cin, cout, hidden, dw groups)."""
    groups = 0 if cfg.op == "dwconv" else cfg.groups
    return (cfg.op, cfg.h, cfg.w, cfg.kernel, cfg.stride, groups, cfg.act, cfg.dtype)


def member(cfg: LayerConfig, cin: int, cout: int) -> LayerConfig:
    """The layer of `cfg`'s family with channels (cin, cout); `hidden` is kept as is."""
    groups = cin if cfg.op == "dwconv" and cfg.groups == cfg.cin else cfg.groups
    return dataclasses.replace(cfg, cin=cin, cout=cout, groups=groups)


def family_macs(cfg: LayerConfig) -> Callable[[int, int], float]:
    """MACs of the family member at (cin, cout); channel count for ops without MACs (upsample)."""
    return lambda cin, cout: float(member(cfg, cin, cout).macs() or max(cin, cout))


def group_by_family(measured: Mapping[LayerConfig, float]) -> dict[Family, dict[Point, float]]:
    """Measured latencies (ms) grouped by family, each as {(cin, cout): ms}."""
    families: dict[Family, dict[Point, float]] = {}
    for cfg, ms in measured.items():
        families.setdefault(family_key(cfg), {})[(cfg.cin, cfg.cout)] = ms
    return families


def interpolate_family(measured: Mapping[Point, float], wanted: Iterable[Point],
                       macs: Callable[[int, int], float] | None = None) -> dict[Point, float]:
    """Latency in ms at each wanted (cin, cout) of one family, from its measured points.

    `macs(cin, cout)` is the size used to extrapolate (default `cin * cout`, right for conv
    and linear; pass `family_macs(cfg)` for other ops). Measured points are returned as is;
    points that cannot be estimated are absent from the result.
    """
    size = macs or (lambda cin, cout: float(cin * cout))
    diagonal = all(ci == co for ci, co in measured)
    channels = sorted(ci for ci, _ in measured) if diagonal else []
    cins = sorted({ci for ci, _ in measured})
    couts = sorted({co for _, co in measured})
    line: tuple[float, float] | None = None
    fitted = False
    out: dict[Point, float] = {}
    for point in wanted:
        if point in measured:
            out[point] = measured[point]
            continue
        if diagonal and point[0] == point[1]:
            est = _linear_on_diagonal(measured, channels, point[0])
        else:
            est = _bilinear(measured, cins, couts, point)
        if est is None:
            if not fitted:
                line, fitted = _fit_line(measured, size), True
            if line is not None:
                est = max(0.0, line[0] + line[1] * size(*point))
        if est is not None:
            out[point] = est
    return out


def interpolate_layers(measured: Mapping[LayerConfig, float],
                       wanted: Iterable[LayerConfig]) -> dict[LayerConfig, float]:
    """`interpolate_family` over layer configs: each wanted layer from its own family (ms)."""
    families = group_by_family(measured)
    by_family: dict[Family, list[LayerConfig]] = {}
    for cfg in wanted:
        by_family.setdefault(family_key(cfg), []).append(cfg)
    out: dict[LayerConfig, float] = {}
    for fam, cfgs in by_family.items():
        points = families.get(fam, {})
        est = interpolate_family(points, [(c.cin, c.cout) for c in cfgs], family_macs(cfgs[0]))
        out.update({c: est[(c.cin, c.cout)] for c in cfgs if (c.cin, c.cout) in est})
    return out


def _bracket(values: list[int], x: int) -> tuple[int, int] | None:
    """Neighbours lo <= x <= hi in sorted `values` (lo == hi when x is one), None outside."""
    if not values or x < values[0] or x > values[-1]:
        return None
    i = bisect.bisect_left(values, x)
    return (x, x) if values[i] == x else (values[i - 1], values[i])


def _weight(lo: int, hi: int, x: int) -> float:
    return 0.0 if hi == lo else (x - lo) / (hi - lo)


def _bilinear(measured: Mapping[Point, float], cins: list[int], couts: list[int],
              point: Point) -> float | None:
    bi, bo = _bracket(cins, point[0]), _bracket(couts, point[1])
    if bi is None or bo is None:
        return None
    corners = [(ci, co) for ci in bi for co in bo]
    if any(c not in measured for c in corners):
        return None
    t, u = _weight(*bi, point[0]), _weight(*bo, point[1])
    f00, f01, f10, f11 = (measured[c] for c in corners)
    return (1 - t) * (1 - u) * f00 + (1 - t) * u * f01 + t * (1 - u) * f10 + t * u * f11


def _linear_on_diagonal(measured: Mapping[Point, float], channels: list[int], c: int) -> float | None:
    b = _bracket(channels, c)
    if b is None:
        return None
    t = _weight(*b, c)
    return (1 - t) * measured[(b[0], b[0])] + t * measured[(b[1], b[1])]


def _fit_line(measured: Mapping[Point, float], size: Callable[[int, int], float]) -> tuple[float, float] | None:
    """Least-squares (intercept ms, slope ms/MAC) over the family, None if underdetermined."""
    xs = np.array([size(*p) for p in measured], dtype=float)
    if len(np.unique(xs)) < 2:
        return None
    ys = np.array(list(measured.values()), dtype=float)
    slope, intercept = np.polyfit(xs, ys, 1)
    return float(intercept), float(slope)
