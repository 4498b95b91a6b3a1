"""`benchmarks/bench_search.py`: the real `--quick` path on both spaces (slow), the CBC-off view,
the paired statistics and the option checks."""
from __future__ import annotations

import json
import math
import random

import pytest

from benchmarks import bench_search
from benchmarks.cbc_off_view import computes_whole_stream, no_removal_view
from benchmarks.paired_stats import paired, resolves, t_interval
from search.mcd import Constraint, LutLatencyMetric, MCDConfig, read_history, run_mcd
from search.spaces import get_space
from test_mcd_fixtures import DEVICE, importance_scorer, synth_lut
from lut_db import DEFAULT_RUNTIME_OPTIONS, LatencyTable


def _quick(tmp_path, space: str, capsys) -> tuple[dict, str]:
    db = synth_lut(tmp_path / "lut.sqlite", space)  # analytic test LUT (the real one is measured by lutbuild)
    out = tmp_path / "bench.json"
    assert bench_search.main(["--quick", "--space", space, "--db", str(db), "--device", DEVICE,
                              "--workdir", str(tmp_path / "work"), "--out", str(out), "--quiet"]) == 0
    return json.loads(out.read_text()), capsys.readouterr().out


def _check_structure(result: dict, space: str) -> None:
    for key in ("benchmark", "date", "machine", "versions", "threads", "command", "settings", "schedule", "latency",
                "limits", "training", "seeds", "scratch", "ablation", "summary", "wall_s"):
        assert key in result, key
    assert result["machine"]["cpu"]  # the CPU model, as every benchmark records it
    assert result["space"] == space and result["latency"]["kind"] == "lut" and result["latency"]["device"] == DEVICE
    settings = result["settings"]
    assert settings["quick"] is True and result["threads"]["torch"] == 1
    k = len(settings["fractions"])
    assert k == 3 and result["limits"] == sorted(result["limits"], reverse=True)
    assert len(result["seeds"]) == settings["seeds"] == 2
    for seed in result["seeds"]:
        assert [t["limit"] for t in seed["targets"]] == result["limits"]
        for target in seed["targets"]:
            v1 = target["netadapt_v1"]  # V1 ran once per target, to that target, from the plain max network
            assert v1["limit"] == target["limit"] and v1["time"]["wall_s"] >= 0
            if v1["error"] is None:
                assert v1["value"] <= target["limit"] * (1 + 1e-9) and v1["evaluations"] >= 1
            for name in ("mcd", "random"):
                assert target[name]["value"] <= target["limit"] * (1 + 1e-9)
                assert set(result["headline"]) <= set(target[name]["val_after"])
    time = result["summary"]["time"]
    assert time["ratio_v1_over_sn"]["wall"]["n"] == 2 and time["ratio_v1_over_sn"]["wall"]["mean"] > 0
    assert len(result["scratch"]) == k and all(entry["searched"] for entry in result["scratch"])
    # CBC off: every config the searches produced kept each residual block's whole stream
    for run in result["ablation"]:
        assert set(run["cells"]) == {"cbc_L3", "cbc_L1", "nocbc_L3", "nocbc_L1"}
        for name in ("nocbc_L3", "nocbc_L1"):
            cell = run["cells"][name]
            assert cell["whole_stream"] is True and cell["configs_checked"] > 1
    gains = result["summary"]["ablation"]["gains"]
    assert {"cbc_on_minus_off", "L3_minus_L1"} <= set(gains)


@pytest.mark.slow
def test_quick_run_mbv3_lands_every_target_and_runs_v1_per_target(tmp_path, capsys):
    result, printed = _quick(tmp_path, "mbv3-tiny", capsys)
    _check_structure(result, "mbv3-tiny")
    for seed in result["seeds"]:
        for target in seed["targets"]:
            mcd = target["mcd"]  # landed within 2 % under its LUT target
            assert 0 <= (target["limit"] - mcd["value"]) / target["limit"] <= 0.02, (seed["seed"], mcd["value"])
            assert target["netadapt_v1"]["error"] is None
    assert "1. Time for 3 targets" in printed and "3. CBC on/off" in printed


@pytest.mark.slow
def test_quick_run_depth_reports_the_task_metrics(tmp_path, capsys):
    result, printed = _quick(tmp_path, "fastdepth-tiny", capsys)
    _check_structure(result, "fastdepth-tiny")
    assert result["task"] == "depth" and result["headline"] == ["rmse", "delta1"]
    mcd = result["seeds"][0]["targets"][0]["mcd"]
    assert mcd["score_after"] == pytest.approx(-mcd["val_after"]["rmse"])  # score = task.score (-RMSE)
    assert "RMSE m" in printed and "δ1 %" in printed


