"""Every bad input a one-line error (issue 13): the real commands, odd but plausible inputs.

Each test runs `nas-search` / `lutbuild` (in-process through the one CLI runner, or as a
subprocess where processes matter) and checks the exit code, ONE line on stderr naming the
file/field, no traceback, and that the user's files are unchanged. LUT files: test_lut_open.py;
parsers of device output: test_parsers_hypothesis.py.
"""
from __future__ import annotations

import hashlib
import os
import pickle
import re
import signal
import subprocess
import sys
import time
from pathlib import Path

import click
import numpy as np
import pytest
import torch
from PIL import Image

from device_agents.contract import AgentError, BadTiming, BatchResult, DeviceState
from device_agents.local import parse_results
from device_agents.tool_output import parse_perf_test
from lut_db.layer_key import LayerConfig
from profiler import calibrate
from profiler.build_types import BuildOptions
from profiler.cli_runner import DEBUG_ENV, EXIT_BUG, CliGroup
from profiler.measure import measure_batch
from search.checkpoint import save_supernet
from search.spaces import get_space
from search.supernet import SuperNet
from test_mcd_fixtures import run_nas_search as run

LUTBUILD = Path(sys.executable).with_name("lutbuild")


def one_line(err: str, prog: str = "nas-search") -> str:
    lines = [line for line in err.splitlines() if line.strip()]
    assert len(lines) == 1, lines
    assert lines[0].startswith(f"{prog}: error: ") and "Traceback" not in err
    return lines[0]


