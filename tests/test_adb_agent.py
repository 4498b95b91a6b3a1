"""AdbAgent end to end against the loopback adbd: real ONNX models, the Python runner,
vendor-tool backend (a stand-in script), shell-injection safety, drops mid-batch."""
import sys
from pathlib import Path

import pytest

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))  # `tests.adbd_endpoint` under any import mode
from tests.adbd_endpoint import Faults  # noqa: E402
from tests.adbd_endpoint.fixtures import authorized_endpoint, make_conv_onnx  # noqa: E402

from device_agents.adb_agent import AdbAgent, open_agent  # noqa: E402
from device_agents.contract import AgentError, BenchmarkSettings  # noqa: E402

FAST = dict(warmup_runs=1, min_runs=5, max_runs=20, min_seconds=0.0)

FAKE_BENCHMARK_MODEL = """#!/bin/sh
case "$1" in --help) echo "usage: benchmark_model --graph=..."; exit 0 ;; esac
echo "Loaded model $1"
echo "Running benchmark for at least 1 iterations and at least 0.5 seconds"
echo "count=3 first=900 curr=800 min=800 max=900 avg=850 std=40"
echo "Running benchmark for at least 5 iterations and at least 0 seconds"
echo "count=5 first=500 curr=400 min=400 max=600 avg=480 std=70"
"""


def _agent(serial, key, tmp_path, **kw):
    kw.setdefault("runtime", "onnx")
    return open_agent(serial, key_path=key, workdir=tmp_path / "work", transport="adb-shell",
                      auth_timeout_s=2, backoff_s=0.05, settle_max_s=0, **kw)


@pytest.fixture
def models(tmp_path):
    folder = tmp_path / "models"
    folder.mkdir()
    return [make_conv_onnx(folder / "a;touch pwned.onnx", 4, 8),
            make_conv_onnx(folder / "$(touch pwned2) b.onnx", 8, 8),
            make_conv_onnx(folder / "c.onnx", 4, 16, kernel=1)]


def _no_pwned(root: Path):
    assert not [p for p in root.rglob("pwned*")], "a model name ran as a command"


def test_info_from_getprop(tmp_path):
    with authorized_endpoint(tmp_path, props={"ro.product.model": "Pixel 8 (test)"}) as (serial, key, ep):
        agent = _agent(serial, key, tmp_path)
        info = agent.info()
        assert info.device_id == "android:Pixel_8_test:LOOP0001"
        assert (info.model, info.soc, info.abi, info.os_version) == ("Pixel 8 (test)", "SM-LOOP", "arm64-v8a", "14")
        agent.close()


def test_benchmark_with_the_python_runner(tmp_path, models):
    with authorized_endpoint(tmp_path) as (serial, key, ep):
        agent = _agent(serial, key, tmp_path)
        assert agent.runtime_version("onnx").startswith("onnxruntime")
        result = agent.benchmark(models, BenchmarkSettings(runtime="onnx", **FAST))
        assert [t.name for t in result.timings] == [m.name for m in models]
        assert all(t.n >= 5 and 0 < t.min_ms <= t.median_ms <= t.max_ms for t in result.timings)
        assert sorted(p.name for p in (tmp_path / "sandbox/netadaptv2/batch").glob("m0*")) == [
            "m0001.onnx", "m0002.onnx", "m0003.onnx"]
        batch_runs = [c for c in ep.shell_log if "batch.sh" in c]
        assert len(batch_runs) == 1  # one shell session for the whole batch
        agent.close()
    _no_pwned(tmp_path)


def test_batch_survives_a_dropped_connection(tmp_path, models):
    with authorized_endpoint(tmp_path, faults=Faults(drop_on_shell_matching="batch.sh")) as (serial, key, ep):
        agent = _agent(serial, key, tmp_path)
        result = agent.benchmark(models, BenchmarkSettings(runtime="onnx", **FAST))
        assert len(result.timings) == 3 and ep.faults.fired
        assert agent.reconnects == 1 and ep.connections_accepted == 2
        agent.close()


def test_tool_backend_pushes_once_and_parses(tmp_path):
    tool = tmp_path / "benchmark_model"
    tool.write_text(FAKE_BENCHMARK_MODEL)
    models = [tmp_path / "x;reboot.tflite", tmp_path / "y.tflite"]
    for m in models:
        m.write_bytes(b"TFL3 not really")
    with authorized_endpoint(tmp_path) as (serial, key, ep):
        agent = _agent(serial, key, tmp_path, runtime="tflite", binary=tool)
        result = agent.benchmark(models, BenchmarkSettings(runtime="tflite"))
        t = result.timings[0]
        assert t.name == "x;reboot.tflite" and t.n == 5 and t.min_ms == pytest.approx(0.4)
        assert agent.runtime_version("tflite").startswith("benchmark_model sha256:")
        assert (tmp_path / "sandbox/netadaptv2/benchmark_model").stat().st_mode & 0o111
        with pytest.raises(AgentError, match="opened for tflite"):
            agent.benchmark(models, BenchmarkSettings(runtime="onnx"))
        agent.close()
    _no_pwned(tmp_path)


def test_wrong_abi_binary_is_one_line_error(tmp_path):
    tool = tmp_path / "benchmark_model"
    tool.write_bytes(b"\x7fELF\x02\x01\x01" + bytes(64))  # an ELF this host cannot exec
    (tmp_path / "m.tflite").write_bytes(b"x")
    with authorized_endpoint(tmp_path) as (serial, key, ep):
        agent = _agent(serial, key, tmp_path, runtime="tflite", binary=tool)
        with pytest.raises(AgentError) as info:
            agent.benchmark([tmp_path / "m.tflite"], BenchmarkSettings(runtime="tflite"))
        assert "cannot run on the phone" in str(info.value) and "\n" not in str(info.value)
        agent.close()


def test_short_free_space_is_one_line_error(tmp_path, models):
    df = ("#!/bin/sh\necho 'Filesystem 1K-blocks Used Available Use% Mounted on'\n"
          "echo '/dev/block/dm-9 100000 99000 1000 99% /data'\n")
    with authorized_endpoint(tmp_path, extra_tools={"df": df}) as (serial, key, ep):
        agent = _agent(serial, key, tmp_path)
        with pytest.raises(AgentError, match="free space on the phone"):
            agent.benchmark(models, BenchmarkSettings(runtime="onnx", **FAST))
        agent.close()


def test_agent_requires_existing_binary(tmp_path):
    with authorized_endpoint(tmp_path) as (serial, key, ep):
        with pytest.raises(AgentError, match="not found"):
            _agent(serial, key, tmp_path, runtime="tflite", binary=tmp_path / "nope")
        assert isinstance(_agent(serial, key, tmp_path), AdbAgent)


def test_hot_phone_waits_and_remeasures(tmp_path, models, monkeypatch):
    from device_agents.contract import DeviceState

    hot, cool = DeviceState(throttled=True), DeviceState(throttled=False)
    states = iter([hot, cool, hot, cool, cool])  # settle: hot->cool; after: hot; settle: cool; after: cool
    with authorized_endpoint(tmp_path) as (serial, key, ep):
        agent = _agent(serial, key, tmp_path)
        agent.settle_max_s, agent.settle_poll_s = 5, 0.01
        monkeypatch.setattr(agent, "read_state", lambda: next(states))
        result = agent.benchmark(models[:1], BenchmarkSettings(runtime="onnx", **FAST))
        assert agent.remeasured == 1 and not result.state_before.throttled and not result.state_after.throttled
        assert len([c for c in ep.shell_log if "batch.sh" in c]) == 2
        agent.close()
