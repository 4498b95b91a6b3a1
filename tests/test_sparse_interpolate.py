"""The interpolation rules behind the sparse plan: which rule estimated each point."""
from __future__ import annotations

import pytest

from lut_db.interpolate import METHODS, estimate_family, estimate_layers, interpolate_family, support
from lut_db.layer_key import LayerConfig, RuntimeSpec
from lut_db.schema import open_lut
from lut_db.writer import LutWriter, MeasurementRow
from profiler.lut_rows import interpolate_slice
from profiler.plan import Plan, make_plan
from search.spaces import get_space


def test_each_estimate_names_the_rule_that_made_it():
    grid = {(ci, co): 0.1 + 0.001 * ci * co for ci in (8, 32) for co in (8, 64)}
    got = estimate_family(grid, [(8, 8), (16, 32), (64, 64), (8, 128)])
    assert got[(8, 8)] == (grid[(8, 8)], "measured")
    assert got[(16, 32)][1] == "bilinear"
    assert got[(16, 32)][0] == pytest.approx(0.1 + 0.001 * 16 * 32)  # bilinear is exact for cin * cout
    assert got[(64, 64)][1] == "fit" and got[(8, 128)][1] == "fit"  # outside the grid: the MAC line
    assert {how for _, how in got.values()} <= set(METHODS)


def test_diagonal_families_use_the_linear_rule_and_a_missing_corner_the_fit():
    dw = {(c, c): 0.01 * c for c in (16, 64)}
    got = estimate_family(dw, [(32, 32), (128, 128)], macs=lambda ci, co: float(co))
    assert got[(32, 32)] == (pytest.approx(0.32), "linear")
    assert got[(128, 128)] == (pytest.approx(1.28), "fit")
    corners = {(8, 8): 1.0, (8, 32): 2.0, (32, 8): 2.0}  # (32, 32) not measured
    assert estimate_family(corners, [(16, 16)])[(16, 16)][1] == "fit"


def test_estimates_and_interpolation_agree():
    grid = {(ci, co): 0.05 + 0.002 * ci + 0.0001 * ci * co for ci in (8, 40, 96) for co in (16, 48)}
    wanted = [(24, 32), (96, 16), (200, 200), (8, 48)]
    assert interpolate_family(grid, wanted) == {p: ms for p, (ms, _) in estimate_family(grid, wanted).items()}


def test_estimate_layers_keeps_families_apart():
    dw = lambda c, k=3: LayerConfig("dwconv", 14, 14, c, c, kernel=k, groups=c, act="relu")  # noqa: E731
    measured = {dw(c): 0.01 * c for c in (16, 64)}
    measured[dw(16, k=5)] = 9.0  # another family (kernel): a single point, nothing to estimate from
    got = estimate_layers(measured, [dw(32), dw(32, k=5)])
    assert got == {dw(32): (pytest.approx(0.32), "linear")}


def test_support_names_exactly_the_points_an_estimate_reads():
    grid = {(ci, co): 0.1 + 0.001 * ci * co for ci in (8, 32, 64) for co in (8, 64)}
    assert set(support(grid, (16, 32))) == {(8, 8), (8, 64), (32, 8), (32, 64)}
    assert set(support(grid, (32, 16))) == {(32, 8), (32, 64)}  # on a grid line: two points
    assert support(grid, (8, 8)) == ((8, 8),)
    assert set(support(grid, (128, 8))) == set(grid)  # outside: the fit reads the whole family
    cell = {p: grid[p] for p in support(grid, (16, 32))}  # the cell alone gives the same estimate
    assert estimate_family(cell, [(16, 32)]) == estimate_family(grid, [(16, 32)])
    dw = {(c, c): 0.01 * c for c in (16, 64, 256)}
    assert support(dw, (100, 100)) == ((64, 64), (256, 256))


def test_interpolated_rows_interpolate_each_statistic_from_the_same_statistic(tmp_path):
    db = open_lut(tmp_path / "lut.sqlite")
    writer = LutWriter(db)
    rt = RuntimeSpec("tflite", version="2.16.1")
    conv = lambda ci, co: LayerConfig("conv", 14, 14, ci, co, kernel=1, act="relu")  # noqa: E731
    grid = [conv(ci, co) for ci in (8, 32) for co in (8, 32)]
    # p10 is 80% of the median and p90 130%: an interpolated row must keep that shape
    def size(c):
        return c.cin * c.cout / 64

    writer.write([MeasurementRow(c, "dev", rt, n=50, median_ms=0.01 * size(c), mean_ms=0.011 * size(c),
                                 p10_ms=0.008 * size(c), p90_ms=0.013 * size(c), std_ms=0.001 * size(c))
                  for c in grid])
    plan = Plan("sparse", "t", tuple(grid), (conv(16, 24),))
    assert interpolate_slice(db, writer, plan, "dev", rt) == (1, 0)
    got = db.execute("SELECT median_ms, mean_ms, p10_ms, p90_ms, std_ms, source FROM measurements "
                     "WHERE layer_key = ?", [conv(16, 24).key]).fetchone()
    scale = 16 * 24 / 64  # bilinear is exact for cin * cout
    assert got[:5] == pytest.approx((0.01 * scale, 0.011 * scale, 0.008 * scale, 0.013 * scale, 0.001 * scale))
    assert got[5] == "interpolated"
    db.close()


def test_sparse_plan_of_small_spaces_does_not_depend_on_max_points():
    # docs/lut.md "Sparse plan on mbv3-large": the grid density setting only touches wide axes
    space = get_space("mbv3-tiny")
    plans = [make_plan(space, "sparse", max_points=m) for m in (7, 9, 17)]
    assert plans[0].measure == plans[1].measure == plans[2].measure
    assert len(plans[1].measure) < len(plans[1].keys)
