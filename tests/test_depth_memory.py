"""Depth on a laptop (issue 16 part 5): the depth task's default batch, the fail-fast memory
estimate (`search.depth.memory`) and evaluation in chunks."""
from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest
import torch

import search.depth.data as depth_data
from search.checkpoint import load_supernet
from search.depth.memory import (
    ACTIVATION_FACTOR, FIXED_OVERHEAD_BYTES, available_memory_bytes, check_training_memory, estimate_training_memory,
)
from search.depth.metrics import compute
from search.depth.task import EVAL_CHUNK, DepthTask
from search.errors import SearchError
from search.data import make_loader
from search.spaces import get_space
from test_mcd_fixtures import run_nas_search

GIB = 2 ** 30
BENCH = Path(__file__).resolve().parents[1] / "benchmarks" / "bench_depth.py"


def test_a_batch_that_cannot_fit_is_refused_naming_batch_size_and_one_that_fits():
    space = get_space("fastdepth")
    available = 3 * GIB
    with pytest.raises(SearchError) as err:
        check_training_memory(space, 64, "builtin-depth", 8, available_bytes=available)
    message = str(err.value)
    assert "\n" not in message and message.startswith("--batch-size 64: training fastdepth at 224x224 px")
    assert "3.0 GiB is available" in message
    largest = int(message.split("use --batch-size ")[1].split()[0])
    assert 1 <= largest < 64
    check_training_memory(space, largest, "builtin-depth", 8, available_bytes=available)  # fits: no error
    with pytest.raises(SearchError):
        check_training_memory(space, largest + 1, "builtin-depth", 8, available_bytes=available)


def test_the_depth_default_fits_in_4_gb_by_the_estimate():
    """The issue's goal: peak memory <= 4 GB on CPU at the defaults (estimate; measured in docs/depth.md)."""
    space, task = get_space("fastdepth"), DepthTask()
    est = estimate_training_memory(space, task.train_defaults["batch_size"], task.default_data)
    process_before_work = 0.3 * GIB  # nas-search when the check runs: 302 MiB measured (docs/depth.md)
    assert est.needed_bytes + process_before_work <= 4e9
    assert estimate_training_memory(space, 128, task.default_data).needed_bytes > 12 * GIB  # the former default


def test_no_batch_fits_names_the_small_space():
    with pytest.raises(SearchError, match="not even --batch-size 1 fits.*fastdepth-tiny"):
        check_training_memory(get_space("fastdepth"), 8, "builtin-depth", 8, available_bytes=GIB // 2)


def test_available_memory_reads_meminfo_capped_by_a_cgroup_limit(tmp_path):
    proc, cgroup = tmp_path / "proc", tmp_path / "cgroup"
    proc.mkdir()
    cgroup.mkdir()
    (proc / "meminfo").write_text("MemTotal:       24683520 kB\nMemFree:  100 kB\nMemAvailable:   8388608 kB\n")
    assert available_memory_bytes(proc, cgroup) == 8 * GIB  # no cgroup files: meminfo alone
    (cgroup / "memory.max").write_text("max\n")
    assert available_memory_bytes(proc, cgroup) == 8 * GIB
    (cgroup / "memory.max").write_text(f"{4 * GIB}\n")
    (cgroup / "memory.current").write_text(f"{GIB}\n")
    assert available_memory_bytes(proc, cgroup) == 3 * GIB
    assert available_memory_bytes(tmp_path / "none", tmp_path / "none") is None


def test_cli_refuses_before_any_work(tmp_path, capsys):
    out = tmp_path / "run"
    code, _, err = run_nas_search(["train", "--space", "fastdepth", "--data", "builtin-depth", "--batch-size",
                                   "100000", "--device", "cpu", "--out", out, "--no-progress"], capsys)
    lines = [line for line in err.splitlines() if line.strip()]
    assert code == 1 and len(lines) == 1 and "--batch-size 100000" in lines[0], err
    assert not out.exists()  # nothing rendered, nothing written


def test_depth_training_defaults_to_the_task_batch(tmp_path, capsys, monkeypatch):
    monkeypatch.setattr(depth_data, "BUILTIN_SIZES", {"train": 16, "holdout": 8, "val": 8})
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        code, _, err = run_nas_search(["train", "--space", "fastdepth-tiny", "--epochs", "1", "--steps-per-epoch",
                                       "1", "--out", tmp_path, "--no-progress"], capsys)
    finally:
        torch.set_num_threads(threads)
    assert code == 0, err
    _, _, meta = load_supernet(tmp_path / "supernet.pt")
    assert meta["train_config"]["batch_size"] == DepthTask.train_defaults["batch_size"] == 8


def test_evaluation_in_chunks_equals_one_forward_of_the_whole_batch():
    torch.manual_seed(0)
    space, task = get_space("fastdepth-tiny"), DepthTask()
    model = space.build_subnet(space.max_config()).eval()
    data = task.dataset("builtin-depth", "val", space.spec.input_hw, size=EVAL_CHUNK * 2 + 5)
    chunked = task.evaluate(model, make_loader(data, len(data)))
    rgb = torch.stack([data[i][0] for i in range(len(data))])
    depth = torch.stack([data[i][1] for i in range(len(data))])
    with torch.no_grad():
        whole = compute(model(rgb), depth)
    assert chunked["images"] == whole["images"] == len(data)
    for k in ("rmse", "mae", "rel", "delta1"):
        assert chunked[k] == pytest.approx(whole[k], rel=1e-6)


@pytest.mark.slow
def test_the_estimate_bounds_a_measured_training_step_closely():
    """One child process, two real OD training steps of fastdepth at 224 px: the estimate is above the
    measured peak (so the check never refuses what fits) and within 1.6x of it (so it refuses little that does;
    the same step measured 1345-1466 MiB above the process in different runs on this host)."""
    batch = 8
    result = subprocess.run([sys.executable, str(BENCH), "--one-step", str(batch), "--space", "fastdepth",
                             "--threads", "1"], capture_output=True, text=True, timeout=600, check=True)
    child = json.loads(result.stdout.strip().splitlines()[-1])
    measured = (child["peak_mb"] - child["before_mb"]) * 2 ** 20
    est = estimate_training_memory(get_space("fastdepth"), batch, "builtin-depth")
    step = est.needed_bytes - est.data_bytes
    assert step == pytest.approx(FIXED_OVERHEAD_BYTES + ACTIVATION_FACTOR * est.activation_bytes_per_image * batch)
    assert measured <= step <= 1.6 * measured, (measured / 2 ** 20, step / 2 ** 20)
