"""profiler.plan: full/sparse plans, dedupe, deterministic order, resume; predictor fast path."""
from __future__ import annotations

import random
import time

import pytest

from lut_db.errors import MissingLatencyError
from lut_db.interpolate import family_key
from lut_db.reader import LatencyTable
from profiler.errors import ProfilerError
from profiler.plan import batches, grid_values, make_plan, reference_layer, sparse_grid
from profiler.predictor import LatencyPredictor
from search.spaces import get_space


@pytest.fixture(scope="module")
def tiny():
    return get_space("mbv3-tiny")


def test_full_plan_is_every_distinct_key_sorted(tiny):
    plan = make_plan(tiny, "full")
    keys = [c.key for c in plan.measure]
    assert keys == sorted(set(keys))
    assert set(plan.measure) == tiny.all_layer_configs()
    assert plan.interpolate == ()
    assert make_plan(tiny, "full") == plan  # deterministic


def test_plans_cover_every_layer_of_every_subnet(tiny):
    rng = random.Random(1)
    plan = make_plan(tiny, "sparse")
    everything = set(plan.keys)
    for _ in range(50):
        assert set(tiny.layer_configs(tiny.random_config(rng))) <= everything


def test_sparse_plan_measures_a_grid_and_interpolates_the_rest(tiny):
    full, sparse = make_plan(tiny, "full"), make_plan(tiny, "sparse")
    assert set(sparse.measure) | set(sparse.interpolate) == set(full.measure)
    assert not set(sparse.measure) & set(sparse.interpolate)
    assert len(sparse.measure) < 0.6 * len(full.measure)
    # every family keeps its extreme channel values, so interpolation never extrapolates them
    for cfg in full.measure:
        members = [c for c in full.measure if family_key(c) == family_key(cfg)]
        grid = [c for c in sparse.measure if family_key(c) == family_key(cfg)]
        assert max(c.cout for c in grid) == max(c.cout for c in members)
        assert min(c.cin for c in grid) == min(c.cin for c in members)


def test_sparse_plan_of_mbv3_large_is_at_least_ten_times_smaller():
    large = get_space("mbv3-large")
    full, sparse = make_plan(large, "full"), make_plan(large, "sparse")
    assert len(full.measure) >= 10 * len(sparse.measure)


def test_grid_values_keep_ends_and_every_other_or_at_most_max_points():
    assert grid_values([8, 16, 24, 32, 40]) == {8, 24, 40}
    assert grid_values([8, 16, 24, 32]) == {8, 24, 32}
    assert grid_values([8, 16]) == {8, 16}
    wide = grid_values(range(8, 1288, 8), max_points=9)
    assert {8, 1280} <= wide and len(wide) <= 10


def test_a_family_with_a_single_grid_point_is_measured_in_full(tiny):
    from lut_db.layer_key import LayerConfig

    keys = [LayerConfig("conv", 8, 8, 8, c) for c in (8, 16)]
    assert sparse_grid(keys) == sorted(keys, key=lambda c: c.key)


def test_resume_skips_measured_keys_and_keeps_plan_order(tiny):
    plan = make_plan(tiny, "full")
    done = {c.key for c in plan.measure[::3]}
    left = plan.remaining(done | {"not-a-key-of-this-space"})
    assert [c.key for c in left] == [c.key for c in plan.measure if c.key not in done]
    assert plan.remaining({c.key for c in plan.measure}) == []


def test_batches_and_reference_layer(tiny):
    assert [len(b) for b in batches(list(range(10)), 4)] == [4, 4, 2]
    plan = make_plan(tiny, "full")
    ref = reference_layer(plan.measure)
    assert ref.op == "conv" and ref == reference_layer(list(reversed(plan.measure)))


def test_unknown_plan_is_a_user_error(tiny):
    with pytest.raises(ProfilerError, match="--plan: unknown plan 'dense'"):
        make_plan(tiny, "dense")


# ----------------------------------------------------------------------------- predictor
def _table(space, overhead=0.01, drop=()):
    ms = {c.key: 0.001 + c.macs() * 1e-9 + len(c.key) * 1e-6 for c in space.all_layer_configs()}
    for key in drop:
        ms.pop(key)
    return LatencyTable(ms, device_id="dev", runtime="tflite", calibration_ms={"overhead": overhead})


def test_predictor_equals_the_sum_of_layer_configs_plus_overhead_once(tiny):
    table = _table(tiny)
    predictor = LatencyPredictor(tiny, table)
    rng = random.Random(0)
    configs = [tiny.max_config(), tiny.min_config()] + [tiny.random_config(rng) for _ in range(300)]
    for cfg in configs:
        assert predictor.predict(cfg) == pytest.approx(table.predict(tiny.layer_configs(cfg)), rel=1e-12)
    assert predictor.predict(tiny.min_config()) > table.overhead_ms


def test_predictor_reports_missing_keys_up_front(tiny):
    victim = sorted(tiny.all_layer_configs(), key=lambda c: c.key)[5]
    table = _table(tiny, drop=[victim.key])
    with pytest.raises(MissingLatencyError, match=r"1 of the 407 layer keys of space mbv3-tiny are missing"):
        LatencyPredictor(tiny, table)
    assert LatencyPredictor(tiny, table, check=False).missing_keys() == [victim]


def test_predictor_is_fast(tiny):
    predictor = LatencyPredictor(tiny, _table(tiny))
    rng = random.Random(0)
    configs = [tiny.random_config(rng) for _ in range(2000)]
    predictor.predict_many(configs)  # warm the per-block caches
    start = time.perf_counter()
    for _ in range(5):
        predictor.predict_many(configs)
    rate = 5 * len(configs) / (time.perf_counter() - start)
    assert rate > 30_000, f"{rate:.0f} networks/s"  # ~10x this on an idle core; CI is shared
