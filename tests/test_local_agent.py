"""The on-host runner, the local agent and the device-state readers, on real tiny models."""
import dataclasses
import importlib.util
import json
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from device_agents import local
from device_agents.device_state import (
    STATE_COMMAND,
    busy_fraction,
    others_busy,
    fastest_cores,
    parse_state_output,
    read_state,
)
from device_agents.local import LocalAgent, parse_results
from device_agents.contract import AgentError, BadTiming, BenchmarkSettings, DeviceState

RUNNER = Path(local.__file__).with_name("runner.py")
FAST = ["--warmup", "2", "--min-runs", "20", "--max-runs", "200", "--min-seconds", "0.01"]


# ----------------------------------------------------------------------------- models
def make_onnx(path: Path, channels: int = 8, hw: int = 16) -> Path:
    """Conv + Add with two inputs (x, z), built with onnx.helper: no torch."""
    import onnx
    from onnx import TensorProto, helper, numpy_helper

    w = numpy_helper.from_array(np.random.default_rng(0).random((channels, channels, 3, 3), np.float32), "w")
    shape = [1, channels, hw, hw]
    graph = helper.make_graph(
        [
            helper.make_node("Conv", ["x", "w"], ["y"], pads=[1, 1, 1, 1]),
            helper.make_node("Add", ["y", "z"], ["out"]),
        ],
        "conv_add",
        [helper.make_tensor_value_info(n, TensorProto.FLOAT, shape) for n in ("x", "z")],
        [helper.make_tensor_value_info("out", TensorProto.FLOAT, shape)],
        [w],
    )
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 13)])
    model.ir_version = 8
    onnx.checker.check_model(model)
    onnx.save(model, str(path))
    return path


@pytest.fixture(scope="session")
def models(tmp_path_factory) -> dict[str, Path]:
    d = tmp_path_factory.mktemp("models")
    out = {"a": make_onnx(d / "a.onnx"), "b": make_onnx(d / "b.onnx", channels=16), "broken": d / "broken.onnx"}
    out["broken"].write_bytes(b"not a model")
    return out


@pytest.fixture(scope="session")
def tflite_model(tmp_path_factory) -> Path:
    """One tiny conv converted once per session (torch + litert_torch: a few seconds)."""
    litert_torch = pytest.importorskip("litert_torch")
    import torch

    class ConvRelu(torch.nn.Module):
        def __init__(self):
            super().__init__()
            self.conv = torch.nn.Conv2d(8, 8, 3, padding=1)

        def forward(self, x):
            return torch.relu(self.conv(x))

    module = ConvRelu().eval()
    sample_nhwc = torch.randn(1, 16, 16, 8)
    edge = litert_torch.convert(litert_torch.to_channel_last_io(module, args=[0], outputs=[0]), (sample_nhwc,))
    path = tmp_path_factory.mktemp("tflite") / "conv.tflite"
    edge.export(str(path))
    return path


def run_runner(*args, check=True) -> list[dict]:
    proc = subprocess.run([sys.executable, str(RUNNER), *map(str, args)], capture_output=True, text=True, timeout=120)
    if check:
        assert proc.returncode == 0, proc.stderr
    return [json.loads(line) for line in proc.stdout.splitlines() if line.strip()]


# ----------------------------------------------------------------------------- runner
def test_runner_jsonl_header_stats_and_error_line(models, tmp_path):
    out = tmp_path / "r.jsonl"
    lst = tmp_path / "list.txt"
    lst.write_text(f"{models['broken']}\n\n{models['b']}\n")
    run_runner("--runtime", "onnx", *FAST, "--out", out, "--list-file", lst, models["a"])
    lines = [json.loads(line) for line in out.read_text().splitlines()]
    header, records = lines[0], lines[1:]
    assert header["header"] is True and header["runtime"] == "onnx"
    assert header["runtime_version"].startswith("onnxruntime ") and header["python"]
    by_name = {r["name"]: r for r in records}
    assert set(by_name) == {"a.onnx", "broken.onnx", "b.onnx"}  # CLI models first, then the list
    assert [by_name[n]["index"] for n in ("a.onnx", "broken.onnx", "b.onnx")] == [0, 1, 2]
    assert "error" in by_name["broken.onnx"] and "\n" not in by_name["broken.onnx"]["error"]
    for name in ("a.onnx", "b.onnx"):
        r = by_name[name]
        assert set(r) == {"index", "name", "n", "median_ms", "mean_ms", "p10_ms", "p90_ms", "std_ms", "min_ms",
                          "max_ms"}
        assert 20 <= r["n"] <= 200
        assert 0 < r["min_ms"] <= r["p10_ms"] <= r["median_ms"] <= r["p90_ms"] <= r["max_ms"]
        assert r["std_ms"] >= 0


