"""`lutbuild profile`: a user's own model timed with the LUT's protocol, and per operator.

Real files (a small network exported here with the project's exporter), real runtimes (the
runner in its own process: ONNX Runtime, LiteRT), the real CLI; the phone path through the
loopback adbd endpoint with the Python runner on the "phone".
"""
from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest
import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))  # `tests.adbd_endpoint` under any import mode
from tests.adbd_endpoint import start_endpoint  # noqa: E402

from device_agents.adb_keys import ensure_key  # noqa: E402
from device_agents.adb_batch import BatchPlan, runner_script, tool_command  # noqa: E402
from device_agents.contract import BadTiming, BenchmarkSettings, OpProfile, OpTiming  # noqa: E402
from tests.lutbuild_helpers import invoke, one_line_error  # noqa: E402
from profiler.errors import ProfilerError  # noqa: E402
from profiler.export import export_module  # noqa: E402
from profiler.model_files import check_model_file, is_onnx  # noqa: E402

LUTBUILD = Path(sys.executable).with_name("lutbuild")


class SmallNet(torch.nn.Module):
    """Stem conv + BN + ReLU6, depthwise + hard-swish, pointwise, residual add, pool, linear: ~0.25 ms
    on ONNX Runtime (2-core Xeon VM), so the runtime's per-call overhead (~0.04 ms) is a minor part."""

    def __init__(self):
        super().__init__()
        self.stem = torch.nn.Sequential(torch.nn.Conv2d(3, 32, 3, padding=1), torch.nn.BatchNorm2d(32),
                                        torch.nn.ReLU6())
        self.dw = torch.nn.Sequential(torch.nn.Conv2d(32, 32, 3, padding=1, groups=32), torch.nn.Hardswish())
        self.pw = torch.nn.Conv2d(32, 32, 1)
        self.head = torch.nn.Linear(32, 10)

    def forward(self, x):
        x = self.stem(x)
        x = x + self.pw(self.dw(x))
        return self.head(torch.flatten(torch.nn.functional.adaptive_avg_pool2d(x, 1), 1))


def export_small(folder: Path, runtime: str) -> Path:
    torch.manual_seed(0)
    return export_module(SmallNet().eval(), [torch.randn(1, 3, 64, 64)], runtime, folder / f"small.{runtime}",
                         image_out=False)


@pytest.fixture(scope="module")
def models(tmp_path_factory) -> dict[str, Path]:
    """The ONNX file (about a second to export); TFLite (litert-torch: ~15 s) only in `tflite_model`."""
    return {"onnx": export_small(tmp_path_factory.mktemp("models"), "onnx")}


@pytest.fixture(scope="module")
def tflite_model(tmp_path_factory) -> Path:
    return export_small(tmp_path_factory.mktemp("tflite"), "tflite")


# ----------------------------------------------------------------------------- bad inputs, before any work
def test_model_file_checks_name_the_file_and_what_was_expected(tmp_path, models):
    assert check_model_file(models["onnx"]) == "onnx"
    notes = tmp_path / "notes.onnx"
    notes.write_text("these are my notes\n")
    renamed = tmp_path / "really_onnx.tflite"
    renamed.write_bytes(models["onnx"].read_bytes())
    cut = tmp_path / "cut.onnx"
    cut.write_bytes(models["onnx"].read_bytes()[:-7])  # a download that stopped early
    cases = {
        tmp_path / "missing.onnx": "no such file",
        tmp_path: "not a file",
        notes: "not an ONNX model",
        renamed: "not a TFLite model",
        cut: "not an ONNX model",
        tmp_path / "model.txt": None,  # created below: suffix names no runtime
    }
    (tmp_path / "model.txt").write_bytes(models["onnx"].read_bytes())
    for path, expected in cases.items():
        with pytest.raises(ProfilerError) as err:
            check_model_file(path)
        message = str(err.value)
        assert str(path) in message and "\n" not in message
        assert expected is None or expected in message, message
    with pytest.raises(ProfilerError, match="cannot tell the runtime"):
        check_model_file(tmp_path / "model.txt")
    with pytest.raises(ProfilerError, match="--runtime tflite expects a .tflite file"):
        check_model_file(models["onnx"], "tflite")
    assert is_onnx(models["onnx"].read_bytes()) and not is_onnx(b"") and not is_onnx(b"\x1c\0\0\0TFL3" + bytes(64))


