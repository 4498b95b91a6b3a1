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

from test_mcd_fixtures import DEVICE, run_nas_search as run, synth_lut, untrained_supernet_and_lut

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
    made = untrained_supernet_and_lut(tmp_path_factory.mktemp("cli"))
    return {**made, "partial": synth_lut(made["root"] / "partial.sqlite", drop=5)}


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


@pytest.mark.parametrize("option, value", [
    ("--target-latency-ms", "inf"), ("--target-latency-ms", "nan"), ("--target-latency-ms", "0"),
    ("--target-latency-ms", "-1"), ("--target-latency-ms", "5,inf"), ("--target-latency-ms", "4,5"),
    ("--target-macs", "inf"), ("--target-macs", "nan"), ("--target-macs", "0M"), ("--target-macs", "-3M"),
])
def test_non_finite_or_non_positive_targets_are_rejected(files, tmp_path, capsys, option, value):
    """Issue 13 row 8: no Infinity/NaN reaches final.json or state.json; rejected before any work."""
    out = tmp_path / "bad"
    argv = base(files, out)
    i = argv.index("--target-latency-ms")
    argv[i:i + 2] = [option, value]
    code, _, err = run(argv, capsys)
    lines = err.strip().splitlines()
    assert code == 1 and len(lines) == 1 and option in lines[0], err
    assert "Traceback" not in err and not out.exists()


def test_out_that_is_a_file_is_one_line(files, tmp_path, capsys):
    """Issue 13 row 13: `search --out` an existing file."""
    out = tmp_path / "a-file"
    out.write_text("keep me")
    for target in ("5.0", "6,5"):
        code, _, err = run(base(files, out, target=target), capsys)
        lines = err.strip().splitlines()
        assert code == 1 and len(lines) == 1 and "is a file, not a folder" in lines[0] and str(out) in lines[0], err
        assert out.read_text() == "keep me"


@pytest.mark.parametrize("name, content, message", [
    ("state.json", '{"iteration": 2, "conf', "state.json: not valid JSON"),
    ("state.json", '[1, 2]', "state.json: not a search checkpoint"),
    ("state.json", None, "state.json: field 'rng_state' is missing or not a random-generator state"),
    ("history.jsonl", '{"iteration": 0}\nnot json\n{"iteration": 1}\n', "history.jsonl: line 2 is not JSON"),
])
def test_resume_with_a_corrupt_file_names_it(files, tmp_path, capsys, name, content, message):
    """Issue 13 row 14: `--resume` with a corrupt state.json (or history, final) -> one line naming the file."""
    out = tmp_path / "s"
    code, _, err = run(base(files, out, target="7.0") + FAST + ["--stop-after", "1"], capsys)
    assert code == 0, err
    path = out / name
    if content is None:  # valid JSON, one field broken
        state = json.loads(path.read_text())
        state["rng_state"] = "garbage"
        content = json.dumps(state)
    path.write_text(content)
    code, _, err = run(base(files, out, target="7.0") + FAST + ["--resume"], capsys)
    lines = err.strip().splitlines()
    assert code == 1 and len(lines) == 1 and message in lines[0] and str(out) in lines[0], err
    assert path.read_text() == content  # left as it was for the user to inspect


def test_corrupt_final_json_is_one_line_naming_it(files, tmp_path, capsys):
    """Issue 13 row 14 (final.json): the report and a resumed multi-target search read it."""
    out = tmp_path / "multi"
    argv = base(files, out, target="7,6.5") + FAST + ["--pareto-baselines", ""]
    code, _, err = run(argv, capsys)
    assert code == 0, err
    final = out / "t7ms" / "final.json"
    final.write_text("{not json")
    for command in (argv + ["--resume"], ["report", "--search", out / "t7ms"]):
        code, _, err = run(command, capsys)
        lines = err.strip().splitlines()
        assert code == 1 and len(lines) == 1 and f"{final}: not valid JSON" in lines[0], err
    final.write_text('{"space": "mbv3-tiny"}')
    code, _, err = run(["report", "--search", out / "t7ms"], capsys)
    assert code == 1 and "final.json: not a search result" in err
