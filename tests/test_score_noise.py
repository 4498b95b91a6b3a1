"""Each MCD candidate's score carries its standard error (issue 16: scoring noise).

A real `SupernetScorer` (an untrained mbv3-tiny super-network, built-in images) scores the
candidates of a short MCD run on a synthetic LUT; the history must hold sqrt(p(1-p)/n) for
every candidate, n being the held-out split's size, and the report must print it.
"""
from __future__ import annotations

import math

import pytest
import torch

from lut_db import LatencyTable
from search.classification.task import ClassificationTask
from search.data import get_dataset, make_loader
from search.depth.task import DepthTask
from search.mcd import Constraint, LutLatencyMetric, MCDConfig, read_history, run_mcd
from search.mcd.report import _noise_lines
from search.mcd.scoring import SupernetScorer
from search.spaces import get_space
from search.supernet import build_supernet
from test_mcd_fixtures import DEVICE, synth_lut


@pytest.fixture(scope="module")
def scorer():
    torch.manual_seed(0)
    space = get_space("mbv3-tiny")
    supernet = build_supernet(space).eval()
    holdout = torch.utils.data.Subset(get_dataset("builtin", "holdout", 32), range(120))
    calib = make_loader(get_dataset("builtin", "train", 32), 32, shuffle=True, seed=1)
    return space, SupernetScorer.for_task(ClassificationTask(), supernet, make_loader(holdout, 60), calib, 1)


def test_top1_standard_error_is_binomial_over_the_holdout(scorer):
    _, s = scorer
    assert s.standard_error(0.25) == pytest.approx(math.sqrt(0.25 * 0.75 / 120))
    assert s.standard_error(0.0) == 0.0 and s.standard_error(1.0) == 0.0


def test_a_depth_score_has_no_binomial_error(scorer):
    space, s = scorer
    depth = SupernetScorer.for_task(DepthTask(), s.supernet, s.holdout_loader, s.calib_loader, 1)
    assert depth.standard_error(-0.8) is None


@pytest.mark.slow
def test_mcd_history_and_report_carry_each_candidates_standard_error(scorer, tmp_path):
    space, s = scorer
    table = LatencyTable.load(synth_lut(tmp_path / "lut.sqlite"), DEVICE, "tflite")
    latency = LutLatencyMetric(space, table)
    limit = 0.9 * latency.value(space.max_config())
    run_mcd(space, [Constraint(latency, limit)], s, tmp_path / "search",
            MCDConfig(candidates=3, layers=2, land=False), log=lambda _: None)
    records = [r for r in read_history(tmp_path / "search") if "candidates" in r]
    assert records
    for record in records:
        assert record["score_se"] == pytest.approx(s.standard_error(record["score"]), abs=1e-5)
        for c in record["candidates"]:
            assert c["score_se"] == pytest.approx(math.sqrt(c["score"] * (1 - c["score"]) / 120), abs=1e-5)
    line = " ".join(_noise_lines(read_history(tmp_path / "search")))
    assert "standard error" in line and "runner-up" in line
