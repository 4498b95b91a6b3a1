"""`lutbuild` on "phones": the real CLI through the loopback adbd with the real adb-shell client,
the Python runner on the phone (this host, in the endpoint's sandbox) and ONNX Runtime.

Covers issue 3's "done when": a full build then verify through the endpoint, two endpoints
filling one LUT (two complete slices, one writer), a connection dropped mid-batch (no row
lost or duplicated), a phone that gives up mid-build (the other finishes, exit 1, a rerun
resumes), an unauthorized key (one line, exit 1, LUT untouched), a malicious `--device`,
and `lutbuild devices`.
"""
from __future__ import annotations

import hashlib
import json
import sqlite3
import subprocess
import sys
from pathlib import Path

import pytest

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))  # `tests.adbd_endpoint` under any import mode
from tests.adbd_endpoint import start_endpoint  # noqa: E402

from lut_db.schema import open_lut  # noqa: E402
from tests.lutbuild_helpers import invoke, micro_space_registered, one_line_error  # noqa: E402

LUTBUILD = Path(sys.executable).with_name("lutbuild")
SPACE = "test-adb-micro"
KEYS = 11  # distinct LUT keys of SPACE (all measured: full plan), 2 batches of <= 6


@pytest.fixture(scope="module", autouse=True)
def micro_space():
    """An 11-key space registered in this process (so: click's runner, not a subprocess)."""
    with micro_space_registered(SPACE) as name:
        yield name


@pytest.fixture(scope="module")
def cache(tmp_path_factory):
    """One export cache for the module: the 12 layers are exported once."""
    return tmp_path_factory.mktemp("cache")


@pytest.fixture
def key(tmp_path):
    from device_agents.adb_keys import ensure_key

    return ensure_key(tmp_path / "keys" / "adbkey")


class Phones:
    """Loopback endpoints started by a test, stopped at its end."""

    def __init__(self, tmp_path: Path):
        self.tmp_path = tmp_path
        self._stops = []

    def start(self, name: str, pubkey: Path | None, serial: str = "LOOP0001", model: str = "Loopback Phone",
              **kwargs):
        host, port, stop = start_endpoint(self.tmp_path / f"sandbox-{name}", [pubkey] if pubkey else [],
                                          props={"ro.serialno": serial, "ro.product.model": model}, **kwargs)
        self._stops.append(stop)
        return f"{host}:{port}", stop.endpoint

    def stop_all(self):
        for stop in self._stops:
            stop()


@pytest.fixture
def phones(tmp_path):
    p = Phones(tmp_path)
    yield p
    p.stop_all()


def pub(key: Path) -> Path:
    return Path(str(key) + ".pub")


def build_args(db, cache, key, *devices, batch_size=6):
    args = ["build", "--space", SPACE, "--runtime", "onnx", "--db", db, "--cache-dir", cache, "--quiet",
            "--transport", "adb-shell", "--adb-key", key, "--batch-size", batch_size, "--repeats", 1, "--jobs", 1]
    for d in devices:
        args += ["--device", d]
    return args


def rows(db: Path, device_id: str | None = None) -> dict[str, tuple]:
    """layer_key -> (id, measured_at, median_ms, batch) of a device's measured rows (the only
    device's when None); asserts no key twice."""
    sql = ("SELECT layer_key, id, measured_at, median_ms, json_extract(state_after, '$.profiler.batch') "
           "FROM measurements WHERE source = 'measured'" + (" AND device_id = ?" if device_id else ""))
    with sqlite3.connect(db) as conn:
        got = conn.execute(sql, [device_id] if device_id else []).fetchall()
    by_key = {r[0]: r[1:] for r in got}
    assert len(by_key) == len(got), "a key was written twice"
    return by_key


def device_ids(db: Path) -> list[str]:
    with sqlite3.connect(db) as conn:
        return sorted(r[0] for r in conn.execute("SELECT device_id FROM devices"))


def batch_runs(ep) -> int:
    return len([c for c in ep.shell_log if "batch.sh" in c])


