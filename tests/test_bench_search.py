"""Smoke test of `benchmarks/bench_search.py`: a tiny `--quick` run writes the JSON the docs read."""
from __future__ import annotations

import json

import pytest

from benchmarks import bench_search
from search.spaces import get_space
from test_mcd_fixtures import DEVICE, synth_lut


@pytest.mark.slow
def test_quick_run_writes_every_section(tmp_path, capsys):
    db = synth_lut(tmp_path / "lut.sqlite")  # analytic test LUT (the real one is measured by lutbuild)
    out = tmp_path / "bench.json"
    assert bench_search.main(["--quick", "--seeds", "1", "--target-fraction", "0.7", "--db", str(db),
                              "--device", DEVICE, "--workdir", str(tmp_path / "work"), "--out", str(out),
                              "--quiet"]) == 0
    result = json.loads(out.read_text())
    for key in ("benchmark", "date", "machine", "versions", "threads", "command", "settings", "schedule",
                "latency", "seeds", "summary", "throughput", "wall_s"):
        assert key in result, key
    assert result["latency"]["kind"] == "lut" and result["latency"]["device"] == DEVICE
    assert result["threads"]["torch"] == 1 and result["settings"]["quick"] is True
    seed = result["seeds"][0]
    assert set(seed["mcd"]) == {"cbc_L3", "cbc_L1", "nocbc_L3", "nocbc_L1"}
    limit = seed["limit"]
    for run in seed["mcd"].values():
        assert run["value"] <= limit * (1 + 1e-9)
    for cell in ("nocbc_L3", "nocbc_L1"):  # CBC off: no block removed
        assert seed["mcd"][cell]["depth"] == get_space("mbv3-tiny").depth(get_space("mbv3-tiny").max_config())
    assert seed["netadapt_v1"]["error"] is None and seed["netadapt_v1"]["value"] <= limit * (1 + 1e-9)
    assert {"uniform", "random"} <= set(seed["baselines"])
    summary = result["summary"]
    assert {"search_time", "cbc_mcd", "baselines"} <= set(summary)
    assert summary["search_time"]["speedup"]["total_wall"]["mean"] > 0
    assert result["throughput"]["scoring"]["equal_scores"] is True
    assert "1. Search time" in capsys.readouterr().out


def test_no_lut_falls_back_to_macs_and_says_so(monkeypatch, tmp_path):
    monkeypatch.setattr(bench_search, "DEFAULT_DBS", (str(tmp_path / "missing.sqlite"),))
    args = bench_search.parse_args([])
    latency = bench_search.resolve_latency(args, get_space("mbv3-tiny"))
    assert latency["kind"] == "macs" and "NO LUT" in latency["note"]
    assert latency["make"]().name == "macs"


def test_cbc_off_view_never_removes_blocks():
    space = get_space("mbv3-tiny")
    view = bench_search.no_removal_view(space)
    assert all(0 not in v.choices for v in view.width_vars.values())
    assert any(0 in v.choices for v in space.width_vars.values())  # the space itself is untouched
    assert view.depth(view.min_config()) == space.depth(space.max_config())
