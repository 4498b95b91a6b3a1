"""MCD: schedule, candidate generation, the loop (landing, determinism, resume, constraints).

Latencies come from a synthetic LUT (an analytic a*MACs + b model per op written with
lut_db's writer: a test fixture, see test_mcd_fixtures.py); scores from a deterministic
stand-in for super-network accuracy, so every property is exact and fast.
"""
from __future__ import annotations

import json
import random

import pytest

from lut_db import LatencyTable
from search.errors import SearchError
from search.mcd import (Constraint, LutLatencyMetric, MacsMetric, MCDConfig, ReductionSchedule, dimensions,
                        generate_candidates, make_candidate, read_history, run_mcd, shrink_step)
from search.spaces import get_space
from test_mcd_fixtures import DEVICE, importance_scorer, synth_lut


@pytest.fixture(scope="module")
def space():
    return get_space("mbv3-tiny")


@pytest.fixture(scope="module")
def table(tmp_path_factory):
    path = synth_lut(tmp_path_factory.mktemp("lut") / "lut.sqlite")
    return LatencyTable.load(path, DEVICE, "tflite")


@pytest.fixture
def latency(space, table):
    return LutLatencyMetric(space, table)


def quiet(_line):
    pass


# ----------------------------------------------------------------------------- schedule
def test_schedule_follows_netadapt_decay_and_lands_on_the_limit():
    schedule = ReductionSchedule(initial_fraction=0.025, decay=0.96, min_fraction=0.0)
    assert schedule.reduction(1, 100.0) == pytest.approx(2.5)
    assert schedule.reduction(3, 100.0) == pytest.approx(2.5 * 0.96 ** 2)
    assert schedule.target(1, 100.0, 100.0, 50.0) == pytest.approx(97.5)
    assert schedule.target(9, 51.0, 100.0, 50.0) == 50.0  # never below the constraint
    assert schedule.target(2, 40.0, 100.0, 50.0) == 50.0  # met: stay within it


def test_schedule_floor_keeps_low_targets_reachable():
    plain = ReductionSchedule(0.025, 0.96, 0.0)
    assert sum(plain.reduction(i, 1.0) for i in range(1, 500)) < 0.63  # V1's series stalls at 62.5 %
    floored = ReductionSchedule(0.025, 0.96, 0.005)
    assert sum(floored.reduction(i, 1.0) for i in range(1, 200)) > 0.9


def test_schedule_rejects_bad_values():
    with pytest.raises(ValueError):
        ReductionSchedule(initial_fraction=0.0)
    with pytest.raises(ValueError):
        ReductionSchedule(decay=1.5)


# ----------------------------------------------------------------------------- candidates
def test_shrink_step_widths_kernels_and_cbc_removal(space):
    cfg = space.max_config()
    assert shrink_step(space, cfg, "s0.b1.expand").widths["s0.b1.expand"] == 64
    assert shrink_step(space, cfg, "kernel:s0.b1").kernels["s0.b1"] == 5
    # a residual block's CBC width reaches 0 and removes the block (expand follows)
    cfg = cfg.replace(widths={"s0.b1.out": 8})
    removed = shrink_step(space, space.canonical(cfg), "s0.b1.out")
    assert removed.widths["s0.b1.out"] == 0 and removed.widths["s0.b1.expand"] == 0
    block = next(b for b in space.blocks if b.name == "s0.b1")
    assert space.is_removed(block, removed)
    assert shrink_step(space, removed, "kernel:s0.b1") is None  # kernel of a removed block: no change
    assert shrink_step(space, space.min_config(), "stem") is None


def test_candidate_meets_target_just_enough(space, latency):
    current = space.max_config()
    target = 0.8 * latency.value(current)
    rng = random.Random(0)
    dims = rng.sample(dimensions(space), 3)
    cand = make_candidate(space, current, [Constraint(latency, 1.0)], {"latency_ms": target}, dims)
    if cand is None:
        pytest.skip("this draw cannot reach the target")  # not with seed 0, kept for clarity
    assert cand.values["latency_ms"] <= target
    # just enough: undoing any one of its shrinks (one step back) would miss the target
    assert cand.config != current and set(cand.shrunk) == set(dims)