def test_runner_repeats_interleave_and_pool(tmp_path, monkeypatch):
    spec = importlib.util.spec_from_file_location("netadaptv2_runner", RUNNER)  # the standalone script
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)
    order: list[str] = []

    class Fake:
        def __init__(self, path, threads, delegate, rng):
            self.name = os.path.basename(path)
            self.run = lambda: order.append(self.name)

    monkeypatch.setitem(mod._LOADERS, "onnx", Fake)
    monkeypatch.setattr(mod, "time_pass", lambda run, warmup, mn, mx, sec: [run() or 1_000_000] * mn)
    args = mod._parse_args(["--runtime", "onnx", "--repeats", "3", "--min-runs", "2", "A", "B", "C"])
    out = tmp_path / "o.jsonl"
    with open(out, "w") as f:
        mod.run_batch(args.models, args, f)
    assert order == ["A", "B", "C"] * 3  # A, B, C, A, B, C, ... not A, A, A, ...
    records = [json.loads(line) for line in out.read_text().splitlines()]
    assert [r["name"] for r in records] == ["A", "B", "C"] and all(r["n"] == 6 for r in records)
    assert records[0]["median_ms"] == 1.0


def test_runner_fast_passes_pool_only_the_passes_near_the_fastest(tmp_path, monkeypatch):
    """--fast-passes 10: a pass 1.6x slower (the core's slow state) is left out of the statistics,
    one 5% slower is kept; the line says every pass's median and how many were pooled."""
    spec = importlib.util.spec_from_file_location("netadaptv2_runner", RUNNER)
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)
    per_pass = {"A": iter([1_000_000, 1_600_000, 1_050_000]), "B": iter([2_000_000, 2_000_000, 2_000_000])}

    class Fake:
        def __init__(self, path, threads, delegate, rng):
            self.name = os.path.basename(path)
            self.run = lambda: next(per_pass[self.name])

    monkeypatch.setitem(mod._LOADERS, "onnx", Fake)
    monkeypatch.setattr(mod, "time_pass", lambda run, warmup, mn, mx, sec: [run()] * mn)
    records = {}
    for flags in ([], ["--fast-passes", "10"]):
        per_pass = {"A": iter([1_000_000, 1_600_000, 1_050_000]), "B": iter([2_000_000] * 3)}
        args = mod._parse_args(["--runtime", "onnx", "--repeats", "3", "--min-runs", "4", *flags, "A", "B"])
        out = tmp_path / "o.jsonl"
        with open(out, "w") as f:
            mod.run_batch(args.models, args, f)
        records[bool(flags)] = [json.loads(line) for line in out.read_text().splitlines()]
    pooled, fast = records[False], records[True]
    assert pooled[0]["n"] == 12 and pooled[0]["max_ms"] == 1.6 and "passes_kept" not in pooled[0]
    assert pooled[0]["pass_medians_ms"] == [1.0, 1.6, 1.05]  # more than one pass: each one's median
    assert fast[0]["n"] == 8 and fast[0]["max_ms"] == 1.05 and fast[0]["min_ms"] == 1.0
    assert fast[0]["pass_medians_ms"] == [1.0, 1.6, 1.05] and fast[0]["passes_kept"] == 2
    assert fast[1]["n"] == 12 and fast[1]["passes_kept"] == 3  # every pass in the same state: all pooled
    with pytest.raises(SystemExit):
        mod._parse_args(["--runtime", "onnx", "--fast-passes", "-1", "A"])


def test_runner_repeats_pool_real_runs(models):
    lines = run_runner("--runtime", "onnx", "--repeats", "2", "--warmup", "1", "--min-runs", "5",
                       "--max-runs", "5", "--min-seconds", "0", models["a"], models["b"])
    assert lines[0]["protocol"]["repeats"] == 2
    assert [r["n"] for r in lines[1:]] == [10, 10]
    fast = run_runner("--runtime", "onnx", "--repeats", "3", "--fast-passes", "10", "--warmup", "1",
                      "--min-runs", "5", "--max-runs", "5", "--min-seconds", "0", models["a"])
    assert fast[0]["protocol"]["fast_passes_pct"] == 10
    record = fast[1]
    assert len(record["pass_medians_ms"]) == 3 and 1 <= record["passes_kept"] <= 3
    assert record["n"] == 5 * record["passes_kept"]
    assert min(record["pass_medians_ms"]) >= record["min_ms"]


