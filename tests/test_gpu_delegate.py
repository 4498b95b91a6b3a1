"""`--delegate gpu` (issue 12): benchmark_model's GPU flags sent over the loopback adbd, the
parser of what the GPU delegate took, and the one-line refusals where there is no GPU delegate.

No phone GPU here: the tool is a stand-in script on the loopback endpoint that records its
arguments and prints what a real benchmark_model prints with `--use_gpu=true` (the parser's
texts are outputs quoted in tensorflow issues #56301, #58379 and mattn/go-tflite#7).
"""
from __future__ import annotations

import sys
from pathlib import Path

import pytest
from click.testing import CliRunner

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))  # `tests.adbd_endpoint` under any import mode
from tests.adbd_endpoint.fixtures import authorized_endpoint  # noqa: E402

from device_agents.adb_agent import open_agent  # noqa: E402
from device_agents.adb_batch import tool_command  # noqa: E402
from device_agents.contract import BenchmarkSettings  # noqa: E402
from device_agents.gpu_delegate import parse_gpu_delegation  # noqa: E402
from profiler.cli import cli  # noqa: E402
from profiler.runtimes import slice_runtime  # noqa: E402

PARTIAL_LOGCAT = """\
05-31 10:38:42.583 22206 22206 I tflite  : Use gpu: [1]
05-31 10:38:42.583 22206 22206 I tflite  : Use xnnpack: [0]
05-31 10:38:42.589 22206 22206 I tflite  : Created TensorFlow Lite delegate for GPU.
05-31 10:38:42.589 22206 22206 I tflite  : GPU delegate created.
05-31 10:38:42.607 22206 22206 E tflite  : Following operations are not supported by GPU delegate:
05-31 10:38:42.607 22206 22206 E tflite  : UNPACK: Operation is not supported.
05-31 10:38:42.607 22206 22206 E tflite  : 294 operations will run on the GPU, and the remaining 26 operations will run on the CPU.
05-31 10:38:42.700 22206 22206 I tflite  : Replacing 294 out of 320 node(s) with delegate (TfLiteGpuDelegateV2) node, yielding 4 partitions for the whole graph.
05-31 10:38:42.900 22206 22206 I tflite  : Explicitly applied GPU delegate, and the model graph will be partially executed by the delegate w/ 2 delegate kernels.
"""  # noqa: E501

COMPLETE = """\
Use gpu: [1]
INFO: Created TensorFlow Lite delegate for GPU.
GPU delegate created.
INFO: Initialized OpenCL-based API.
INFO: Created 1 GPU delegate kernels.
Explicitly applied GPU delegate, and the model graph will be completely executed by the delegate.
"""

OLD_NONE = """\
INFO: Created TensorFlow Lite delegate for GPU.
Next operations are not supported by GPU delegate:
ADD: 
AVERAGE_POOL_2D: 
CONV_2D: 
First 0 operations will run on the GPU, and the remaining 65 on the CPU.
"""  # noqa: W291


def test_parser_reads_partial_complete_and_failed_delegation():
    partial = parse_gpu_delegation(PARTIAL_LOGCAT)
    assert (partial.applied, partial.complete, partial.gpu_ops, partial.cpu_ops, partial.partitions) == (
        True, False, 294, 26, 4)
    assert partial.fallback == ("UNPACK",) and partial.summary == "gpu+cpu(UNPACK)"
    complete = parse_gpu_delegation(COMPLETE)
    assert (complete.applied, complete.complete, complete.fallback, complete.summary) == (True, True, (), "gpu")
    none = parse_gpu_delegation(OLD_NONE)
    assert (none.applied, none.complete, none.gpu_ops, none.cpu_ops) == (False, False, 0, 65)
    assert none.fallback == ("ADD", "AVERAGE_POOL_2D", "CONV_2D")
    assert parse_gpu_delegation("count=5 avg=480\n").summary == "unknown"  # a CPU run says nothing


def test_gpu_slices_name_the_precision_and_float32_slices_stay_as_they_were():
    assert slice_runtime("tflite", delegate="gpu").options == "threads=1;delegate=gpu;gpu_precision_loss=false"
    assert slice_runtime("tflite", delegate="gpu", gpu_precision_loss=True, dtype="int8").options == (
        "threads=1;delegate=gpu;gpu_precision_loss=true;dtype=int8")
    assert slice_runtime("tflite").options == "threads=1;delegate=xnnpack"
    command = tool_command("tflite", "bm", "m.tflite", BenchmarkSettings("tflite", delegate="gpu"))
    assert "--use_gpu=true" in command and "--gpu_precision_loss_allowed=false" in command
    assert "--use_xnnpack=false" in command
    assert not [a for a in tool_command("tflite", "bm", "m.tflite", BenchmarkSettings("tflite")) if "gpu" in a]