def test_generate_candidates_distinct_and_on_target(space, latency):
    current = space.max_config()
    target = 0.9 * latency.value(current)
    cands = generate_candidates(space, current, [Constraint(latency, 1.0)], {"latency_ms": target},
                                random.Random(1), count=12, layers=3)
    assert len(cands) >= 8
    assert len({c.config for c in cands}) == len(cands)
    for cand in cands:
        assert cand.values["latency_ms"] <= target + 1e-9
        assert len(cand.shrunk) == 3


def test_generate_candidates_fails_when_nothing_reaches(space, latency):
    with pytest.raises(SearchError, match="no candidate"):
        generate_candidates(space, space.max_config(), [Constraint(latency, 0.0)], {"latency_ms": 0.01},
                            random.Random(0), count=4, layers=2)


# ----------------------------------------------------------------------------- the loop
def test_mcd_lands_on_the_constraint(space, latency, tmp_path):
    limit = 0.5 * latency.value(space.max_config())
    result = run_mcd(space, [Constraint(latency, limit)], importance_scorer(space), tmp_path,
                     MCDConfig(candidates=8, layers=3), log=quiet)
    assert result.done
    assert limit * 0.98 <= result.values["latency_ms"] <= limit  # landed: within 2 % under the constraint
    records = read_history(tmp_path)
    history = [r for r in records if r.get("phase") != "land"]  # MCD's iterations (the landing: test_mcd_landing)
    assert [r["iteration"] for r in history] == list(range(result.iteration + 1))
    assert [r["iteration"] for r in records] == list(range(result.iteration + result.landing_steps + 1))
    assert history[-1]["targets"]["latency_ms"] == pytest.approx(limit)  # last target is the constraint
    assert all(r["targets"]["latency_ms"] > limit for r in history[1:-1])
    final = json.loads((tmp_path / "final.json").read_text())
    assert final["latency_ms"] == pytest.approx(result.values["latency_ms"])
    assert final["iterations"] == result.iteration and final["landing_steps"] == result.landing_steps
    assert final["unused_budget"]["latency_ms"] == pytest.approx((limit - result.values["latency_ms"]) / limit)
    assert final["depth"] <= len(space.blocks) and final["block_strings"][0].startswith("stem")
    assert final["macs"] == space.macs(result.config)
    # every iteration's winner is its best-scored candidate and meets the iteration target
    for record in history[1:]:
        scores = [c["score"] for c in record["candidates"]]
        assert record["score"] == max(scores)
        assert all(c["values"]["latency_ms"] <= record["targets"]["latency_ms"] + 1e-9 for c in record["candidates"])


def test_mcd_is_deterministic_with_a_seed(space, latency, tmp_path):
    limit = 0.6 * latency.value(space.max_config())
    runs = [run_mcd(space, [Constraint(latency, limit)], importance_scorer(space), tmp_path / str(i),
                    MCDConfig(candidates=6, layers=2, seed=7), log=quiet) for i in range(2)]
    assert runs[0].config == runs[1].config and runs[0].iteration == runs[1].iteration
    strip = [[{k: v for k, v in r.items() if not k.endswith("_s")} for r in read_history(tmp_path / str(i))]
             for i in range(2)]
    assert strip[0] == strip[1]
    other = run_mcd(space, [Constraint(latency, limit)], importance_scorer(space), tmp_path / "other",
                    MCDConfig(candidates=6, layers=2, seed=8), log=quiet)
    assert read_history(tmp_path / "other")[1]["candidates"] != read_history(tmp_path / "0")[1]["candidates"]
    assert other.done