def test_build_then_verify_through_the_endpoint(tmp_path, cache, key, phones):
    serial, ep = phones.start("a", pub(key), model="Pixel 8 (loop)")
    db = tmp_path / "lut.sqlite"
    result = invoke(*build_args(db, cache, key, serial))
    assert result.exit_code == 0, result.output + result.stderr
    assert f"measured {KEYS} key(s) now, 0 before" in result.output
    device_id = "android:Pixel_8_loop:LOOP0001"
    assert device_ids(db) == [device_id]
    got = rows(db, device_id)
    assert len(got) == KEYS and len({r[3] for r in got.values()}) == 2  # 11 keys in 2 batches of <= 6
    with sqlite3.connect(db) as conn:
        dev = conn.execute("SELECT model, soc, abi, os_version FROM devices").fetchone()
        assert dev == ("Pixel 8 (loop)", "SM-LOOP", "arm64-v8a", "14")
        version, state_before, state_after = conn.execute(
            "SELECT runtime_version, state_before, state_after FROM measurements LIMIT 1").fetchone()
    assert version.startswith("onnxruntime")  # the runner's runtime, read on the phone
    identity = json.loads(state_after)["profiler"]["device"]
    assert (identity["model"], identity["soc"], identity["abi"], identity["os_version"]) == dev
    assert {"governor", "cpu_freq_khz", "temperatures_c", "throttled"} <= set(json.loads(state_before))

    runs = batch_runs(ep)  # 2, or more where a drifting batch was measured again
    again = invoke(*build_args(db, cache, key, serial))
    assert again.exit_code == 0 and f"measured 0 key(s) now, {KEYS} before" in again.output
    assert batch_runs(ep) == runs and rows(db, device_id) == got  # nothing benchmarked or written again

    out_json = tmp_path / "verify.json"
    result = invoke("verify", "--space", SPACE, "--runtime", "onnx", "--db", db, "--cache-dir", cache, "--quiet",
                    "--transport", "adb-shell", "--adb-key", key, "--device", serial, "--samples", 2, "--rounds", 1,
                    "--json", out_json)
    assert result.exit_code == 0, result.output + result.stderr
    assert "LUT (sum of layers)" in result.output
    report = json.loads(out_json.read_text())
    assert report["device"]["device_id"] == device_id and report["n"] == 2
    assert all(s["measured_ms"] > 0 for s in report["samples"])
    assert device_id in invoke("show", "--db", db).output


def test_two_endpoints_fill_one_lut(tmp_path, cache, key, phones):
    a, ep_a = phones.start("a", pub(key), serial="LOOPA", model="Phone A")
    b, ep_b = phones.start("b", pub(key), serial="LOOPB", model="Phone B")
    db = tmp_path / "lut.sqlite"
    result = invoke(*build_args(db, cache, key, a, b))
    assert result.exit_code == 0, result.output + result.stderr
    assert device_ids(db) == ["android:Phone_A:LOOPA", "android:Phone_B:LOOPB"]
    for device_id in device_ids(db):
        got = rows(db, device_id)
        assert len(got) == KEYS and len({r[3] for r in got.values()}) == 2  # each slice complete
    with sqlite3.connect(db) as conn:
        assert conn.execute("SELECT COUNT(*), COUNT(DISTINCT device_id || layer_key) FROM measurements").fetchone() == (
            2 * KEYS, 2 * KEYS)
    assert batch_runs(ep_a) >= 2 and batch_runs(ep_b) >= 2  # both phones ran their own batches
    assert result.output.count(f"measured {KEYS} key(s) now") == 2 and "2 devices, 0 stopped" in result.output


def test_the_same_phone_twice_is_refused_before_the_lut_is_touched(tmp_path, cache, key, phones):
    a, _ = phones.start("a", pub(key))
    b, _ = phones.start("b", pub(key))  # same ro.serialno and model: the same phone over two links
    db = tmp_path / "lut.sqlite"
    result = invoke(*build_args(db, cache, key, a, b))
    assert result.exit_code == 1
    assert "are the same device" in one_line_error(result.stderr)
    assert not db.exists()


def _drop_on_batch(ep, nth: int, then=None):
    """Make endpoint `ep` cut the connection instead of running its `nth` batch script."""
    seen = []
    original = ep.should_drop_shell

    def should_drop(command: str) -> bool:
        if original(command):
            return True
        if "batch.sh" in command:
            seen.append(command)
            if len(seen) == nth:
                if then:
                    then()
                return True
        return False

    ep.should_drop_shell = should_drop