def test_bad_inputs_are_one_line_exit_1_before_the_device_is_opened(tmp_path, models):
    notes = tmp_path / "notes.onnx"
    notes.write_text("these are my notes\n")
    unreachable = "127.0.0.1:9"  # would fail to connect: the file's error must come first
    cases = [
        (["profile", tmp_path / "missing.tflite", "--device", unreachable], "no such file"),
        (["profile", notes, "--device", unreachable], "not an ONNX model"),
        (["profile", models["onnx"], "--runtime", "tflite", "--device", unreachable], "expects a .tflite file"),
        (["profile", models["onnx"], "--plot", tmp_path / "x.png", "--device", unreachable], "add --op-profile"),
        (["profile", models["onnx"], "--repeats", "0"], "--repeats"),
        (["profile", models["onnx"], "--device", "local", "--benchmark-binary", notes], "only apply to phones"),
    ]
    for args, expected in cases:
        result = invoke(*args)
        assert result.exit_code == 1, (args, result.output)
        assert expected in one_line_error(result.stderr), (args, result.stderr)
        assert not (tmp_path / "x.png").exists()
    proc = subprocess.run([str(LUTBUILD), "profile", str(notes)], capture_output=True, text=True, timeout=120)
    assert proc.returncode == 1 and "not an ONNX model" in one_line_error(proc.stderr) and proc.stdout == ""


# ----------------------------------------------------------------------------- the typed profile
def test_op_profile_sorts_shares_groups_and_refuses_impossible_rows():
    profile = OpProfile("onnxruntime", 10, (OpTiming("a", "Conv", 1.0, 1), OpTiming("b", "Relu", 0.5, 2),
                                            OpTiming("c", "Conv", 2.5, 1)), "median")
    assert [op.name for op in profile.ops] == ["c", "a", "b"] and profile.total_ms == pytest.approx(4.0)
    assert profile.share(profile.ops[0]) == pytest.approx(0.625)
    assert [(t.op_type, t.ms, t.count) for t in profile.by_type()] == [("Conv", 3.5, 2), ("Relu", 0.5, 2)]
    again = OpProfile.from_json_dict(profile.to_json_dict())
    assert again == profile
    for bad in ({"ops": "x"}, {"ops": [{"name": "a", "op_type": "Conv", "ms": -1.0, "count": 1}]},
                {"ops": [{"name": "a", "op_type": "Conv", "ms": float("nan"), "count": 1}]},
                {"ops": [{"name": "a", "op_type": "Conv", "ms": 1.0, "count": 0}]},
                {"ops": [{"name": 3, "op_type": "Conv", "ms": 1.0, "count": 1}]},
                {"ops": [], "runs": -2}, {"ops": [], "statistic": "p99"}):
        with pytest.raises(BadTiming):
            OpProfile.from_json_dict(bad)


def test_op_profiling_flags_reach_the_phone_only_when_asked():
    plan = BatchPlan((Path("a.onnx"),), ("m0001.onnx",))
    plain = BenchmarkSettings(runtime="onnx")
    assert "--op-profile" not in runner_script(plan, plain, "7")
    profiled = runner_script(plan, BenchmarkSettings(runtime="onnx", op_profile=True), "7")
    assert " --op-profile" in profiled and profiled.replace(" --op-profile", "") == runner_script(plan, plain, "7")
    tflite = BenchmarkSettings(runtime="tflite")
    assert "--enable_op_profiling=true" not in tool_command("tflite", "bm", "m.tflite", tflite)
    assert tool_command("tflite", "bm", "m.tflite", BenchmarkSettings(runtime="tflite", op_profile=True)) == \
        [*tool_command("tflite", "bm", "m.tflite", tflite), "--enable_op_profiling=true"]