def test_resume_after_stop_gives_the_same_result(space, latency, tmp_path):
    limit = 0.5 * latency.value(space.max_config())
    constraints = [Constraint(latency, limit)]
    full = run_mcd(space, constraints, importance_scorer(space), tmp_path / "full", MCDConfig(candidates=6),
                   log=quiet)
    assert full.iteration >= 3
    part = run_mcd(space, constraints, importance_scorer(space), tmp_path / "part",
                   MCDConfig(candidates=6, stop_after=2), log=quiet)
    assert not part.done and part.iteration == 2 and not (tmp_path / "part" / "final.json").exists()
    state = json.loads((tmp_path / "part" / "state.json").read_text())
    assert state["iteration"] == 2 and state["rng_state"]
    with pytest.raises(SearchError, match="already holds a search"):
        run_mcd(space, constraints, importance_scorer(space), tmp_path / "part", MCDConfig(candidates=6), log=quiet)
    with pytest.raises(SearchError, match="--resume"):
        run_mcd(space, [Constraint(latency, limit * 0.9)], importance_scorer(space), tmp_path / "part",
                MCDConfig(candidates=6), resume=True, log=quiet)
    resumed = run_mcd(space, constraints, importance_scorer(space), tmp_path / "part", MCDConfig(candidates=6),
                      resume=True, log=quiet)
    assert resumed.done and resumed.config == full.config and resumed.iteration == full.iteration
    hist_full = [r["config"] for r in read_history(tmp_path / "full")]
    hist_part = [r["config"] for r in read_history(tmp_path / "part")]
    assert hist_full == hist_part


def test_resume_drops_history_written_after_the_checkpoint(space, latency, tmp_path):
    limit = 0.5 * latency.value(space.max_config())
    run_mcd(space, [Constraint(latency, limit)], importance_scorer(space), tmp_path, MCDConfig(stop_after=1),
            log=quiet)
    with open(tmp_path / "history.jsonl", "a") as f:  # a kill between the history and the state write
        f.write(json.dumps({"iteration": 2, "config": {}}) + "\n{\"torn")
    run_mcd(space, [Constraint(latency, limit)], importance_scorer(space), tmp_path, MCDConfig(stop_after=1),
            resume=True, log=quiet)
    iterations = [r["iteration"] for r in read_history(tmp_path)]
    assert iterations == [0, 1, 2]


def test_multi_constraint_latency_and_macs(space, latency, tmp_path):
    macs = MacsMetric(space)
    top = space.max_config()
    lat_limit, mac_limit = 0.7 * latency.value(top), 0.4 * macs.value(top)
    result = run_mcd(space, [Constraint(latency, lat_limit), Constraint(macs, mac_limit)],
                     importance_scorer(space), tmp_path, MCDConfig(candidates=6), log=quiet)
    assert result.values["latency_ms"] <= lat_limit and result.values["macs"] <= mac_limit
    for record in read_history(tmp_path)[1:]:
        for cand in record["candidates"]:
            assert all(cand["values"][n] <= t * (1 + 1e-9) for n, t in record["targets"].items())


def test_macs_metric_search(space, tmp_path):
    macs = MacsMetric(space)
    limit = 0.3 * macs.value(space.max_config())
    result = run_mcd(space, [Constraint(macs, limit)], importance_scorer(space), tmp_path,
                     MCDConfig(candidates=4), log=quiet)
    assert 0.85 * limit <= result.values["macs"] <= limit


def test_start_network_already_meets_the_constraint(space, latency, tmp_path):
    result = run_mcd(space, [Constraint(latency, 1e6)], importance_scorer(space), tmp_path, log=quiet)
    assert result.done and result.iteration == 0 and result.config == space.max_config()


def test_lut_metric_matches_the_table(space, table, latency):
    cfg = space.random_config(random.Random(3))
    assert latency.value(cfg) == pytest.approx(table.predict(space.layer_configs(cfg)))
    assert latency.value(cfg) < latency.value(space.max_config())