def test_a_connection_dropped_mid_batch_loses_and_duplicates_nothing(tmp_path, cache, key, phones):
    serial, ep = phones.start("a", pub(key))
    _drop_on_batch(ep, 2)  # after one committed batch, models pushed, the script never runs
    db = tmp_path / "lut.sqlite"
    result = invoke(*build_args(db, cache, key, serial))
    assert result.exit_code == 0, result.output + result.stderr
    assert "1 reconnect(s)" in result.output and ep.connections_accepted == 2
    got = rows(db)
    assert len(got) == KEYS and len({r[3] for r in got.values()}) == 2  # every key once, in two batches


def test_a_phone_that_gives_up_stops_alone_and_a_rerun_resumes(tmp_path, cache, key, phones):
    a, ep_a = phones.start("a", pub(key), serial="LOOPA", model="Phone A")
    b, ep_b = phones.start("b", pub(key), serial="LOOPB", model="Phone B")

    def unplug_b():  # refuse every reconnect from now on (the listener goes), then drop the link
        ep_b._stopping.set()
        ep_b._listener.close()

    _drop_on_batch(ep_b, 2, then=unplug_b)
    db = tmp_path / "lut.sqlite"
    result = invoke(*build_args(db, cache, key, a, b))
    assert result.exit_code == 1
    errors = [line for line in result.stderr.splitlines() if line.startswith("lutbuild: error: ")]
    assert len(errors) == 1 and errors[0].startswith(f"lutbuild: error: {b}: ") and "reconnect" in errors[0]
    first_a, first_b = rows(db, "android:Phone_A:LOOPA"), rows(db, "android:Phone_B:LOOPB")
    assert len(first_a) == KEYS and len(first_b) == 6  # A finished; B kept its one committed batch

    runs_a = batch_runs(ep_a)
    b2, ep_b2 = phones.start("b2", pub(key), serial="LOOPB", model="Phone B")  # plugged in again (new port)
    result = invoke(*build_args(db, cache, key, a, b2))
    assert result.exit_code == 0, result.output + result.stderr
    assert f"measured 0 key(s) now, {KEYS} before" in result.output
    assert f"measured {KEYS - 6} key(s) now, 6 before" in result.output
    after_b = rows(db, "android:Phone_B:LOOPB")
    assert len(after_b) == KEYS and {k: after_b[k] for k in first_b} == first_b  # kept, not measured again
    assert rows(db, "android:Phone_A:LOOPA") == first_a
    assert len({after_b[k][3] for k in set(after_b) - set(first_b)}) == 1  # the rest: one batch
    assert batch_runs(ep_a) == runs_a  # A had nothing left to measure


def test_an_unauthorized_key_is_one_line_exit_1_and_the_lut_untouched(tmp_path, cache, key, phones):
    from device_agents.adb_keys import ensure_key

    other = ensure_key(tmp_path / "other" / "adbkey")
    serial, ep = phones.start("a", pub(other))  # the phone trusts another computer's key only
    db = tmp_path / "lut.sqlite"
    result = invoke(*build_args(db, cache, key, serial), "--auth-timeout", 1)
    assert result.exit_code == 1
    line = one_line_error(result.stderr)
    assert line.startswith(f"lutbuild: error: {serial}: ") and "has not authorized" in line
    assert "accept the 'Allow USB debugging?' prompt" in line
    assert not db.exists()
    open_lut(db).close()
    before = hashlib.sha256(db.read_bytes()).hexdigest()
    result = invoke(*build_args(db, cache, key, serial), "--auth-timeout", 1)
    assert result.exit_code == 1 and hashlib.sha256(db.read_bytes()).hexdigest() == before
    assert not ep.shell_log  # nothing ran on the phone


def test_a_malicious_device_string_runs_nothing(tmp_path):
    db = tmp_path / "lut.sqlite"
    for device in ("127.0.0.1:1;touch pwned", "$(touch pwned2)", "x` touch pwned3 `"):
        proc = subprocess.run([str(LUTBUILD), "build", "--space", "mbv3-tiny", "--runtime", "onnx", "--db", str(db),
                               "--device", device, "--transport", "adb-server"],
                              capture_output=True, text=True, timeout=120, cwd=tmp_path)
        assert proc.returncode == 1, proc.stderr
        assert "not an ADB serial or host:port" in one_line_error(proc.stderr)
    result = invoke("devices", "--device", "127.0.0.1:1;touch pwned4")
    assert result.exit_code == 0 and "invalid" in result.output
    assert not list(tmp_path.rglob("pwned*")) and not list(Path.cwd().glob("pwned*")) and not db.exists()