# ----------------------------------------------------------------------------- real runs on this host
def test_profile_onnx_locally_with_operators_json_and_plot(tmp_path, models):
    out_json, out_png = tmp_path / "p.json", tmp_path / "ops.png"
    result = invoke("profile", models["onnx"], "--device", "local", "--op-profile", "--top", 3, "--json", out_json,
                    "--plot", out_png, "--quiet")
    assert result.exit_code == 0, result.output + result.stderr
    assert "median" in result.output and "CoV" in result.output and "device before:" in result.output
    report = json.loads(out_json.read_text())
    assert report["runtime"] == "onnx" and report["runtime_version"].startswith("onnxruntime")
    assert report["device"]["device_id"].startswith("local:")
    assert report["settings"]["op_profile"] is True and report["settings"]["repeats"] == 3
    t = report["timing"]
    assert t["n"] >= 3 * 50 and t["min_ms"] <= t["p10_ms"] <= t["median_ms"] <= t["p90_ms"] <= t["max_ms"]
    assert t["cov_pct"] == pytest.approx(100 * t["std_ms"] / t["mean_ms"])
    assert {"temperatures_c", "throttled", "governor"} <= set(report["state_before"]) & set(report["state_after"])
    ops = report["op_profile"]
    assert ops["source"] == "onnxruntime" and ops["statistic"] == "median"
    assert ops["runs"] == t["n"]  # the timed runs, not the warm-up ones
    ms = [op["ms"] for op in ops["ops"]]
    assert ms == sorted(ms, reverse=True) and len(ms) >= 4  # the full list, not the --top 3
    assert sum(op["share"] for op in ops["ops"]) == pytest.approx(1.0)
    assert {"Conv", "Gemm"} <= {op["op_type"] for op in ops["ops"]} and ops["by_type"][0]["op_type"] == "Conv"
    # the operators' medians add up to most of the model's median (the rest: the runtime's own time per run)
    assert 0.5 * t["median_ms"] <= ops["total_ms"] <= 1.1 * t["median_ms"], (ops["total_ms"], t["median_ms"])
    assert "... " in result.output and "more (all in --json)" in result.output
    assert out_png.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"


@pytest.mark.slow
def test_profile_tflite_locally_says_in_one_line_that_litert_has_no_operator_profile(tmp_path, tflite_model):
    assert check_model_file(tflite_model) == "tflite"
    out_json = tmp_path / "p.json"
    result = invoke("profile", tflite_model, "--op-profile", "--plot", tmp_path / "ops.png", "--json", out_json,
                    "--quiet")
    assert result.exit_code == 0, result.output + result.stderr
    note = [line for line in result.output.splitlines() if line.startswith("operators:")]
    assert len(note) == 1 and "LiteRT's Python interpreter has no per-operator profiler" in note[0]
    assert "no plot written" in result.output and not (tmp_path / "ops.png").exists()
    report = json.loads(out_json.read_text())
    assert report["runtime"] == "tflite" and report["op_profile"] is None and "LiteRT" in report["op_profile_note"]
    assert report["timing"]["median_ms"] > 0 and report["settings"]["delegate"] == "xnnpack"

    plain = invoke("profile", tflite_model, "--json", out_json, "--quiet", "--repeats", 1)
    assert plain.exit_code == 0 and "operators" not in plain.output
    report = json.loads(out_json.read_text())
    assert report["op_profile"] is None and report["op_profile_note"] == ""
    assert report["settings"]["op_profile"] is False


# ----------------------------------------------------------------------------- a "phone" over ADB
@pytest.fixture
def phone(tmp_path):
    key = ensure_key(tmp_path / "keys" / "adbkey")
    host, port, stop = start_endpoint(tmp_path / "sandbox", [Path(str(key) + ".pub")],
                                      props={"ro.serialno": "LOOPP", "ro.product.model": "Profile Phone"})
    yield f"{host}:{port}", key, stop.endpoint
    stop()


