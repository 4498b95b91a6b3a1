"""Many targets, one super-network (search/mcd/targets.py, pareto.py).

The library path runs with the deterministic stand-in scorer (exact and fast); the CLI path
with the tiny random-weight super-network (every code path: slicing, BN recalibration) and
the synthetic LUT fixture of test_mcd_fixtures.py.
"""
from __future__ import annotations

import dataclasses
import json

import pytest

from search.mcd import read_history
from search.mcd.request import SearchRequest
from search.mcd.search import MCDConfig
from search.mcd.targets import label, search_targets, target_list
from search.errors import SearchError
from search.spaces import get_space
from test_mcd_fixtures import DEVICE, importance_scorer, run_nas_search as run, untrained_supernet_and_lut

FAST = ["-J", "2", "--holdout-size", "64", "--calib-batches", "1", "--batch-size", "32"]


@pytest.fixture(scope="module")
def files(tmp_path_factory):
    return untrained_supernet_and_lut(tmp_path_factory.mktemp("multi"))


def request(files, out, **mcd) -> SearchRequest:
    return SearchRequest(supernet=files["supernet"], out=out, db=files["lut"], device=DEVICE,
                         mcd=MCDConfig(candidates=6, **mcd))


def quiet(_line):
    pass


def test_target_list_pairs_lists_and_wants_them_descending():
    assert target_list([3.0, 2.0], []) == [(3.0, None), (2.0, None)]
    assert target_list([3.0, 2.0], [5e6]) == [(3.0, 5e6), (2.0, 5e6)]
    assert label(0.4, None) == "t0.4ms" and label(None, 3.5e6) == "m3.5M" and label(0.4, 3.5e6) == "t0.4ms_m3.5M"
    with pytest.raises(SearchError, match="strictly descending"):
        target_list([2.0, 3.0], [])
    with pytest.raises(SearchError, match="--target-latency-ms: 2 targets, but the other list has 3"):
        target_list([3.0, 2.0], [5e6, 4e6, 3e6])


def test_each_target_continues_from_the_previous_one_and_resumes(files, tmp_path):
    space = get_space("mbv3-tiny")
    latency = [7.0, 5.0, 3.0]
    full = search_targets(request(files, tmp_path / "full"), latency, [], log=quiet, scorer=importance_scorer(space))
    assert len(full) == 3
    index = json.loads((tmp_path / "full" / "targets.json").read_text())
    assert [t["dir"] for t in index["targets"]] == ["t7ms", "t5ms", "t3ms"]
    previous = space.max_config().to_dict()
    for target in latency:
        folder = tmp_path / "full" / label(target, None)
        final = json.loads((folder / "final.json").read_text())
        assert 0.98 * target <= final["latency_ms"] <= target  # landed on every target
        assert read_history(folder)[0]["config"] == previous  # starts where the previous target ended
        assert json.loads((folder / "request.json").read_text())["target_latency_ms"] == target
        baselines = json.loads((folder / "baselines.json").read_text())
        assert baselines["uniform"]["values"]["latency_ms"] <= target
        assert 0.98 * target <= baselines["random"]["values"]["latency_ms"] <= target
        previous = final["config"]
    # the random search of target k scores what MCD scored for targets 1..k
    scored = [sum(len(r.get("candidates", [])) for r in read_history(tmp_path / "full" / label(t, None)))
              for t in latency]
    randoms = [json.loads((tmp_path / "full" / label(t, None) / "baselines.json").read_text())["random"]
               for t in latency]
    assert [r["evaluations"] for r in randoms] == [sum(scored[:i + 1]) for i in range(3)]
    # the schedule runs on: target 2's first target is a step of the chain, not of its own start
    second = read_history(tmp_path / "full" / "t5ms")
    assert second[1]["targets"]["latency_ms"] < second[0]["values"]["latency_ms"]
    table = (tmp_path / "full" / "pareto.md").read_text()
    assert table.count("| **searched** |") == 3 and table.count("| uniform |") == 3 and "| random |" in table
    assert (tmp_path / "full" / "pareto.png").stat().st_size > 0

    # killed in target 1 (--stop-after), then resumed: the same networks as the uninterrupted run
    part = tmp_path / "part"
    stopped = search_targets(request(files, part, stop_after=2), latency, [], log=quiet,
                             scorer=importance_scorer(space), baselines=())
    assert stopped == [] and not (part / "t5ms").exists()
    with pytest.raises(SearchError, match="already holds a multi-target search"):
        search_targets(request(files, part), latency, [], log=quiet, scorer=importance_scorer(space))
    resume = dataclasses.replace(request(files, part), resume=True)
    resumed = search_targets(resume, latency, [], log=quiet, scorer=importance_scorer(space), baselines=())
    assert [r.config for r in resumed] == [r.config for r in full]
    # target 2 unfinished and target 3 never started: resumed per target, target 1 untouched
    first = (part / "t7ms" / "final.json").read_text()
    (part / "t5ms" / "final.json").unlink()
    (part / "t3ms").rename(tmp_path / "gone")
    resumed = search_targets(resume, latency, [], log=quiet, scorer=importance_scorer(space), baselines=())
    assert [r.config for r in resumed] == [r.config for r in full]
    assert (part / "t7ms" / "final.json").read_text() == first


def test_macs_target_list(files, tmp_path):
    space = get_space("mbv3-tiny")
    req = SearchRequest(supernet=files["supernet"], out=tmp_path / "m", metric="macs", mcd=MCDConfig(candidates=4))
    results = search_targets(req, [], [4.0e6, 3.0e6], log=quiet, scorer=importance_scorer(space),
                             baselines=("uniform",))
    assert [(tmp_path / "m" / d).is_dir() for d in ("m4M", "m3M")] == [True, True]
    for limit, result in zip((4.0e6, 3.0e6), results):
        assert 0.98 * limit <= result.values["macs"] <= limit


@pytest.mark.slow
def test_cli_target_list_stop_resume_report(files, tmp_path, capsys):
    out = tmp_path / "cli"
    argv = ["search", "--supernet", files["supernet"], "--db", files["lut"], "--device", DEVICE,
            "--target-latency-ms", "7,5", "--out", out, *FAST]
    code, stdout, err = run(argv + ["--stop-after", "1"], capsys)
    assert code == 0, err
    assert "target 1/2 t7ms" in stdout and not (out / "t7ms" / "final.json").exists()
    code, _, err = run(argv, capsys)
    assert code == 1 and "already holds a multi-target search" in err and len(err.strip().splitlines()) == 1
    code, stdout, err = run(argv + ["--resume"], capsys)
    assert code == 0, err
    assert "(resuming)" in stdout and "pareto:" in stdout
    for target in (7.0, 5.0):
        final = json.loads((out / label(target, None) / "final.json").read_text())
        assert final["latency_ms"] <= target and "unused_budget" in final
    code, stdout, err = run(argv[:argv.index("--target-latency-ms")] + ["--target-latency-ms", "7,4", "--out", out,
                                                                         "--resume", *FAST], capsys)
    assert code == 1 and "searched the targets t7ms, t5ms, not t7ms, t4ms" in err
    code, stdout, err = run(["report", "--search", out], capsys)
    assert code == 0, err
    assert (out / "t7ms" / "report.md").is_file() and (out / "pareto.md").is_file()