def test_phone_options_with_device_local_are_a_user_error(tmp_path):
    db = tmp_path / "lut.sqlite"
    tool = tmp_path / "benchmark_model"
    tool.write_text("#!/bin/sh\n")
    for extra, expected in ((["--benchmark-binary", tool], "--benchmark-binary only apply to phones"),
                            (["--device", "127.0.0.1:5", "--runner", "tool"], "--runner tool needs --benchmark-binary"),
                            (["--device", "127.0.0.1:5", "--device", "127.0.0.1:5"], "given twice")):
        result = invoke("build", "--space", SPACE, "--runtime", "onnx", "--db", db, *extra)
        assert result.exit_code == 1, result.output
        assert expected in one_line_error(result.stderr)
    assert not db.exists()


def test_devices_lists_authorized_and_unauthorized_phones(tmp_path, key, phones):
    from device_agents.adb_keys import ensure_key

    good, _ = phones.start("a", pub(key), model="Pixel 8")
    bad, _ = phones.start("b", pub(ensure_key(tmp_path / "other" / "adbkey")))
    result = invoke("devices", "--device", good, "--device", bad, "--adb-key", key, "--auth-timeout", 1)
    assert result.exit_code == 0, result.output + result.stderr
    lines = {line.split()[0]: line.split() for line in result.output.splitlines() if line.startswith("127.")}
    assert lines[good][1:4] == ["device", "yes", "Pixel"] and "SM-LOOP" in lines[good] and "14" in lines[good]
    assert "arm64-v8a" in lines[good]
    assert lines[bad][1:3] == ["unauthorized", "no"]
    assert f"\n{bad}: the phone has not authorized" in result.output


# ------------------------------------------------------------------ the engine, with scripted devices (fast)
class _Device:
    """A scripted phone (`tests/test_profiler_build.ScriptedAgent`) with its own id and serial."""

    def __new__(cls, space, name: str, phone: bool = True, fail_on_call=None, error=None, sleep_s=0.0, log=None):
        from types import SimpleNamespace

        from device_agents.contract import DeviceInfo
        from tests.test_profiler_build import ScriptedAgent

        class Device(ScriptedAgent):
            def info(self):
                return DeviceInfo(device_id=f"fake:{name}", model=name, soc="fake-soc", abi="arm64-v8a",
                                  os_version="14", cpu_core="7")

            def benchmark(self, models, settings):
                import time

                if self.calls + 1 == fail_on_call:
                    self.calls += 1
                    raise error
                t0 = time.monotonic()
                time.sleep(sleep_s)
                result = super().benchmark(models, settings)
                if log is not None:
                    log.append((name, t0, time.monotonic()))
                return result

        agent = Device(space)
        if phone:
            agent.shell = SimpleNamespace(serial=name, reconnects=0)
        return agent


@pytest.fixture
def engine(monkeypatch):
    """`build_lut` (given a list of agents) with the fake export cache; records every exported key and write thread."""
    import threading
    import time

    from lut_db.writer import LutWriter
    from profiler import build_engine
    from profiler.build import build_lut
    from tests.test_profiler_build import FakeCache

    exported, writers, export_log = [], set(), []

    class CountingCache(FakeCache):
        def layers(self, cfgs):
            t0 = time.monotonic()
            time.sleep(0.01)
            exported.extend(c.key for c in cfgs)
            export_log.append(("export", t0, time.monotonic()))
            return super().layers(cfgs)

    original = LutWriter.write

    def write(self, rows):
        writers.add(threading.current_thread().name)
        return original(self, rows)

    monkeypatch.setattr(build_engine, "ModelCache", CountingCache)
    monkeypatch.setattr(LutWriter, "write", write)
    return build_lut, exported, writers, export_log


def _options(tmp_path, **kw):
    from profiler.build import BuildOptions

    # no fast-state probes between batches: the devices fail on a counted benchmark call
    return BuildOptions(**{"batch_size": 64, "cache_dir": tmp_path / "cache", "settle_s": 0, "state_wait_s": 0, **kw})


