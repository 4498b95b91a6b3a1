"""`nas-search search / finetune / export / report` end to end on tiny fixtures.

The super-network has random weights (scores are near chance, but every code path runs:
slicing, BN recalibration, held-out scoring); the LUT is the synthetic fixture of
test_mcd_fixtures.py (analytic latencies written with lut_db's writer).
"""
from __future__ import annotations

import json

import numpy as np
import pytest
import torch

from test_mcd_fixtures import DEVICE, run_nas_search as run, synth_lut

FAST = ["-J", "2", "--holdout-size", "64", "--calib-batches", "1", "--batch-size", "32"]


@pytest.fixture(scope="module", autouse=True)
def one_thread():
    """One intra-op thread: tiny batches on a shared 2-core host run faster and steadier."""
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)


@pytest.fixture(scope="module")
def files(tmp_path_factory):
    from search.checkpoint import save_supernet
    from search.spaces import get_space
    from search.supernet import SuperNet
    root = tmp_path_factory.mktemp("cli")
    torch.manual_seed(0)
    supernet = root / "supernet.pt"
    save_supernet(supernet, SuperNet(get_space("mbv3-tiny")), {"train_config": {"holdout": 200, "data": "builtin"}})
    lut = synth_lut(root / "lut.sqlite")
    partial = synth_lut(root / "partial.sqlite", drop=5)
    return {"root": root, "supernet": supernet, "lut": lut, "partial": partial}


def base(files, out, target="5.0", lut=None):
    return ["search", "--supernet", files["supernet"], "--db", lut or files["lut"], "--device", DEVICE,
            "--target-latency-ms", target, "--out", out]


@pytest.mark.slow
def test_search_stop_resume_finetune_export_report(files, tmp_path, capsys):
    out = tmp_path / "s"
    code, stdout, err = run(base(files, out) + FAST + ["--stop-after", "1"], capsys)
    assert code == 0, err
    assert "iter 1:" in stdout and "--resume" in stdout and not (out / "final.json").exists()
    code, stdout, err = run(base(files, out) + FAST + ["--resume"], capsys)
    assert code == 0, err
    assert "resuming" in stdout and "done after" in stdout
    final = json.loads((out / "final.json").read_text())
    assert final["latency_ms"] <= 5.0 and final["space"] == "mbv3-tiny" and 0 <= final["accuracy"] <= 1
    assert final["meta"]["holdout_size"] == 64
    # the same search without the interruption reaches the same network
    code, _, err = run(base(files, tmp_path / "u") + FAST, capsys)
    assert code == 0, err
    assert json.loads((tmp_path / "u" / "final.json").read_text())["config"] == final["config"]

    code, stdout, err = run(["finetune", "--search", out, "--epochs", "1", "--steps-per-epoch", "2",
                             "--val-batches", "1", "--batch-size", "32"], capsys)
    assert code == 0, err
    state = torch.load(out / "finetuned.pt", weights_only=True)
    assert any(k.startswith("blocks.") for k in state)

    onnx, tflite = tmp_path / "net.onnx", tmp_path / "net.tflite"
    code, stdout, err = run(["export", "--search", out, "--onnx", onnx, "--tflite", tflite], capsys)
    assert code == 0, err
    from search.export_searched import run_onnx, run_tflite
    from search.finetune import load_finetuned
    _, _, model = load_finetuned(out)
    x = torch.randn(1, 3, 32, 32)
    with torch.no_grad():
        ref = model(x).numpy()
    np.testing.assert_allclose(run_onnx(onnx, x.numpy()), ref, atol=1e-4)
    np.testing.assert_allclose(run_tflite(tflite, x.numpy()), ref, atol=1e-4)

    code, stdout, err = run(["report", "--search", out, "--baselines", "uniform"], capsys)
    assert code == 0, err
    text = (out / "report.md").read_text()
    assert "searched (MCD)" in text and "| uniform |" in text
    assert (out / "trajectory.png").stat().st_size > 0 and (out / "tradeoff.png").stat().st_size > 0


def test_macs_only_search_needs_no_lut(files, tmp_path, capsys):
    code, stdout, err = run(["search", "--supernet", files["supernet"], "--metric", "macs", "--target-macs", "3.5M",
                             "--out", tmp_path / "m", "--initial-reduction", "0.2"] + FAST, capsys)
    assert code == 0, err
    final = json.loads((tmp_path / "m" / "final.json").read_text())
    assert final["macs"] <= 3.5e6


@pytest.mark.parametrize("case, message", [
    ("device", "has no slice in"),
    ("runtime", "no measurements for device"),
    ("unreachable", "is unreachable: the smallest network of mbv3-tiny is at"),
    ("missing", "lacks 5 of the"),
    ("space", "is a super-network of space 'mbv3-tiny', not 'mbv3-large'"),
    ("checkpoint", "not a readable super-network checkpoint"),
    ("exists", "already holds a search"),
    ("notarget", "no target"),
])
def test_bad_inputs_fail_fast_with_one_line(files, tmp_path, capsys, case, message):
    out = tmp_path / "bad"
    argv = base(files, out)
    if case == "device":
        argv[argv.index("--device") + 1] = "phone:nope"
    elif case == "runtime":
        argv += ["--runtime", "onnx"]
    elif case == "unreachable":
        argv = base(files, out, target="0.1")
    elif case == "missing":
        argv = base(files, out, lut=files["partial"])
    elif case == "space":
        argv += ["--space", "mbv3-large"]
    elif case == "checkpoint":
        bogus = tmp_path / "bogus.pt"
        bogus.write_text("not a checkpoint")
        argv[argv.index("--supernet") + 1] = bogus
    elif case == "exists":
        out.mkdir()
        (out / "state.json").write_text("{}")
    elif case == "notarget":
        i = argv.index("--target-latency-ms")
        del argv[i:i + 2]
    code, stdout, err = run(argv, capsys)
    assert code == 1
    lines = err.strip().splitlines()
    assert len(lines) == 1 and message in lines[0], err
    assert not (out / "history.jsonl").exists()  # failed before any work
    if case == "device":
        assert DEVICE in lines[0]  # lists the slices there are
    if case == "missing":
        assert "lutbuild build --space mbv3-tiny" in lines[0] and "e.g." in lines[0]
