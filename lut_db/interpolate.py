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
#: How an estimate was made (`estimate_family`), from the most to the least local rule.
METHODS = ("measured", "linear", "bilinear", "fit")
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
    return {p: ms for p, (ms, _) in estimate_family(measured, wanted, macs).items()}


def estimate_family(measured: Mapping[Point, float], wanted: Iterable[Point],
                    macs: Callable[[int, int], float] | None = None) -> dict[Point, tuple[float, str]]:
    """`interpolate_family`, each estimate with the rule that gave it (one of `METHODS`).

    `measured` (the point itself), `linear` (1-D, between two measured points of a diagonal
    family), `bilinear` (inside the grid) or `fit` (the family's MAC line: outside the grid or
    a corner missing). The sparse-plan benchmark splits its error by this."""
    size = macs or (lambda cin, cout: float(cin * cout))
    diagonal = all(ci == co for ci, co in measured)
    channels = sorted(ci for ci, _ in measured) if diagonal else []
    cins = sorted({ci for ci, _ in measured})
    couts = sorted({co for _, co in measured})
    line: tuple[float, float] | None = None
    fitted = False
    out: dict[Point, tuple[float, str]] = {}
    for point in wanted:
        if point in measured:
            out[point] = (measured[point], "measured")
            continue
        if diagonal and point[0] == point[1]:
            est, how = _linear_on_diagonal(measured, channels, point[0]), "linear"
        else:
            est, how = _bilinear(measured, cins, couts, point), "bilinear"
        if est is None:
            if not fitted:
                line, fitted = _fit_line(measured, size), True
            if line is not None:
                est, how = max(0.0, line[0] + line[1] * size(*point)), "fit"
        if est is not None:
            out[point] = (est, how)
    return out


def interpolate_layers(measured: Mapping[LayerConfig, float],
                       wanted: Iterable[LayerConfig]) -> dict[LayerConfig, float]:
    """`interpolate_family` over layer configs: each wanted layer from its own family (ms)."""
    return {cfg: ms for cfg, (ms, _) in estimate_layers(measured, wanted).items()}


def estimate_layers(measured: Mapping[LayerConfig, float],
                    wanted: Iterable[LayerConfig]) -> dict[LayerConfig, tuple[float, str]]:
    """`estimate_family` over layer configs: (ms, method) of each wanted layer that has one."""
    families = group_by_family(measured)
    by_family: dict[Family, list[LayerConfig]] = {}
    for cfg in wanted:
        by_family.setdefault(family_key(cfg), []).append(cfg)
    out: dict[LayerConfig, tuple[float, str]] = {}
    for fam, cfgs in by_family.items():
        points = families.get(fam, {})
        est = estimate_family(points, [(c.cin, c.cout) for c in cfgs], family_macs(cfgs[0]))
        out.update({c: est[(c.cin, c.cout)] for c in cfgs if (c.cin, c.cout) in est})
    return out


def support(measured: Iterable[Point], point: Point) -> tuple[Point, ...]:
    """The measured points `estimate_family` reads to estimate `point`: itself when measured,
    the two ends of its diagonal segment, the four corners of its grid cell, or (the `fit`
    rule) every measured point. Lets a benchmark time a key next to exactly what estimates it."""
    measured = set(measured)
    if point in measured:
        return (point,)
    if all(ci == co for ci, co in measured) and point[0] == point[1]:
        b = bracket(sorted(ci for ci, _ in measured), point[0])
        if b is not None:
            return tuple(dict.fromkeys((c, c) for c in b))
    else:
        bi = bracket(sorted({ci for ci, _ in measured}), point[0])
        bo = bracket(sorted({co for _, co in measured}), point[1])
        if bi is not None and bo is not None:
            corners = tuple(dict.fromkeys((ci, co) for ci in bi for co in bo))
            if all(c in measured for c in corners):
                return corners
    return tuple(sorted(measured))


def bracket(values: list[int], x: int) -> tuple[int, int] | None:
    """Neighbours lo <= x <= hi in sorted `values` (lo == hi when x is one), None outside."""
    if not values or x < values[0] or x > values[-1]:
        return None
    i = bisect.bisect_left(values, x)
    return (x, x) if values[i] == x else (values[i - 1], values[i])


def weight(lo: int, hi: int, x: int) -> float:
    """Where x sits between lo and hi (0 at lo, 1 at hi): the linear interpolation weight."""
    return 0.0 if hi == lo else (x - lo) / (hi - lo)


def _bilinear(measured: Mapping[Point, float], cins: list[int], couts: list[int],
              point: Point) -> float | None:
    bi, bo = bracket(cins, point[0]), bracket(couts, point[1])
    if bi is None or bo is None:
        return None
    corners = [(ci, co) for ci in bi for co in bo]
    if any(c not in measured for c in corners):
        return None
    t, u = weight(*bi, point[0]), weight(*bo, point[1])
    f00, f01, f10, f11 = (measured[c] for c in corners)
    return (1 - t) * (1 - u) * f00 + (1 - t) * u * f01 + t * (1 - u) * f10 + t * u * f11


def _linear_on_diagonal(measured: Mapping[Point, float], channels: list[int], c: int) -> float | None:
    b = bracket(channels, c)
    if b is None:
        return None
    t = weight(*b, c)
    return (1 - t) * measured[(b[0], b[0])] + t * measured[(b[1], b[1])]


def _fit_line(measured: Mapping[Point, float], size: Callable[[int, int], float]) -> tuple[float, float] | None:
    """Least-squares (intercept ms, slope ms/MAC) over the family, None if underdetermined."""
    xs = np.array([size(*p) for p in measured], dtype=float)
    if len(np.unique(xs)) < 2:
        return None
    ys = np.array(list(measured.values()), dtype=float)
    slope, intercept = np.polyfit(xs, ys, 1)
    return float(intercept), float(slope)
