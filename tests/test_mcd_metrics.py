"""Metric plug-ins (measured latency through the local agent) and the baselines."""
from __future__ import annotations

import random

import pytest
import torch

from search.mcd import Constraint, MacsMetric, MCDConfig, MeasuredLatencyMetric, read_history, run_mcd
from search.mcd.baselines import netadapt_v1, random_baseline, uniform_baseline
from test_mcd_fixtures import importance_scorer


def test_measured_metric_through_the_local_agent(space, tmp_path):
    """A real ONNX measurement of whole candidate networks on this host (small, ~seconds)."""
    from device_agents.local import LocalAgent
    from device_agents.contract import BenchmarkSettings
    settings = BenchmarkSettings(runtime="onnx", warmup_runs=3, min_runs=10, min_seconds=0.01)
    metric = MeasuredLatencyMetric(space, LocalAgent(), "onnx", settings=settings, workdir=tmp_path)
    big, small = metric.value(space.max_config()), metric.value(space.min_config())
    assert big > 0 and small > 0 and metric.evaluations == 2
    assert metric.value(space.max_config()) == big and metric.evaluations == 2  # cached
    assert len(list(tmp_path.glob("cand_*.onnx"))) == 2
    # one MCD iteration under the measured metric: every candidate meets its measured target
    result = run_mcd(space, [Constraint(metric, small * 1.01)], importance_scorer(space), tmp_path / "s",
                     MCDConfig(candidates=1, layers=1, stop_after=1), log=lambda _: None)
    record = read_history(tmp_path / "s")[1]
    assert all(c["values"]["measured_ms"] <= record["targets"]["measured_ms"] * (1 + 1e-9)
               for c in record["candidates"])
    assert result.iteration == 1


def test_macs_metric_matches_the_space(space):
    cfg = space.random_config(random.Random(0))
    assert MacsMetric(space).value(cfg) == space.macs(cfg)


def test_uniform_and_random_baselines_meet_the_constraint(space, latency):
    limit = 0.5 * latency.value(space.max_config())
    constraints = [Constraint(latency, limit)]
    scorer = importance_scorer(space)
    uniform = uniform_baseline(space, constraints, scorer)
    assert uniform.values["latency_ms"] <= limit and uniform.evaluations == 1
    assert 0 < uniform.detail["multiplier"] < 1
    bigger = space.canonical(space.uniform_config(uniform.detail["multiplier"] + 0.01))
    assert bigger == uniform.config or latency.value(bigger) > limit  # the largest multiplier that fits
    rand = random_baseline(space, constraints, scorer, budget=10, seed=1)
    assert rand.values["latency_ms"] <= limit and rand.evaluations == 10
    assert rand.score == max(rand.detail["scores"])
    assert random_baseline(space, constraints, scorer, budget=10, seed=1).config == rand.config


def test_mcd_beats_random_and_uniform_on_the_stand_in_scorer(space, latency, tmp_path):
    """With a scorer where layers differ in importance, MCD (which measures each move) should
    at least match uniform scaling and the random search with the same budget."""
    limit = 0.5 * latency.value(space.max_config())
    constraints = [Constraint(latency, limit)]
    scorer = importance_scorer(space)
    result = run_mcd(space, constraints, scorer, tmp_path, MCDConfig(candidates=8), log=lambda _: None)
    budget = sum(len(r.get("candidates", [])) for r in read_history(tmp_path))
    assert result.score >= uniform_baseline(space, constraints, scorer).score
    assert result.score >= random_baseline(space, constraints, scorer, budget=budget).score


@pytest.mark.slow
def test_netadapt_v1_single_layer_with_short_finetunes(space, latency):
    from search.data import get_dataset, make_loader
    from search.supernet import SuperNet
    torch.manual_seed(0)
    start = SuperNet(space).subnet(space.max_config())
    train = get_dataset("builtin", "train", 32, holdout=64)
    hold = get_dataset("builtin", "holdout", 32, holdout=64)
    limit = 0.97 * latency.value(space.max_config())  # ~2 iterations x 11 single-layer proposals
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        result = netadapt_v1(space, [Constraint(latency, limit)], start, make_loader(train, 16, shuffle=True),
                             make_loader(hold, 64), finetune_steps=1, log=lambda _: None)
    finally:
        torch.set_num_threads(threads)
    assert result.values["latency_ms"] <= limit
    assert result.evaluations >= result.detail["iterations"]
    # one width per proposal, never to 0, kernels untouched (V1 has neither CBC nor kernel search)
    assert all(k == 7 for k in result.config.kernels.values())
    assert all(v > 0 for v in result.config.widths.values())