def digest(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


@pytest.fixture(scope="module")
def cifar(tmp_path_factory):
    root = tmp_path_factory.mktemp("cifar")
    _write_cifar(root, [int(v) for v in np.random.default_rng(0).integers(0, 10, 64)])
    return root


def _write_cifar(root: Path, labels: list[int]) -> None:
    rng = np.random.default_rng(0)
    for name in ("data_batch_1", "test_batch"):
        with open(root / name, "wb") as f:
            pickle.dump({b"data": rng.integers(0, 255, (len(labels), 3072), dtype=np.uint8), b"labels": labels}, f)


def _train(data, out, *more):
    return ["train", "--data", data, "--out", out, "--batch-size", "8", "--steps-per-epoch", "1", "--holdout", "8",
            "--no-progress", *more]


# ----------------------------------------------------------------------------- rows 12, 12b, 12c, 15: options
@pytest.mark.parametrize("args, option", [
    (["train", "--out", "X", "--lr", "nan"], "--lr"),
    (["train", "--out", "X", "--lr", "inf"], "--lr"),
    (["train", "--out", "X", "--lr", "-1"], "--lr"),
    (["train", "--out", "X", "--epochs", "0"], "--epochs"),
    (["train", "--out", "X", "--epochs", "-1"], "--epochs"),
    (["train", "--out", "X", "--batch-size", "0"], "--batch-size"),
    (["train", "--out", "X", "--granularity", "0"], "--granularity"),
    (["train", "--out", "X", "--granularity", "1000"], "--granularity"),
    (["train", "--out", "X", "--workers", "-1"], "--workers"),
    (["train", "--out", "X", "--device", "bogus"], "--device"),
    (["train", "--out", "X", "--steps-per-epoch", "0"], "--steps-per-epoch"),
    (["finetune", "--search", "X", "--lr", "nan"], "--lr"),
    (["finetune", "--search", "X", "--epochs", "0"], "--epochs"),
    (["finetune", "--search", "X", "--batch-size", "0"], "--batch-size"),
    (["report", "--search", "X", "--v1-steps", "0"], "--v1-steps"),
    (["demo", "--out", "X", "--target-fraction", "0"], "--target-fraction"),
    (["demo", "--out", "X", "--target-fraction", "1.5"], "--target-fraction"),
    (["demo", "--out", "X", "--target-fraction", "nan"], "--target-fraction"),
    (["demo", "--out", "X", "--epochs", "0"], "--epochs"),
    (["demo", "--out", "X", "--finetune-epochs", "-1"], "--finetune-epochs"),
    (["train", "--out", "X", "--no-such-option"], "--no-such-option"),  # usage errors: the same one line
])
def test_a_bad_option_is_one_line_exit_1_before_any_work(args, option, tmp_path, capsys):
    out = tmp_path / "out"
    start = time.monotonic()
    code, _, err = run([str(out) if a == "X" else a for a in args], capsys)
    assert code == 1 and option in one_line(err)
    assert not out.exists() and time.monotonic() - start < 30  # nothing built, trained or written


@pytest.mark.skipif(torch.cuda.is_available(), reason="checks the message on a host without CUDA")
def test_device_cuda_without_cuda_is_one_line(tmp_path, capsys):
    code, _, err = run(["train", "--out", tmp_path / "o", "--device", "cuda"], capsys)
    assert code == 1 and "CUDA is not available" in one_line(err)


def test_demo_out_that_is_a_file_is_refused_before_step_1(tmp_path, capsys):
    target = tmp_path / "notes.txt"
    target.write_text("mine")
    code, _, err = run(["demo", "--out", target], capsys)
    assert code == 1 and "notes.txt" in one_line(err) and target.read_text() == "mine"


# ----------------------------------------------------------------------------- row 12: divergence
def test_a_diverging_training_stops_with_one_line_and_keeps_the_last_good_checkpoint(cifar, tmp_path, capsys):
    out = tmp_path / "run"
    # one step per epoch at lr 1e9: epoch 1's loss is finite (taken before the update), a later one is not
    code, _, err = run(_train(cifar, out, "--lr", "1e9", "--epochs", "4"), capsys)
    assert code == 1, err
    line = one_line(err)
    failed = int(re.search(r"training diverged: loss (?:nan|inf|-inf) at epoch (\d+), step 1", line).group(1))
    assert failed >= 2 and f"kept the last good checkpoint {out / 'supernet.pt'} (after epoch {failed - 1})" in line
    payload = torch.load(out / "supernet.pt", weights_only=True)
    assert payload["meta"]["epoch"] == failed - 2  # 0-based: the last finished epoch, not the diverged one
    log = (out / "train_log.jsonl").read_text().splitlines()
    assert len(log) == failed - 1


# ----------------------------------------------------------------------------- row 9: corrupt image
@pytest.mark.parametrize("workers", ["0", "1"])  # 1: raised in a DataLoader worker process
def test_an_imagefolder_with_a_corrupt_image_names_the_file(workers, tmp_path, capsys):
    root = tmp_path / "images"
    for split in ("train", "val"):
        for label in ("cat", "dog"):
            folder = root / split / label
            folder.mkdir(parents=True)
            for i in range(4):
                Image.fromarray(np.full((40, 40, 3), 60 * i, np.uint8)).save(folder / f"{i}.png")
    bad = root / "train" / "dog" / "2.png"
    bad.write_bytes(b"\x89PNG\r\n\x1a\n" + os.urandom(200))  # a PNG header, then noise (a torn download)
    before = digest(bad)
    code, _, err = run(["train", "--data", root, "--out", tmp_path / "o", "--batch-size", "8", "--holdout", "0",
                        "--epochs", "1", "--workers", workers, "--no-progress"], capsys)
    assert code == 1
    line = one_line(err)
    assert str(bad) in line and "unreadable" in line and digest(bad) == before


# ----------------------------------------------------------------------------- row 10: CIFAR labels
@pytest.mark.parametrize("label", [-1, 2_000_000_000])
def test_cifar_labels_outside_the_class_count_are_one_line(label, tmp_path, capsys):
    root = tmp_path / "cifar"
    root.mkdir()
    _write_cifar(root, [0, 1, label, 3] * 4)
    code, _, err = run(_train(root, tmp_path / "o", "--epochs", "1"), capsys)
    assert code == 1
    line = one_line(err)
    assert str(root) in line and f"label {label}" in line and "0..9" in line


# ----------------------------------------------------------------------------- row 11: checkpoint fields
def _payload(tmp_path: Path) -> dict:
    path = save_supernet(tmp_path / "good.pt", SuperNet(get_space("mbv3-tiny")), {"epoch": 0})
    return torch.load(path, weights_only=True)


@pytest.mark.parametrize("field, change, expected", [
    ("space", None, "field 'space' is missing"),
    ("space_overrides", [1, 2], "field 'space_overrides' is list"),
    ("meta", "x", "field 'meta' is str"),
    ("state_dict", {"stem.weight": torch.zeros(1)}, "field 'state_dict' does not fit"),
    ("state_dict", {"stem.weight": "x"}, "field 'state_dict' entry 'stem.weight' is not a named tensor"),
])
def test_a_checkpoint_with_wrong_fields_is_one_line_naming_the_field(field, change, expected, cifar, tmp_path,
                                                                     capsys):
    payload = _payload(tmp_path)
    if change is None:
        del payload[field]
    else:
        payload[field] = change
    out = tmp_path / "run"
    out.mkdir()
    torch.save(payload, out / "supernet.pt")
    before = digest(out / "supernet.pt")
    code, _, err = run(_train(cifar, out, "--resume"), capsys)
    assert code == 1
    line = one_line(err)
    assert expected in line and str(out / "supernet.pt") in line
    assert digest(out / "supernet.pt") == before


# ----------------------------------------------------------------------------- row 17: device numbers
def test_impossible_device_numbers_are_the_agents_error():
    with pytest.raises(AgentError, match="onnxruntime_perf_test reported min_ms = -4.0 ms, expected > 0"):
        parse_perf_test("Total inference requests: 50\nAverage inference time cost: 1.0 ms\n"
                        "P50 Latency: -0.003 s\nMin Latency: -0.004 s\nMax Latency: 0.002 s\n")
    with pytest.raises(AgentError, match="finite"):
        parse_perf_test("Total inference requests: 50\nAverage inference time cost: 1e400 ms\n")
    line = '{"index": 0, "n": 50, "median_ms": 0.0, "mean_ms": 0.1, "p10_ms": 0.0, "p90_ms": 0.1, ' \
           '"std_ms": 0.0, "min_ms": 0.0, "max_ms": 0.2}'
    with pytest.raises(BadTiming, match="m.tflite: the runner reported min_ms = 0.0 ms, expected > 0"):
        parse_results([line], [Path("m.tflite")])


class _DeviceOutput:
    """An agent whose device prints the given runner lines, one list per benchmark call."""

    def __init__(self, *outputs: list[str]) -> None:
        self.outputs = list(outputs)
        self.calls = 0

    def benchmark(self, paths, settings) -> BatchResult:
        self.calls += 1
        timings = parse_results(self.outputs.pop(0), paths)
        return BatchResult(timings, DeviceState(), DeviceState())


def _runner_line(index: int, median: float) -> str:
    return (f'{{"index": {index}, "n": 50, "median_ms": {median}, "mean_ms": {abs(median)}, "p10_ms": {median}, '
            f'"p90_ms": {abs(median)}, "std_ms": 0.0, "min_ms": {median}, "max_ms": {abs(median) + 1}}}')


def test_a_bad_batch_is_measured_once_more_then_the_build_stops_with_one_line():
    paths = [Path("overhead.tflite"), Path("ref.tflite"), Path("layer.tflite")]
    reference = calibrate.Reference(LayerConfig("conv", 8, 8, 8, 8), 1.0)
    bad = [_runner_line(0, 0.1), _runner_line(1, 1.0), _runner_line(2, -0.003)]
    good = [_runner_line(0, 0.1), _runner_line(1, 1.0), _runner_line(2, 0.5)]
    said: list[str] = []
    agent = _DeviceOutput(bad, good)
    no_probe = BuildOptions(state_wait_s=0)  # the calls counted are the batch's own, no fast-state probes
    kept = measure_batch(agent, paths, None, reference, no_probe, said.append)
    assert agent.calls == 2 and kept.layer_timings[0].median_ms == 0.5
    assert any("re-measuring the batch once" in s and "layer.tflite" in s for s in said)
    agent = _DeviceOutput(bad, bad, good)
    with pytest.raises(BadTiming, match="layer.tflite: the runner reported min_ms = -0.003 ms"):
        measure_batch(agent, paths, None, reference, no_probe, said.append)
    assert agent.calls == 2


# ----------------------------------------------------------------------------- bugs: one line, exit 70
@click.group(cls=CliGroup, prog="demo-cli")
def _buggy() -> None:
    """A group built like lutbuild and nas-search."""


@_buggy.command()
def crash() -> None:
    """A command with a bug."""
    raise ZeroDivisionError("division by zero in the frobnicator")


def test_an_unexpected_exception_is_one_line_exit_70_with_the_traceback_in_a_file(capsys, monkeypatch):
    monkeypatch.delenv(DEBUG_ENV, raising=False)
    with pytest.raises(SystemExit) as exc:
        _buggy.main(["crash"])
    assert exc.value.code == EXIT_BUG == 70
    lines = [line for line in capsys.readouterr().err.splitlines() if line.strip()]
    assert len(lines) == 1 and lines[0].startswith("demo-cli: internal error: ZeroDivisionError: division by zero")
    saved = Path(lines[0].split("full traceback in ")[1].split(";")[0])
    assert "Traceback" in saved.read_text() and "frobnicator" in saved.read_text()
    saved.unlink()
    monkeypatch.setenv(DEBUG_ENV, "1")
    with pytest.raises(ZeroDivisionError):  # NETADAPTV2_DEBUG=1: the traceback itself
        _buggy.main(["crash"])


# ----------------------------------------------------------------------------- row 18: orphan workers
def _children(pid: int) -> set[int]:
    """Every descendant of `pid` (Linux /proc)."""
    found, todo = set(), [pid]
    while todo:
        parent = todo.pop()
        for task in Path(f"/proc/{parent}/task").glob("*"):
            try:
                kids = (task / "children").read_text().split()
            except OSError:
                continue
            for kid in map(int, kids):
                if kid not in found:
                    found.add(kid)
                    todo.append(kid)
    return found


def _alive(pid: int) -> bool:
    try:
        state = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0]
    except OSError:
        return False
    return state != "Z"