def test_runner_tflite_with_and_without_xnnpack(tflite_model):
    for delegate in ("xnnpack", "none"):
        lines = run_runner("--runtime", "tflite", "--delegate", delegate, *FAST, tflite_model)
        assert lines[0]["delegate"] == delegate
        r = lines[1]
        assert "error" not in r, r
        assert r["name"] == "conv.tflite" and r["p10_ms"] <= r["median_ms"] <= r["p90_ms"]


# ----------------------------------------------------------------------------- agent
def test_local_agent_end_to_end_onnx(models):
    agent = LocalAgent()
    info = agent.info()
    assert info.device_id.startswith("local:") and info.device_id == LocalAgent().info().device_id
    assert agent.runtime_version("onnx").startswith("onnxruntime ")
    settings = BenchmarkSettings(runtime="onnx", warmup_runs=2, min_runs=20, max_runs=200, min_seconds=0.01)
    result = agent.benchmark([models["b"], models["a"]], settings)
    assert [t.name for t in result.timings] == ["b.onnx", "a.onnx"]
    assert all(len(t.pass_medians_ms) == settings.repeats and t.passes_kept is None  # every pass pooled
               for t in result.timings)
    fast = agent.benchmark([models["a"]], dataclasses.replace(settings, fast_passes_pct=10.0)).timings[0]
    assert 1 <= fast.passes_kept <= settings.repeats  # BenchmarkSettings.fast_passes_pct reaches the runner
    assert all(t.n >= 20 and t.p10_ms <= t.median_ms <= t.p90_ms for t in result.timings)
    assert isinstance(result.state_before, DeviceState) and isinstance(result.state_after, DeviceState)
    if hasattr(os, "sched_getaffinity"):
        assert info.cpu_core == str(max(os.sched_getaffinity(0)))  # no cpufreq here: highest core
    if not read_state().throttled:  # a host that does not throttle settles at once
        assert agent.settle(60.0).throttled is False


def test_local_agent_end_to_end_tflite(tflite_model):
    settings = BenchmarkSettings(runtime="tflite", warmup_runs=2, min_runs=20, max_runs=200, min_seconds=0.01)
    result = LocalAgent().benchmark([tflite_model], settings)
    assert result.timings[0].name == "conv.tflite" and result.timings[0].median_ms > 0


def test_local_agent_names_the_broken_model(models):
    settings = BenchmarkSettings(runtime="onnx", warmup_runs=1, min_runs=5, max_runs=5, min_seconds=0)
    with pytest.raises(AgentError, match=r"^broken\.onnx: ") as err:
        LocalAgent().benchmark([models["a"], models["broken"]], settings)
    assert "\n" not in str(err.value)


def test_parse_results_missing_model_is_an_agent_error():
    header = json.dumps({"header": True})
    ok = json.dumps({"index": 0, "name": "a", "n": 1, **{k: 1.0 for k in
                     ("median_ms", "mean_ms", "p10_ms", "p90_ms", "std_ms", "min_ms", "max_ms")}})
    timings = parse_results([header, ok], [Path("a.onnx")])
    assert timings[0].name == "a.onnx" and timings[0].cov == 1.0
    passes = {"pass_medians_ms": [1.0, 1.2, 1.0], "passes_kept": 2}
    assert parse_results([header, ok[:-1] + ", " + json.dumps(passes)[1:]], [Path("a.onnx")])[0].passes_kept == 2
    for bad, match in (({"pass_medians_ms": 1.0}, "expected a list of ms"),
                       ({"pass_medians_ms": [1.0, -1.0]}, "expected finite numbers of ms > 0"),
                       ({"pass_medians_ms": [1.0, 1.0], "passes_kept": 3}, "expected an integer from 1 to its 2")):
        with pytest.raises(BadTiming, match=r"^a\.onnx: .*" + match):
            parse_results([header, ok[:-1] + ", " + json.dumps(bad)[1:]], [Path("a.onnx")])
    with pytest.raises(AgentError, match=r"^b\.onnx: no result from the runner \(Segmentation fault\)"):
        parse_results([header, ok, '{"index": 1, "na'], [Path("a.onnx"), Path("b.onnx")],
                      stderr="...\nSegmentation fault\n", returncode=-11)


