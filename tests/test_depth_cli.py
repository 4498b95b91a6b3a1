"""The depth task through the same commands: `nas-search train / search / finetune / export / report`
on `fastdepth-tiny` + `builtin-depth`, and `--task` mismatches as one-line errors.

`builtin-depth` is shrunk for these tests (64 / 16 / 16 rendered images instead of
2000 / 200 / 200): rendering the full set takes ~20 s on a loaded 2-core host. The LUT is
the synthetic fixture of test_mcd_fixtures.py (a·MACs + b per layer, written with lut_db's
writer), built for the depth space's keys.
"""
from __future__ import annotations

import json

import numpy as np
import pytest
import torch

from search.cli import main
from test_mcd_fixtures import DEVICE, run_nas_search as run, synth_lut

SPACE = "fastdepth-tiny"
FAST = ["-J", "2", "-L", "2", "--calib-batches", "1", "--batch-size", "16"]


@pytest.fixture(scope="module", autouse=True)
def small_and_single_threaded():
    """One torch thread (depthwise backward is far slower with 2 on a shared host) and a small built-in set."""
    import search.depth.data as depth_data
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    with pytest.MonkeyPatch.context() as mp:
        mp.setattr(depth_data, "BUILTIN_SIZES", {"train": 64, "holdout": 16, "val": 16})
        yield
    torch.set_num_threads(threads)


def train_argv(out, *extra):
    return ["train", "--space", SPACE, "--data", "builtin-depth", "--epochs", "1", "--steps-per-epoch", "4",
            "--batch-size", "16", "--out", out, "--no-progress", *extra]


@pytest.fixture(scope="module")
def trained(tmp_path_factory):
    root = tmp_path_factory.mktemp("depth-cli")
    torch.manual_seed(0)
    main([str(a) for a in train_argv(root / "train")])
    return {"root": root, "supernet": root / "train" / "supernet.pt"}


def max_macs():
    from search.spaces import get_space
    space = get_space(SPACE)
    return space.macs(space.max_config())


def test_train_writes_a_depth_checkpoint_and_log(trained):
    from search.checkpoint import load_supernet
    from search.supernet import DepthSuperNet
    space, supernet, meta = load_supernet(trained["supernet"])
    assert space.name == SPACE and isinstance(supernet, DepthSuperNet)
    assert meta["train_config"]["task"] == "depth" and meta["train_config"]["optimizer"] == "adamw"
    record = json.loads((trained["supernet"].parent / "train_log.jsonl").read_text().splitlines()[0])
    assert {"train_loss", "val_rmse_max", "val_rmse_min", "val_delta1_max", "val_delta1_min"} <= set(record)
    assert "train_acc_od" not in record and record["val_rmse_max"] > 0


def test_depth_resume_equals_uninterrupted(tmp_path):
    from search.checkpoint import load_supernet
    from search.train import TrainConfig, train
    cfg = TrainConfig(space=SPACE, data="builtin-depth", epochs=2, batch_size=16, steps_per_epoch=2, bn_batches=1,
                      progress=False)
    full = train(cfg, tmp_path / "full")
    train(cfg, tmp_path / "cut", stop_after=1)
    resumed = train(cfg, tmp_path / "cut", resume=True)
    _, a, _ = load_supernet(full.checkpoint)
    _, b, _ = load_supernet(resumed.checkpoint)
    for (name, x), (_, y) in zip(a.state_dict().items(), b.state_dict().items()):
        assert torch.allclose(x.float(), y.float(), atol=1e-6, rtol=0), name
    strip = lambda r: {k: v for k, v in r.items() if k not in ("seconds", "images_per_s")}  # noqa: E731
    logs = [[strip(json.loads(line)) for line in (tmp_path / d / "train_log.jsonl").read_text().splitlines()]
            for d in ("full", "cut")]
    assert len(logs[0]) == 2 and logs[0] == logs[1]


LIMIT = 0.95  # of the max network's MACs: close to it, so NetAdapt V1 below needs ~2 iterations


@pytest.fixture(scope="module")
def searched(trained):
    out = trained["root"] / "search"
    main([str(a) for a in ["search", "--supernet", trained["supernet"], "--metric", "macs", "--target-macs",
                           str(LIMIT * max_macs()), "--out", out, "--initial-reduction", "0.05"] + FAST])
    return out


def test_macs_search_scores_by_rmse_on_the_holdout_split(searched):
    final = json.loads((searched / "final.json").read_text())
    assert final["space"] == SPACE and final["macs"] <= LIMIT * max_macs() and final["meta"]["task"] == "depth"
    assert final["meta"]["holdout_size"] == 16 and final["meta"]["data"] == "builtin-depth"
    held = final["holdout_metrics"]
    assert held["images"] == 16 and final["accuracy"] == pytest.approx(-held["rmse"])  # score = -RMSE (m)


