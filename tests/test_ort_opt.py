"""`--ort-opt`: ONNX Runtime's graph optimization level as a slice option (docs/lut.md).

The default level (ORT_ENABLE_ALL) leaves every existing options string byte-identical; a
lower level is its own slice (`;ort_opt=extended`), reaches the runner (its session and its
profiled graph show it) and the phone's onnxruntime_perf_test (`-o`)."""
from __future__ import annotations

import json
import sqlite3
from pathlib import Path

import numpy as np
import onnx
import pytest
from onnx import TensorProto, helper, numpy_helper

from device_agents import runner
from device_agents.adb_batch import BatchPlan, runner_script, tool_command
from device_agents.contract import BenchmarkSettings
from lut_db.layer_key import RuntimeSpec
from profiler.errors import ProfilerError
from profiler.runtimes import benchmark_settings, slice_runtime
from lutbuild_helpers import invoke


def test_default_level_leaves_every_options_string_unchanged_and_others_add_ort_opt():
    assert RuntimeSpec("tflite").options == "threads=1;delegate=xnnpack"
    assert slice_runtime("onnx").options == "threads=1;delegate=cpu"
    assert slice_runtime("onnx", 2, ort_opt="all").options == "threads=2;delegate=cpu"
    assert slice_runtime("onnx", dtype="int8").options == "threads=1;delegate=cpu;dtype=int8"
    assert slice_runtime("tflite", delegate="gpu", gpu_precision_loss=True).options == \
        "threads=1;delegate=gpu;gpu_precision_loss=true"
    assert slice_runtime("onnx", ort_opt="extended").options == "threads=1;delegate=cpu;ort_opt=extended"
    assert slice_runtime("onnx", dtype="int8", ort_opt="basic").options == \
        "threads=1;delegate=cpu;dtype=int8;ort_opt=basic"


def test_bad_or_tflite_levels_are_refused():
    with pytest.raises(ProfilerError, match="--ort-opt: unknown .* 'fast'"):
        slice_runtime("onnx", ort_opt="fast")
    with pytest.raises(ProfilerError, match="only with --runtime onnx"):
        slice_runtime("tflite", ort_opt="extended")


@pytest.mark.parametrize("args, needle", [
    (["--runtime", "onnx", "--ort-opt", "fast"], "'fast' is not one of 'all', 'extended', 'basic'"),
    (["--runtime", "tflite", "--ort-opt", "extended"], "--ort-opt extended: only with --runtime onnx"),
])
@pytest.mark.parametrize("command", ["build", "verify"])
def test_cli_refuses_bad_level_in_one_line_exit_1_before_touching_the_lut(command, args, needle, tmp_path):
    db = tmp_path / "lut.sqlite"
    result = invoke(command, "--space", "mbv3-tiny", "--db", db, *args, "--cache-dir", tmp_path / "c")
    assert result.exit_code == 1, result.output
    assert needle in result.output and len(result.output.strip().splitlines()) == 1
    assert not db.exists()


def test_phone_commands_carry_the_level_and_the_default_adds_nothing():
    default = BenchmarkSettings(runtime="onnx")
    extended = benchmark_settings("onnx", ort_opt="extended")
    assert extended.ort_opt == "extended" and extended.delegate == "none"
    assert "-o" not in tool_command("onnx", "perf", "m.onnx", default)
    cmd = tool_command("onnx", "perf", "m.onnx", extended)
    assert cmd[cmd.index("-o") + 1] == "2" and cmd[-1] == "m.onnx"
    basic = tool_command("onnx", "perf", "m.onnx", BenchmarkSettings(runtime="onnx", ort_opt="basic"))
    assert basic[basic.index("-o") + 1] == "1"
    assert "--ort-opt" not in runner_script_text(default)
    assert "--ort-opt extended" in runner_script_text(extended)


def runner_script_text(settings: BenchmarkSettings) -> str:
    plan = BatchPlan(host_paths=(Path("m.onnx"),), device_names=("m.onnx",))
    return runner_script(plan, settings, "")


