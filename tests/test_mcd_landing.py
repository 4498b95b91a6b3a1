"""Landing (search/mcd/landing.py): after MCD first meets the constraint, grow back into the budget.

Latencies come from the synthetic LUT fixture (an analytic a*MACs + b model per op written
with lut_db's writer, test_mcd_fixtures.py); scores from the deterministic stand-in, whose
score is additive over dimensions, so "no better network exists in the band" can be checked
exhaustively.
"""
from __future__ import annotations

import json
import random

import pytest

from search.mcd import Constraint, MacsMetric, MCDConfig, read_history, run_mcd
from search.mcd.baselines import random_baseline, repair_into_band
from search.mcd.candidates import dimensions, grow_step, shrink_step
from search.mcd.landing import LAND_TOLERANCE, fill, in_band
from search.spaces import SubnetConfig
from test_mcd_fixtures import importance_scorer


def quiet(_line):
    pass


def best_in_band(space, metric, limit, floor):
    """(score, value) of every network of `space` with stand-in score >= `floor` and value in
    [0.98 limit, limit]: exhaustive over the configs whose additive score penalty fits 1 - floor."""
    scorer, top = importance_scorer(space), space.max_config()
    budget = 1 - floor + 1e-9
    options = []
    for name, var in space.width_vars.items():
        options.append([({name: c}, {}, 1 - scorer(top.replace(widths={name: c}))) for c in var.choices])
    for block in space.blocks:
        if len(block.kernel_choices) > 1:
            options.append([({}, {block.name: k}, 1 - scorer(top.replace(kernels={block.name: k})))
                            for k in block.kernel_choices])
    options = [[o for o in opts if o[2] <= budget] for opts in options]
    found = []

    def walk(i, penalty, widths, kernels):
        if penalty > budget:
            return
        if i == len(options):
            cfg = space.canonical(SubnetConfig(widths, kernels))
            score, value = scorer(cfg), metric.value(cfg)
            if score >= floor and 0.98 * limit <= value <= limit:
                found.append((score, value))
            return
        for w, k, p in options[i]:
            walk(i + 1, penalty + p, {**widths, **w}, {**kernels, **k})

    walk(0, 0.0, {}, {})
    return found


def test_grow_step_undoes_shrink_step_and_restores_removed_blocks(space):
    cfg = space.max_config()
    for dim in dimensions(space):
        smaller = shrink_step(space, cfg, dim)
        if smaller is not None and smaller.widths.get(dim, 1) != 0:
            # the dimension itself is back; a CBC width its stream clamped stays (a step is one dimension)
            grown, key = grow_step(space, smaller, dim), dim.split(":")[-1]
            assert (grown.widths | grown.kernels)[key] == (cfg.widths | cfg.kernels)[key], dim
        assert grow_step(space, cfg, dim) is None  # the max network cannot grow
    removed = space.canonical(cfg.replace(widths={"s0.b1.out": 0}))
    assert removed.widths["s0.b1.expand"] == 0
    back = grow_step(space, removed, "s0.b1.out")
    assert back.widths["s0.b1.out"] == 8 and back.widths["s0.b1.expand"] == 8  # both back at one step
    assert grow_step(space, removed, "kernel:s0.b1") is None  # the kernel of a removed block


@pytest.mark.parametrize("seed", [0, 1])
def test_every_latency_target_is_landed_within_two_percent(space, latency, tmp_path, seed):
    """Every target lands in [0.98 t, t], unless no network of the space in that band scores
    at least as well as the landed one (checked exhaustively): then staying below is right."""
    top = latency.value(space.max_config())
    report = []
    for fraction in (0.95, 0.9, 0.8, 0.7, 0.6, 0.5, 0.4, 0.3, 0.25):
        limit = fraction * top
        out = tmp_path / f"{fraction}"
        result = run_mcd(space, [Constraint(latency, limit)], importance_scorer(space), out, MCDConfig(seed=seed),
                         log=quiet)
        final = json.loads((out / "final.json").read_text())
        unused = final["unused_budget"]["latency_ms"]
        assert 0 <= unused and result.values["latency_ms"] <= limit
        report.append((fraction, round(unused, 4)))
        if unused > LAND_TOLERANCE:
            better = best_in_band(space, latency, limit, result.score)
            assert better == [], f"target {fraction}: {unused:.1%} unused but {better[:3]} in the band score higher"
    assert sum(u <= LAND_TOLERANCE for _, u in report) >= len(report) - 1, report