# ----------------------------------------------------------------------------- device state
def write_sysfs(root: Path, zones: dict, cpus: dict) -> None:
    for i, (kind, milli) in enumerate(zones.items()):
        z = root / f"sys/class/thermal/thermal_zone{i}"
        z.mkdir(parents=True)
        (z / "type").write_text(kind + "\n")
        (z / "temp").write_text(f"{milli}\n")
    for core, files in cpus.items():
        d = root / f"sys/devices/system/cpu/cpu{core}/cpufreq"
        d.mkdir(parents=True)
        for name, value in files.items():
            (d / name).write_text(f"{value}\n")


def cpufreq(cur, cap, top, gov="schedutil"):
    return {"scaling_cur_freq": cur, "scaling_max_freq": cap, "cpuinfo_max_freq": top, "scaling_governor": gov}


def test_read_state_on_a_fake_sysfs_tree(tmp_path):
    write_sysfs(
        tmp_path,
        {"cpu-thermal": 45500, "battery": 31000, "cpu-thermal ": 0},
        {0: cpufreq(300000, 1800000, 1800000), 4: cpufreq(2400000, 2400000, 2400000)},
    )
    (tmp_path / "sys/devices/system/cpu/cpu5/cpufreq").mkdir(parents=True)  # offline core: no files
    s = read_state(str(tmp_path))
    assert s.temperatures_c["cpu-thermal"] == 45.5 and s.temperatures_c["battery"] == 31.0
    assert s.cpu_freq_khz == {"cpu0": 300000, "cpu4": 2400000}  # idle little core at low freq: fine
    assert s.cpu_max_freq_khz == {"cpu0": 1800000, "cpu4": 2400000}
    assert s.governor == "schedutil" and s.throttled is False


@pytest.mark.parametrize(
    "zones, cpus",
    [
        ({"cpu-thermal": 91000}, {}),  # hot
        ({}, {4: cpufreq(1200000, 1200000, 2400000)}),  # max freq capped by thermal mitigation
        ({}, {4: cpufreq(1200000, 2400000, 2400000, gov="performance")}),  # should be at max, is not
    ],
)
def test_read_state_throttled(tmp_path, zones, cpus):
    write_sysfs(tmp_path, zones, cpus)
    assert read_state(str(tmp_path)).throttled is True


def test_read_state_missing_files_and_broken_sensors(tmp_path):
    assert read_state(str(tmp_path)) == DeviceState()
    write_sysfs(tmp_path, {"unused": -273000, "garbage": 999999}, {0: {"scaling_cur_freq": "n/a"}})
    s = read_state(str(tmp_path))
    assert s.throttled is False and s.cpu_freq_khz == {}


def test_parse_state_output_of_the_shell_one_liner():
    text = """/sys/class/thermal/thermal_zone0/type=cpu-0-0-usr
/sys/class/thermal/thermal_zone1/type=battery
/sys/class/thermal/thermal_zone0/temp=48200
/sys/class/thermal/thermal_zone1/temp=29800
/sys/devices/system/cpu/cpu0/cpufreq/scaling_cur_freq=1785600
/sys/devices/system/cpu/cpu7/cpufreq/scaling_cur_freq=2841600
/sys/devices/system/cpu/cpu0/cpufreq/scaling_max_freq=1785600
/sys/devices/system/cpu/cpu7/cpufreq/scaling_max_freq=2841600
/sys/devices/system/cpu/cpu0/cpufreq/cpuinfo_max_freq=1785600
/sys/devices/system/cpu/cpu7/cpufreq/cpuinfo_max_freq=2841600
/sys/devices/system/cpu/cpu0/cpufreq/scaling_governor=schedutil
/sys/devices/system/cpu/cpu7/cpufreq/scaling_governor=performance
/system/bin/sh: warning: some noise
"""
    s = parse_state_output(text)
    assert s.temperatures_c == {"cpu-0-0-usr": 48.2, "battery": 29.8}
    assert s.cpu_freq_khz == {"cpu0": 1785600, "cpu7": 2841600}
    assert s.governor == "schedutil,performance" and not s.throttled
    assert fastest_cores(s.cpu_max_freq_khz, 1) == [7]
    assert parse_state_output("") == DeviceState()