def two_convs(path: Path) -> Path:
    """1x8x16x16 -> conv3x3 -> relu -> conv3x3: a chain ORT_ENABLE_ALL keeps in NCHWc on x86."""
    rng = np.random.default_rng(0)
    inits = [numpy_helper.from_array(rng.standard_normal((8, 8, 3, 3)).astype(np.float32), f"w{i}")
             for i in (1, 2)]
    nodes = [helper.make_node("Conv", ["x", "w1"], ["a"], pads=[1, 1, 1, 1]),
             helper.make_node("Relu", ["a"], ["b"]),
             helper.make_node("Conv", ["b", "w2"], ["y"], pads=[1, 1, 1, 1])]
    graph = helper.make_graph(nodes, "two_convs",
                              [helper.make_tensor_value_info("x", TensorProto.FLOAT, [1, 8, 16, 16])],
                              [helper.make_tensor_value_info("y", TensorProto.FLOAT, [1, 8, 16, 16])], inits)
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 13)])
    model.ir_version = 8
    onnx.checker.check_model(model)
    onnx.save(model, path)
    return path


def profiled_ops(model: Path, out: Path, *level: str) -> tuple[dict, list[dict]]:
    rc = runner.main([str(model), "--runtime", "onnx", "--warmup", "1", "--min-runs", "2", "--max-runs", "2",
                      "--min-seconds", "0", "--op-profile", "--out", str(out), *level])
    assert rc == 0
    header, line = [json.loads(t) for t in out.read_text().splitlines()]
    assert "error" not in line and "op_profile_error" not in line, line
    return header, line["op_profile"]["ops"]


def nchwc_ops(ops: list[dict]) -> list[str]:
    """Operators of the blocked layout: `*_nchwc` convolutions and the reorders around them."""
    return [op["name"] for op in ops if "nchwc" in op["name"].lower() or op["op_type"].startswith("Reorder")]


def test_runner_session_runs_the_level_it_was_given(tmp_path):
    model = two_convs(tmp_path / "two.onnx")
    header, ops_all = profiled_ops(model, tmp_path / "all.jsonl")
    assert header["ort_opt"] == "all"
    if not nchwc_ops(ops_all):
        pytest.skip(f"this CPU's ONNX Runtime applies no NCHWc layout at ORT_ENABLE_ALL ({ops_all})")
    assert "ReorderOutput" in {op["op_type"] for op in ops_all}  # the layout change a layer alone pays
    header, ops_ext = profiled_ops(model, tmp_path / "ext.jsonl", "--ort-opt", "extended")
    assert header["ort_opt"] == "extended"
    assert ops_ext and not nchwc_ops(ops_ext)
    session = runner.OnnxModel(str(model), 1, "none", np.random.default_rng(0), ort_opt="basic").session
    assert session.get_session_options().graph_optimization_level.name == "ORT_ENABLE_BASIC"


@pytest.mark.slow
def test_an_extended_onnx_lut_is_its_own_slice_beside_the_default(tmp_path):
    db, cache = tmp_path / "lut.sqlite", tmp_path / "cache"
    common = ["build", "--space", "mbv3-tiny", "--runtime", "onnx", "--db", db, "--cache-dir", cache, "--quiet",
              "--jobs", "1", "--repeats", "1", "--limit", "3"]
    result = invoke(*common)
    assert result.exit_code == 0, result.output
    with sqlite3.connect(db) as conn:
        default_rows = conn.execute("SELECT * FROM measurements ORDER BY layer_key").fetchall()
    result = invoke(*common, "--ort-opt", "extended")
    assert result.exit_code == 0, result.output
    assert "threads=1;delegate=cpu;ort_opt=extended" in result.output
    with sqlite3.connect(db) as conn:
        slices = dict(conn.execute("SELECT runtime_options, COUNT(*) FROM measurements GROUP BY runtime_options"))
        assert conn.execute("SELECT * FROM measurements WHERE runtime_options = ? ORDER BY layer_key",
                            ["threads=1;delegate=cpu"]).fetchall() == default_rows  # default slice untouched
    assert slices == {"threads=1;delegate=cpu": 3, "threads=1;delegate=cpu;ort_opt=extended": 3}


def test_runner_refuses_a_level_for_tflite(capsys):
    with pytest.raises(SystemExit) as exc:
        runner._parse_args(["--runtime", "tflite", "--ort-opt", "extended", "m.tflite"])
    assert exc.value.code == 2 and "--ort-opt: only with --runtime onnx" in capsys.readouterr().err
