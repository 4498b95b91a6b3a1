"""Batch text without a phone: generated names, quoting, results parsing, pull paths, df."""
import shlex
from pathlib import Path

import pytest

from device_agents.adb_batch import (BATCH_DIR, parse_df_available_kb, plan_batch, runner_script,
                                     safe_local_path, split_tool_results, tool_script)
from device_agents.adb_transport import DeviceDisconnected, split_rc, with_rc
from device_agents.contract import AgentError, BenchmarkSettings


def test_device_names_are_generated_not_taken_from_user_text():
    plan = plan_batch([Path("/x/a;touch pwned.onnx"), Path("/x/$(reboot).tflite"), Path("/x/weird name")])
    assert plan.device_names == ("m0001.onnx", "m0002.tflite", "m0003.bin")
    assert all(p.startswith(BATCH_DIR + "/m000") for p in plan.device_paths)


def test_scripts_quote_everything():
    plan = plan_batch([Path("a.tflite"), Path("b.tflite")])
    s = BenchmarkSettings(runtime="tflite")
    text = tool_script(plan, "tflite", "../benchmark_model", s, "f0", True)
    assert "taskset f0 ../benchmark_model --graph=m0001.tflite" in text
    for line in text.splitlines()[1:]:
        shlex.split(line)  # every line is well-formed sh words
    assert "--cpus 7" in runner_script(plan, BenchmarkSettings(runtime="onnx"), "7")
    assert "--fast-passes 10.0" in runner_script(plan, BenchmarkSettings(runtime="onnx", fast_passes_pct=10.0), "7")
    assert "--fast-passes" not in runner_script(plan, BenchmarkSettings(runtime="onnx"), "7")  # off by default


def test_rc_marker_round_trip():
    assert with_rc("ls") == "(ls\n) 2>&1; echo __RC=$?"
    assert split_rc("a\nb\n__RC=3\n") == ("a\nb", 3)
    assert split_rc("__RC=0\r\n") == ("", 0)
    with pytest.raises(DeviceDisconnected):
        split_rc("output cut short")


def test_tool_results_split_per_model():
    text = ("@@NETADAPT-BEGIN 0\nline a\n@@NETADAPT-END 0 rc=0\n"
            "@@NETADAPT-BEGIN 1\nboom\n@@NETADAPT-END 1 rc=134\n")
    assert split_tool_results(text) == {0: ("line a\n", 0), 1: ("boom\n", 134)}


@pytest.mark.parametrize("name", ["../evil", "a/../../evil", "/etc/passwd", "", "..", "a\\..\\b"])
def test_pulled_names_cannot_leave_the_workdir(tmp_path, name):
    with pytest.raises(AgentError):
        safe_local_path(tmp_path, name)


def test_pulled_names_inside_the_workdir(tmp_path):
    assert safe_local_path(tmp_path, "batch/results.jsonl") == tmp_path.resolve() / "batch" / "results.jsonl"


@pytest.mark.parametrize("text,kb", [
    ("Filesystem     1K-blocks    Used Available Use% Mounted on\n/dev/block/dm-5 5000 1000 4000 20% /data\n", 4000),
    ("Filesystem 1K-blocks Used Available Use% Mounted on\n/dev/block/very/long/name\n"
     " 5000 1000 3000 20% /data\n", 3000),
    ("Filesystem Size Used Free Blksize\n/data 1.5G 1.0G 500.0M 4096\n", 512000),
    ("df: /nope: No such file\n", None),
])
def test_df_parsing(text, kb):
    assert parse_df_available_kb(text) == kb