def test_state_command_runs_under_sh_and_round_trips(tmp_path):
    # The one-liner on this host (sh -c, as `adb shell` runs it) must parse like read_state.
    proc = subprocess.run(["sh", "-c", STATE_COMMAND], capture_output=True, text=True, timeout=30)
    assert proc.returncode == 0 and "\n" not in STATE_COMMAND
    assert parse_state_output(proc.stdout).cpu_freq_khz.keys() == read_state().cpu_freq_khz.keys()
    # and on a fake tree, with paths rewritten to it
    write_sysfs(tmp_path, {"soc": 50000}, {1: cpufreq(1, 2, 2)})
    (tmp_path / "proc").mkdir()
    (tmp_path / "proc/stat").write_text(PROC_STAT)
    command = STATE_COMMAND.replace("/sys/", f"{tmp_path}/sys/").replace(" /proc/stat", f" {tmp_path}/proc/stat")
    fake = subprocess.run(["sh", "-c", command], capture_output=True, text=True, timeout=30).stdout
    s = parse_state_output(fake.replace(f"{tmp_path}/sys/", "/sys/"))
    assert s == read_state(str(tmp_path)) and s.cpu_busy_ticks == {"cpu0": 100 + 5 + 50 + 3 + 2, "cpu1": 900}


#: /proc/stat of a 2-core machine (user nice system idle iowait irq softirq steal guest guest_nice)
PROC_STAT = """cpu  1000 5 50 2000 10 3 2 7 0 0
cpu0 100 5 50 1000 10 3 2 7 0 0
cpu1 900 0 0 1000 0 0 0 0 0 0
intr 12345 0 0
ctxt 999
"""


def test_busy_ticks_say_how_busy_the_other_cores_were_during_a_batch(tmp_path):
    (tmp_path / "proc").mkdir()
    (tmp_path / "proc/stat").write_text(PROC_STAT)
    before = read_state(str(tmp_path))
    assert before.cpu_busy_ticks == {"cpu0": 160, "cpu1": 900}
    assert before.cpu_total_ticks == {"cpu0": 1170, "cpu1": 1900}
    # 100 ticks later: cpu0 busy 80 of them, cpu1 (the measured core) busy all 100
    (tmp_path / "proc/stat").write_text("cpu0 170 5 60 1010 20 3 2 7 0 0\ncpu1 1000 0 0 1000 0 0 0 0 0 0\n")
    after = read_state(str(tmp_path))
    assert busy_fraction(before, after) == {"cpu0": pytest.approx(0.8), "cpu1": 1.0}
    assert others_busy(before, after, "1") == pytest.approx(0.8)
    assert others_busy(before, after, "0-1") is None and others_busy(before, after, "") is None
    assert others_busy(DeviceState(), after, "1") is None  # no ticks before: nothing to say


def test_fastest_cores_rank_by_max_frequency_then_high_core_numbers():
    assert fastest_cores({0: 1800000, 1: 1800000, 4: 2400000, 7: 2400000}, 2) == [4, 7]
    assert fastest_cores({0: 1800000, 1: 1800000, 4: 2400000, 7: 2400000}, 3) == [1, 4, 7]
    assert fastest_cores({"cpu0": 1, "cpu1": 1}, 1) == [1]
    assert fastest_cores({"cpu8": 3}, 4) == [8]
    assert fastest_cores({}, 1) == []


def test_pick_core_prefers_fast_cores_then_high_numbers(tmp_path):
    write_sysfs(tmp_path, {}, {0: cpufreq(1, 1800000, 1800000), 3: cpufreq(1, 1800000, 1800000),
                               4: cpufreq(1, 2400000, 2400000), 5: cpufreq(1, 2400000, 2400000)})
    if not hasattr(os, "sched_getaffinity"):
        pytest.skip("no affinity API")
    assert local.pick_core({0, 3, 4, 5}, root=str(tmp_path)) == 5
    assert local.pick_core({0, 3}, root=str(tmp_path)) == 3


def test_agent_modules_never_import_torch():
    code = ("import sys, device_agents.local, device_agents.device_state, device_agents.tool_output; "
            "sys.exit('torch' in sys.modules)")
    root = Path(local.__file__).parent.parent
    assert subprocess.run([sys.executable, "-c", code], cwd=root, timeout=60).returncode == 0
