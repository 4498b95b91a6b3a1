"""`lutbuild verify --same-batch`: each network's own LUT layer files timed in its runner batches.

The batch layout and the "layers now" arithmetic (`profiler/same_batch.py`) are checked on
paths; the command on a real int8 LUT of a small space, built by the real CLI and run by LiteRT
(XNNPACK) on this host.
"""
from __future__ import annotations

import json
import statistics
import sys
from pathlib import Path

import pytest

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))  # `tests.lutbuild_helpers` under any import mode
from tests.lutbuild_helpers import invoke, micro_space_registered  # noqa: E402

from benchmarks.bench_int8_fast_state import score  # noqa: E402
from profiler.same_batch import Group, SameBatch, layers_now_ms, plan_batch  # noqa: E402

SPACE = "test-same-batch-micro"
A, B, C, M1, M2, OVH, REF = (Path(n) for n in ("a", "b", "c", "m1", "m2", "overhead", "ref"))


def test_each_group_gets_its_layers_right_after_its_model_and_repeats_count_twice():
    groups = [Group(M1, (A, B, A)), Group(M2, (B, C))]
    own = plan_batch([OVH, REF], groups, share_layers=False)
    assert own.files == [OVH, REF, M1, A, B, M2, B, C]  # B timed again beside M2
    assert own.model_at == [2, 5] and own.layers_at == [(3, 4, 3), (6, 7)]
    shared = plan_batch([OVH], groups, share_layers=True)
    assert shared.files == [OVH, M1, A, B, M2, C]  # B timed once, counted for both
    assert shared.layers_at == [(2, 3, 2), (3, 5)]


def test_layers_now_is_the_lut_prediction_made_of_one_batch():
    medians = [0.01, 1.0, 0.21, 0.51]  # overhead, model, layer a, layer b
    # each term a row (median - overhead), the overhead added once, as LatencyTable.predict
    assert layers_now_ms(medians, (2, 3, 2), 0.01) == pytest.approx(0.2 + 0.5 + 0.2 + 0.01)
    assert layers_now_ms(medians, (2, 3, 2), 0.01, (2, 1, 2)) == pytest.approx(0.1 + 0.5 + 0.1 + 0.01)
    same = SameBatch([1.0, 2.0, 1.0], [1.1, 1.8, 0.9])
    assert same.layers_now_ms == 1.1
    assert same.ratio_layers_to_whole == pytest.approx(statistics.median([1.1, 0.9, 0.9]))
    assert same.error_pct == pytest.approx(-10.0)
    fast = SameBatch([1.0, 2.0, 1.0], [1.1, 1.8, 0.9], [0.8, 1.5, 0.9], [0.88, 1.2, 0.99])  # p10s paired per round
    assert fast.ratio_p10_layers_to_whole == pytest.approx(statistics.median([1.1, 0.8, 1.1]))
    assert fast.error_p10_pct == pytest.approx(10.0)


def check_fast_state(report: dict) -> None:
    """p10 against p10: per row p10 <= median, so each side is at most its median counterpart."""
    fast = report["fast_state"]
    assert fast["n"] == report["n"] == len(fast["measured_p10_ms"]) == len(fast["predicted_p10_ms"])
    for sample, measured, predicted in zip(report["samples"], fast["measured_p10_ms"], fast["predicted_p10_ms"]):
        assert 0 < measured <= sample["measured_ms"] + 1e-9
        assert report["overhead_ms"]["lut"] <= predicted <= sample["predicted_ms"] + 1e-9


@pytest.fixture(scope="module")
def micro_space():
    """A residual block and h-swish (int8 HARD_SWISH runs outside XNNPACK), 8x8 input."""
    with micro_space_registered(SPACE, num_classes=10) as name:
        yield name


@pytest.mark.slow
def test_verify_same_batch_on_an_int8_slice(micro_space, tmp_path):
    db, cache = tmp_path / "lut.sqlite", tmp_path / "cache"
    common = ["--space", micro_space, "--runtime", "tflite", "--db", db, "--cache-dir", cache, "--quiet",
              "--jobs", "1", "--quantize", "int8"]
    result = invoke("build", *common, "--repeats", "1")
    assert result.exit_code == 0, result.output

    plain, same = tmp_path / "plain.json", tmp_path / "same.json"
    result = invoke("verify", *common, "--samples", "3", "--rounds", "1", "--json", plain)
    assert result.exit_code == 0, result.output
    assert "same batch" not in result.output
    report = json.loads(plain.read_text())
    assert "same_batch" not in report and all("same_batch" not in s for s in report["samples"])  # JSON unchanged
    check_fast_state(report)

    result = invoke("verify", *common, "--samples", "3", "--rounds", "2", "--json", same, "--same-batch")
    assert result.exit_code == 0, result.output
    assert "layers now, same batch" in result.output and "the LUT rows vs those layers now" in result.output
    assert "LUT p10 vs network p10" in result.output
    report = json.loads(same.read_text())
    assert report["runtime_options"] == "threads=1;delegate=xnnpack;dtype=int8"
    assert set(report["same_batch"]) == {"additivity", "lut_vs_layers_now", "additivity_p10"}
    check_fast_state(report)
    assert report["same_batch"]["additivity"]["n"] == 3
    for sample in report["samples"]:
        got = sample["same_batch"]
        assert len(got["round_layers_now_ms"]) == 2 == len(sample["round_medians_ms"]) == len(got["round_p10_ms"])
        assert all(0 < x < 1e3 for x in got["round_layers_now_ms"] + got["round_layers_now_p10_ms"])
        ratio = statistics.median(s / m for s, m in zip(got["round_layers_now_ms"], sample["round_medians_ms"]))
        assert got["error_pct"] == pytest.approx(100 * (ratio - 1))
        assert got["lut_vs_layers_now_pct"] == pytest.approx(100 * (sample["predicted_ms"] / got["layers_now_ms"] - 1))
    # benchmarks.bench_int8_fast_state reads the same p10 rows: one LUT twice, its minimum is that LUT
    scored = dict(score(report, [db, db]))
    assert scored["min p10 over 2 builds"] == scored["p10 rows of lut.sqlite"]
    assert scored["min p10 over 2 builds"].mape_pct == pytest.approx(report["fast_state"]["mape_pct"])
    stats = report["same_batch"]["lut_vs_layers_now"]
    expected = statistics.mean(s["same_batch"]["lut_vs_layers_now_pct"] for s in report["samples"])
    assert stats["bias_pct"] == pytest.approx(expected)