def test_landing_steps_are_recorded_and_never_end_below_mcd(space, latency, tmp_path):
    limit = 0.8 * latency.value(space.max_config())
    constraints = [Constraint(latency, limit)]
    plain = run_mcd(space, constraints, importance_scorer(space), tmp_path / "plain", MCDConfig(land=False),
                    log=quiet)
    landed = run_mcd(space, constraints, importance_scorer(space), tmp_path / "land", MCDConfig(), log=quiet)
    # up to the moment the constraint first holds, the same search (same candidates, same schedule)
    def untimed(records):
        return [{k: v for k, v in r.items() if not k.endswith("_s")} for r in records]

    mcd = [r for r in read_history(tmp_path / "land") if r.get("phase") != "land"]
    assert untimed(mcd) == untimed(read_history(tmp_path / "plain"))
    assert plain.iteration == landed.iteration and plain.landing_steps == 0
    plain_unused = (limit - plain.values["latency_ms"]) / limit
    assert plain_unused > 0.05  # this target: MCD's last step overshoots (a kernel step)
    assert landed.values["latency_ms"] >= 0.98 * limit and landed.score >= plain.score
    steps = [r for r in read_history(tmp_path / "land") if r.get("phase") == "land"]
    assert len(steps) == landed.landing_steps >= 1
    before = plain.values
    for step in steps:  # each step: its candidates fit, the kept one fills more of the budget
        assert all(c["values"]["latency_ms"] <= limit * (1 + 1e-9) for c in step["candidates"])
        assert step["unused_budget"]["latency_ms"] == pytest.approx((limit - step["values"]["latency_ms"]) / limit)
        if step["kept"]:
            assert fill(step["values"], {"latency_ms": limit}) > fill(before, {"latency_ms": limit})
            assert step["config"] == step["candidates"][step["best"]]["config"]
        before = step["values"]
    final = json.loads((tmp_path / "land" / "final.json").read_text())
    assert final["landing_steps"] == len(steps)
    assert final["landing_scored"] == sum(len(s["candidates"]) for s in steps)
    assert json.loads((tmp_path / "plain" / "final.json").read_text())["unused_budget"]["latency_ms"] == \
        pytest.approx(plain_unused)


def test_land_budget_bounds_the_scored_candidates(space, latency, tmp_path):
    limit = 0.25 * latency.value(space.max_config())
    result = run_mcd(space, [Constraint(latency, limit)], importance_scorer(space), tmp_path, MCDConfig(land_budget=5),
                     log=quiet)
    final = json.loads((tmp_path / "final.json").read_text())
    assert 0 < final["landing_scored"] <= 5 and result.done


def test_landing_with_latency_and_macs(space, latency, tmp_path):
    macs = MacsMetric(space)
    top = space.max_config()
    limits = {"latency_ms": 0.6 * latency.value(top), "macs": 0.7 * macs.value(top)}
    result = run_mcd(space, [Constraint(latency, limits["latency_ms"]), Constraint(macs, limits["macs"])],
                     importance_scorer(space), tmp_path, MCDConfig(), log=quiet)
    assert all(result.values[n] <= t * (1 + 1e-9) for n, t in limits.items())
    assert in_band(result.values, limits)  # the binding constraint is landed within 2 %


def test_resume_during_landing_gives_the_same_result(space, latency, tmp_path):
    limit = 0.25 * latency.value(space.max_config())
    constraints = [Constraint(latency, limit)]
    full = run_mcd(space, constraints, importance_scorer(space), tmp_path / "full", MCDConfig(), log=quiet)
    assert full.landing_steps >= 2
    part = run_mcd(space, constraints, importance_scorer(space), tmp_path / "part",
                   MCDConfig(stop_after=full.iteration + 1), log=quiet)
    assert not part.done and part.landing_steps == 1
    state = json.loads((tmp_path / "part" / "state.json").read_text())
    assert state["landing"]["steps"] == 1 and state["iteration"] == full.iteration
    resumed = run_mcd(space, constraints, importance_scorer(space), tmp_path / "part", MCDConfig(), resume=True,
                      log=quiet)
    assert resumed.config == full.config and resumed.landing_steps == full.landing_steps
    configs = [[r["config"] for r in read_history(tmp_path / d)] for d in ("part", "full")]
    assert configs[0] == configs[1]


def test_fair_random_search_networks_sit_inside_the_band(space, latency):
    limit = 0.5 * latency.value(space.max_config())
    constraints = [Constraint(latency, limit)]
    rng = random.Random(0)
    repaired = [repair_into_band(space, space.random_config(rng), constraints, rng) for _ in range(40)]
    kept = [c for c in repaired if c is not None]
    assert len(kept) >= 30  # most draws reach the band on this space
    assert all(0.98 * limit <= latency.value(c) <= limit for c in kept)
    result = random_baseline(space, constraints, importance_scorer(space), budget=12, seed=3)
    assert result.evaluations == 12 and 0.98 * limit <= result.values["latency_ms"] <= limit