def test_finetune_export_report(searched, tmp_path, capsys):
    out = searched
    code, stdout, err = run(["finetune", "--search", out, "--epochs", "1", "--steps-per-epoch", "2",
                             "--val-batches", "1", "--batch-size", "16"], capsys)
    assert code == 0, err
    record = json.loads((out / "finetune.json").read_text())
    assert {"val_rmse_before", "val_rmse", "val_delta1_before", "val_delta1"} <= set(record)
    assert record["epochs"][0]["val_rmse"] == record["val_rmse"] and record["config"]["lr"] == 5e-4
    assert "val RMSE" in stdout

    onnx, tflite = tmp_path / "depth.onnx", tmp_path / "depth.tflite"
    code, stdout, err = run(["export", "--search", out, "--onnx", onnx, "--tflite", tflite, "--task", "depth"],
                            capsys)
    assert code == 0, err
    from search.export_searched import run_onnx, run_tflite
    from search.finetune import load_finetuned
    _, _, model = load_finetuned(out)
    x = torch.rand(1, 3, 64, 64, generator=torch.Generator().manual_seed(1))
    with torch.no_grad():
        ref = model(x).numpy()
    assert ref.shape == (1, 1, 64, 64)
    # float32 reordering errors scale with the depths summed inside the network (a few metres), not with
    # one pixel's value: a pixel near 0 m keeps the absolute error of its neighbours (AVX-512 XNNPACK on
    # an AMD host: 1.2e-4 at a 0.003 m pixel, 2.6e-5 of the largest depth), so atol is relative to the map
    tol = dict(rtol=1e-3, atol=1e-4 * float(np.abs(ref).max()))
    np.testing.assert_allclose(run_onnx(onnx, x.numpy()), ref, **tol)
    got = run_tflite(tflite, x.numpy())
    assert got.shape == (1, 64, 64, 1)  # NHWC out, as the input
    np.testing.assert_allclose(got.transpose(0, 3, 1, 2), ref, **tol)

    code, stdout, err = run(["report", "--search", out, "--baselines", "uniform,random", "--task", "depth"], capsys)
    assert code == 0, err
    baselines = json.loads((out / "baselines.json").read_text())
    for name in ("uniform", "random"):
        b = baselines[name]
        assert b["values"]["macs"] <= LIMIT * max_macs() and {"rmse", "delta1"} <= set(b["detail"]["holdout_metrics"])
    text = (out / "report.md").read_text()
    assert "held-out RMSE (m)" in text and "val δ1 (fine-tuned)" in text and "top-1" not in text
    assert "| uniform |" in text and "| random |" in text and "max output diff" in text
    assert (out / "tradeoff.png").stat().st_size > 0


def test_report_runs_the_netadapt_v1_baseline(searched, capsys):
    code, stdout, err = run(["report", "--search", searched, "--baselines", "netadapt-v1", "--v1-steps", "1"],
                            capsys)
    assert code == 0, err
    v1 = json.loads((searched / "baselines.json").read_text())["netadapt-v1"]
    assert v1["values"]["macs"] <= LIMIT * max_macs() and v1["detail"]["iterations"] >= 1
    assert v1["score"] == pytest.approx(-v1["detail"]["holdout_metrics"]["rmse"])  # its fine-tuned weights
    assert "| netadapt-v1 |" in (searched / "report.md").read_text()


def test_lut_search_scored_by_delta1(trained, tmp_path, capsys):
    from lut_db import LatencyTable
    from search.spaces import SubnetConfig, get_space
    lut = synth_lut(tmp_path / "lut.sqlite", space_name=SPACE)
    space = get_space(SPACE)
    table = LatencyTable.load(lut, DEVICE, "tflite")
    limit = 0.8 * table.predict(space.layer_configs(space.max_config()))
    out = tmp_path / "lut"
    code, stdout, err = run(["search", "--supernet", trained["supernet"], "--db", lut, "--device", DEVICE,
                             "--target-latency-ms", f"{limit:.4f}", "--score", "delta1", "--space", SPACE,
                             "--task", "depth", "--initial-reduction", "0.1", "--out", out] + FAST, capsys)
    assert code == 0, err
    final = json.loads((out / "final.json").read_text())
    cfg = SubnetConfig.from_dict(final["config"])
    # the MCD LUT metric equals the layer-by-layer sum for the depth space
    assert final["latency_ms"] == pytest.approx(table.predict(space.layer_configs(cfg)), rel=1e-9)
    assert final["latency_ms"] <= limit and final["meta"]["score"] == "delta1"
    assert 0 <= final["accuracy"] <= 1 and final["accuracy"] == pytest.approx(final["holdout_metrics"]["delta1"])


@pytest.mark.parametrize("argv, message", [
    (["train", "--space", SPACE, "--task", "classification", "--out", "{tmp}/t"],
     "--task classification: space fastdepth-tiny is a depth space"),
    (["train", "--space", "mbv3-tiny", "--task", "depth", "--out", "{tmp}/t"],
     "--task depth: space mbv3-tiny is a classification space"),
    (["train", "--space", SPACE, "--holdout", "8", "--out", "{tmp}/t"], "fixed holdout split"),
    (["search", "--supernet", "{ckpt}", "--task", "classification", "--metric", "macs", "--target-macs", "1M",
      "--out", "{tmp}/s"], "--task classification: space fastdepth-tiny is a depth space"),
    (["search", "--supernet", "{ckpt}", "--score", "top1", "--metric", "macs", "--target-macs", "1M",
      "--out", "{tmp}/s"], "score metric 'top1'"),
])
def test_task_mismatch_is_a_one_line_error(trained, tmp_path, capsys, argv, message):
    argv = [a.format(tmp=tmp_path, ckpt=trained["supernet"]) for a in argv]
    code, _, err = run(argv, capsys)
    assert code == 1
    lines = err.strip().splitlines()
    assert len(lines) == 1 and message in lines[0], err
    assert not (tmp_path / "t").exists() and not (tmp_path / "s" / "history.jsonl").exists()