def test_profile_onnx_on_a_phone_with_the_python_runner_carries_the_operators_back(tmp_path, models, phone):
    serial, key, endpoint = phone
    out_json = tmp_path / "p.json"
    result = invoke("profile", models["onnx"], "--device", serial, "--transport", "adb-shell", "--adb-key", key,
                    "--op-profile", "--repeats", 1, "--json", out_json, "--cache-dir", tmp_path / "cache", "--quiet")
    assert result.exit_code == 0, result.output + result.stderr
    report = json.loads(out_json.read_text())
    assert report["device"]["device_id"] == "android:Profile_Phone:LOOPP"
    assert report["op_profile"]["source"] == "onnxruntime" and report["op_profile"]["runs"] == report["timing"]["n"]
    assert "Conv" in {op["op_type"] for op in report["op_profile"]["ops"]}
    assert any("batch.sh" in c for c in endpoint.shell_log)

    # onnxruntime_perf_test has no profile to carry back: one line, before anything is pushed
    fake_tool = tmp_path / "onnxruntime_perf_test"
    fake_tool.write_bytes(b"\x7fELF")
    pushes = len(endpoint.shell_log)
    result = invoke("profile", models["onnx"], "--device", serial, "--transport", "adb-shell", "--adb-key", key,
                    "--op-profile", "--benchmark-binary", fake_tool, "--cache-dir", tmp_path / "cache", "--quiet")
    assert result.exit_code == 1
    assert "not supported" in one_line_error(result.stderr) and "--runner python" in result.stderr
    assert not any("batch.sh" in c for c in endpoint.shell_log[pushes:])


STAND_IN_BENCHMARK_MODEL = """#!/bin/sh
case "$1" in --help) echo "usage: benchmark_model --graph=..."; exit 0 ;; esac
for arg in "$@"; do
  [ "$arg" = "--enable_op_profiling=true" ] && exec cat '{fixture}'
done
echo "ERROR: this stand-in only answers --enable_op_profiling=true"; exit 3
"""


def test_profile_tflite_on_a_phone_with_benchmark_model_parses_its_operator_tables(tmp_path, phone):
    """The vendor tool is a stand-in script that prints a benchmark_model op-profiling output
    (tests/data/tool_output) when, and only when, the flag reached the phone's command line."""
    serial, key, _ = phone
    fixture = Path(__file__).parent / "data" / "tool_output" / "benchmark_model_op_profiling_android_xnnpack.txt"
    tool = tmp_path / "benchmark_model"
    tool.write_text(STAND_IN_BENCHMARK_MODEL.format(fixture=fixture))
    model = tmp_path / "model.tflite"
    model.write_bytes(b"\x1c\x00\x00\x00TFL3" + bytes(56))  # passes the host's file check; the stand-in ignores it
    out_json = tmp_path / "p.json"
    result = invoke("profile", model, "--device", serial, "--transport", "adb-shell", "--adb-key", key,
                    "--benchmark-binary", tool, "--op-profile", "--json", out_json, "--plot", tmp_path / "ops.png",
                    "--cache-dir", tmp_path / "cache", "--quiet")
    assert result.exit_code == 0, result.output + result.stderr
    report = json.loads(out_json.read_text())
    assert report["device"]["device_id"] == "android:Profile_Phone:LOOPP"
    assert report["runtime_version"].startswith("benchmark_model sha256:")
    assert report["timing"]["n"] == 50 and report["timing"]["mean_ms"] == pytest.approx(1.8215)
    ops = report["op_profile"]
    assert (ops["source"], ops["statistic"], ops["runs"]) == ("benchmark_model", "mean", 50)
    assert ops["total_ms"] == pytest.approx(1.789) and ops["ops"][0]["op_type"] == "Convolution (NHWC, F32) GEMM"
    assert "of the model's mean" in result.output and (tmp_path / "ops.png").read_bytes()[:4] == b"\x89PNG"