@pytest.mark.parametrize("space_name", ["mbv3-tiny", "fastdepth-tiny"])
def test_cbc_off_view_keeps_every_residual_block_whole(tmp_path, space_name):
    """Every config MCD (with landing) and random draws produce in the view computes each residual
    block's whole stream: no removal, no partial bypass; the space itself is untouched."""
    space = get_space(space_name)
    view = no_removal_view(space)
    residual = [b for b in space.blocks if b.residual]
    assert residual and all(0 not in view.width_vars[b.out_var].choices for b in residual)
    assert any(0 in v.choices for v in space.width_vars.values())  # the space keeps its CBC choices
    assert view.depth(view.min_config()) == space.depth(space.max_config())
    rng = random.Random(0)
    for _ in range(200):
        config = view.random_config(rng)
        space.validate(config)  # a config of the view is one of the space
        assert computes_whole_stream(space, config)
    db = synth_lut(tmp_path / "lut.sqlite", space_name)
    table = LatencyTable.load(db, DEVICE, "tflite", DEFAULT_RUNTIME_OPTIONS)
    metric = LutLatencyMetric(view, table)
    limit = 0.5 * metric.value(space.max_config())
    result = run_mcd(view, [Constraint(metric, limit)], importance_scorer(view), tmp_path / "mcd",
                     MCDConfig(candidates=4, layers=3, seed=1, land=True, land_budget=16), log=lambda _l: None)
    configs = [result.config] + [c for r in read_history(tmp_path / "mcd") for c in bench_search._history_configs(r)]
    assert len(configs) > 10 and all(computes_whole_stream(space, c) for c in configs)
    assert result.values["latency_ms"] <= limit


def test_computes_whole_stream_sees_a_partial_bypass():
    space = get_space("mbv3-tiny")
    block = next(b for b in space.blocks if b.residual)
    config = space.max_config()
    smaller = max(c for c in space.width_vars[block.out_var].choices if 0 < c < config.widths[block.out_var])
    assert computes_whole_stream(space, config)
    assert not computes_whole_stream(space, space.canonical(config.replace(widths={block.out_var: smaller})))


def test_t_interval_and_paired_differences():
    iv = t_interval([1.0, 2.0, 3.0])
    assert iv["mean"] == 2.0 and iv["std"] == 1.0 and iv["n"] == 3
    assert iv["half"] == pytest.approx(4.302653 / math.sqrt(3), rel=1e-5)  # t(0.975, 2 dof)
    assert t_interval([5.0])["half"] is None and t_interval([])["mean"] is None
    d = paired([0.5, 0.6, None, 0.7], [0.4, 0.4, 0.1, float("nan")])  # pairs with a missing figure dropped
    assert d["n"] == 2 and d["mean"] == pytest.approx(0.15)
    assert resolves(t_interval([0.001, 0.002, 0.0015, 0.0012]), 0.005) is True
    assert resolves(t_interval([0.0, 0.05, -0.05]), 0.005) is False
    with pytest.raises(ValueError, match="pair them by seed"):
        paired([1.0], [1.0, 2.0])


@pytest.mark.parametrize("argv, message", [
    (["--fractions", "0.4,0.5"], "strictly descending"),
    (["--fractions", "0.8,1.2"], "strictly descending"),
    (["--space", "mbv3-small"], "expected one of"),
    (["--seeds", "0"], "--seeds 0"),
    (["--scratch-seeds", "4"], "--scratch-seeds"),
])
def test_bad_options_fail_before_any_work(argv, message):
    with pytest.raises(SystemExit, match=message):
        bench_search.build_config(bench_search.parse_args(argv))


def test_missing_db_is_one_line_error(tmp_path):
    args = bench_search.parse_args(["--db", str(tmp_path / "none.sqlite"), "--device", DEVICE])
    cfg = bench_search.build_config(args)
    with pytest.raises(SystemExit, match="--db"):
        bench_search.resolve_constraint(args, cfg, get_space("mbv3-tiny"), tmp_path, lambda _l: None)


def test_a_target_under_the_smallest_network_stops_before_training(tmp_path):
    db = synth_lut(tmp_path / "lut.sqlite", "fastdepth-tiny")
    space = get_space("fastdepth-tiny")
    table = LatencyTable.load(db, DEVICE, "tflite", DEFAULT_RUNTIME_OPTIONS)
    metric = LutLatencyMetric(space, table)
    floor = metric.value(space.min_config()) / metric.value(space.max_config())
    args = bench_search.parse_args(["--space", "fastdepth-tiny", "--db", str(db), "--device", DEVICE,
                                    "--fractions", f"0.99,{floor * 0.9:.4f}"])
    cfg = bench_search.build_config(args)
    latency = bench_search.resolve_constraint(args, cfg, space, tmp_path, lambda _l: None)
    with pytest.raises(SystemExit, match="smallest network of fastdepth-tiny"):
        bench_search.check_reachable(cfg, space, latency)
    ok = bench_search.build_config(bench_search.parse_args(["--space", "fastdepth-tiny", "--fractions",
                                                            f"0.99,{min(0.98, floor * 1.05):.4f}"]))
    bench_search.check_reachable(ok, space, latency)  # above the floor: no exit