def test_engine_fills_every_slice_exports_each_key_once_and_writes_from_one_thread(tmp_path, engine):
    from collections import Counter

    from search.spaces import get_space

    build_lut, exported, writers, _ = engine
    tiny = get_space("mbv3-tiny")
    agents = [_Device(tiny, n) for n in ("p1", "p2", "p3")]
    report = build_lut(tiny, agents, tmp_path / "lut.sqlite", "onnx", _options(tmp_path), progress=False)
    assert report.ok and [r.measured for r in report.reports] == [407, 407, 407]
    assert device_ids(tmp_path / "lut.sqlite") == ["fake:p1", "fake:p2", "fake:p3"]
    for agent in agents:
        assert len(rows(tmp_path / "lut.sqlite", agent.info().device_id)) == 407
    counts = Counter(exported)
    assert len(counts) == 407 and set(counts.values()) == {1}  # every key exported once for all devices
    assert writers == {"MainThread"}


def test_engine_a_failing_device_stops_alone_and_a_bug_is_raised_after_the_others(tmp_path, engine):
    from device_agents.contract import AgentError
    from search.spaces import get_space

    build_lut, _, _, _ = engine
    tiny = get_space("mbv3-tiny")
    db = tmp_path / "lut.sqlite"
    agents = [_Device(tiny, "p1"), _Device(tiny, "p2", fail_on_call=3, error=AgentError("p2: gone for good"))]
    messages = []
    report = build_lut(tiny, agents, db, "onnx", _options(tmp_path), progress=False, log=messages.append)
    assert report.failures == ["p2: gone for good"] and not report.ok
    assert len(rows(db, "fake:p1")) == 407 and len(rows(db, "fake:p2")) == 2 * 64  # its committed batches stay
    agents = [_Device(tiny, "p1"), _Device(tiny, "p2", fail_on_call=1, error=ZeroDivisionError("a bug"))]
    with pytest.raises(ZeroDivisionError):
        build_lut(tiny, agents, db, "onnx", _options(tmp_path), progress=False, log=messages.append)
    report = build_lut(tiny, [_Device(tiny, "p1"), _Device(tiny, "p2")], db, "onnx", _options(tmp_path),
                             progress=False)
    assert [(r.measured, r.already_measured) for r in report.reports] == [(0, 407), (407 - 128, 128)]


def test_engine_local_benchmarks_never_overlap_exports_phone_ones_do(tmp_path, engine):
    from search.spaces import get_space

    build_lut, _, _, export_log = engine
    tiny = get_space("mbv3-tiny")
    bench_log = []
    agents = [_Device(tiny, "local-host", phone=False, sleep_s=0.02, log=bench_log),
              _Device(tiny, "p1", sleep_s=0.05, log=bench_log)]
    report = build_lut(tiny, agents, tmp_path / "lut.sqlite", "onnx", _options(tmp_path, batch_size=32),
                             progress=False)
    assert report.ok

    def overlaps(name):
        return [(b, e) for n, b0, b1 in bench_log if n == name for _, e0, e1 in export_log
                if b0 < e1 and e0 < b1 for b, e in [((b0, b1), (e0, e1))]]

    assert not overlaps("local-host")  # the host's cores: exports and the local runner take turns
    assert overlaps("p1")  # a phone benchmarks while the host exports the next batch


def test_engine_sparse_plan_interpolates_each_finished_slice(tmp_path, engine):
    from search.spaces import get_space

    build_lut, _, _, _ = engine
    tiny = get_space("mbv3-tiny")
    db = tmp_path / "lut.sqlite"
    report = build_lut(tiny, [_Device(tiny, "p1"), _Device(tiny, "p2")], db, "onnx",
                             _options(tmp_path, plan="sparse"), progress=False)
    assert report.ok
    for r in report.reports:
        assert r.measured + r.interpolated == 407 and r.interpolated > 150 and r.not_interpolated == 0
    with sqlite3.connect(db) as conn:
        assert conn.execute("SELECT device_id, COUNT(*) FROM measurements GROUP BY device_id").fetchall() == [
            ("fake:p1", 407), ("fake:p2", 407)]