def test_local_device_refuses_the_gpu_delegate_in_one_line(tmp_path):
    result = CliRunner().invoke(cli, ["build", "--space", "mbv3-tiny", "--runtime", "tflite", "--db",
                                      str(tmp_path / "l.sqlite"), "--delegate", "gpu"])
    assert result.exit_code == 1
    lines = [ln for ln in result.output.splitlines() if ln.strip()]
    assert len(lines) == 1 and "--delegate gpu" in lines[0] and "local" in lines[0], lines
    assert not (tmp_path / "l.sqlite").exists()
    result = CliRunner().invoke(cli, ["build", "--space", "mbv3-tiny", "--runtime", "tflite", "--db",
                                      str(tmp_path / "l.sqlite"), "--gpu-precision-loss"])
    assert result.exit_code == 1 and "--gpu-precision-loss" in result.output


STAND_IN = """#!/bin/sh
case "$1" in --help) echo "usage: benchmark_model --graph=..."; exit 0 ;; esac
echo "$@" >> ../tool_args.log
echo "Use gpu: [1]"
echo "INFO: Created TensorFlow Lite delegate for GPU."
echo "ERROR: Following operations are not supported by GPU delegate:"
echo "HARD_SWISH: Operation is not supported."
echo "2 operations will run on the GPU, and the remaining 1 operations will run on the CPU."
echo "INFO: Replacing 2 out of 3 node(s) with delegate (TfLiteGpuDelegateV2) node, yielding 2 partitions."
echo "Running benchmark for at least 1 iterations and at least 0.5 seconds"
echo "count=3 first=900 curr=800 min=800 max=900 avg=850 std=40"
echo "Running benchmark for at least 5 iterations and at least 0 seconds"
echo "count=5 first=500 curr=400 min=400 max=600 avg=480 std=70"
"""


def test_gpu_command_line_over_the_loopback_adbd_and_its_output_parsed(tmp_path):
    tool = tmp_path / "benchmark_model"
    tool.write_text(STAND_IN)
    models = [tmp_path / "a.tflite", tmp_path / "b.tflite"]
    for m in models:
        m.write_bytes(b"TFL3 stand-in")
    with authorized_endpoint(tmp_path) as (serial, key, ep):
        agent = open_agent(serial, key_path=key, workdir=tmp_path / "work", transport="adb-shell", auth_timeout_s=2,
                           backoff_s=0.05, settle_max_s=0, runtime="tflite", binary=tool)
        result = agent.benchmark(models, BenchmarkSettings("tflite", delegate="gpu", gpu_precision_loss=True))
        agent.close()
    assert [t.median_ms for t in result.timings] == [pytest.approx(0.48)] * 2
    sent = (tmp_path / "sandbox/netadaptv2/tool_args.log").read_text().splitlines()
    assert len(sent) == 2
    for line in sent:
        assert "--use_gpu=true" in line and "--gpu_precision_loss_allowed=true" in line
        assert "--use_xnnpack=false" in line and "--num_threads=1" in line
    delegation = parse_gpu_delegation((tmp_path / "sandbox/netadaptv2/batch/results.txt").read_text())
    assert delegation.fallback == ("HARD_SWISH",) and delegation.complete is False
    assert (delegation.gpu_ops, delegation.cpu_ops, delegation.partitions) == (2, 1, 2)


def test_the_python_runner_on_a_phone_refuses_the_gpu_delegate(tmp_path):
    with authorized_endpoint(tmp_path) as (serial, key, ep):
        result = CliRunner().invoke(cli, [
            "build", "--space", "mbv3-tiny", "--runtime", "tflite", "--db", str(tmp_path / "l.sqlite"),
            "--delegate", "gpu", "--device", serial, "--adb-key", str(key), "--transport", "adb-shell",
            "--runner", "python", "--quiet"])
    assert result.exit_code == 1
    lines = [ln for ln in result.output.splitlines() if ln.strip()]
    assert len(lines) == 1 and "--delegate gpu" in lines[0] and "--benchmark-binary" in lines[0], lines
    assert not (tmp_path / "l.sqlite").exists()  # refused before the LUT file is touched