@pytest.mark.slow
@pytest.mark.skipif(not Path("/proc/self/task").is_dir(), reason="reads the process tree from /proc")
def test_export_workers_exit_when_a_build_is_killed(tmp_path):
    args = [str(LUTBUILD), "build", "--space", "mbv3-tiny", "--runtime", "onnx", "--db", str(tmp_path / "lut.sqlite"),
            "--batch-size", "4", "--jobs", "2", "--repeats", "1", "--cache-dir", str(tmp_path / "cache"), "--quiet"]
    proc = subprocess.Popen(args, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    workers: set[int] = set()
    deadline = time.monotonic() + 240
    try:
        while time.monotonic() < deadline and proc.poll() is None:
            if (tmp_path / "cache").is_dir() and list((tmp_path / "cache").rglob("*.onnx")):
                workers = _children(proc.pid)
                if len(workers) >= 2:
                    break
            time.sleep(0.1)
        assert proc.poll() is None and len(workers) >= 2, "the build ended (or spawned no worker) before the kill"
        os.kill(proc.pid, signal.SIGKILL)
    finally:
        proc.wait(timeout=60)
    deadline = time.monotonic() + 15
    while any(_alive(pid) for pid in workers) and time.monotonic() < deadline:
        time.sleep(0.2)
    survivors = [pid for pid in workers if _alive(pid)]
    for pid in survivors:  # do not leave them behind even when the test fails
        os.kill(pid, signal.SIGKILL)
    assert not survivors, f"{len(survivors)} of {len(workers)} child process(es) outlived the killed build"
