"""Debian's real `adb` against the loopback adbd: proves the endpoint speaks real ADB, and
runs our adb-server transport and device listing through a real adb server.

In CI (`CI` set) a missing `adb` is a failure: .ci/run installs it. Elsewhere it skips.
"""
import os
import shutil
import socket
import subprocess
import sys
from pathlib import Path

import pytest

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))  # `tests.adbd_endpoint` under any import mode
from tests.adbd_endpoint.fixtures import authorized_endpoint, make_conv_onnx  # noqa: E402

from device_agents.adb_agent import AdbAgent  # noqa: E402
from device_agents.adb_devices import list_devices  # noqa: E402
from device_agents.adb_keys import ensure_key  # noqa: E402
from device_agents.adb_transport import AdbServerTransport, open_transport  # noqa: E402
from device_agents.contract import BenchmarkSettings  # noqa: E402

pytestmark = pytest.mark.adb


def _adb_or_fail():
    adb = shutil.which("adb")
    if adb is None:
        if os.environ.get("CI"):
            pytest.fail("Debian's adb is required in CI (apt-get install -y adb)")
        pytest.skip("Debian's adb client is not installed (apt-get install -y adb)")
    return adb


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@pytest.fixture
def adb_env(tmp_path, monkeypatch):
    """A private adb server (own port, own HOME with the test key), killed at the end."""
    adb = _adb_or_fail()
    home = tmp_path / "home"
    key = ensure_key(home / ".android" / "adbkey")
    monkeypatch.setenv("HOME", str(home))
    monkeypatch.setenv("ANDROID_ADB_SERVER_PORT", str(_free_port()))
    monkeypatch.delenv("ADB_VENDOR_KEYS", raising=False)
    monkeypatch.delenv("ANDROID_USER_HOME", raising=False)
    run = lambda *a, timeout=30: subprocess.run([adb, *a], capture_output=True, text=True, timeout=timeout)  # noqa: E731
    try:
        yield adb, key, run
    finally:
        run("kill-server", timeout=15)


def test_debian_adb_connect_shell_push_pull(tmp_path, adb_env):
    adb, key, run = adb_env
    data = os.urandom(300_000)
    (tmp_path / "in.bin").write_bytes(data)
    with authorized_endpoint(tmp_path) as (serial, _key, ep):
        ep.authorized.update(_authorize(key))  # authorize the adb server's key too
        assert f"connected to {serial}" in run("connect", serial).stdout
        run("-s", serial, "wait-for-device", timeout=20)
        assert "device" in run("-s", serial, "get-state").stdout
        out = run("-s", serial, "shell", "echo hello; getprop ro.product.model; pwd").stdout
        assert out.splitlines()[:2] == ["hello", "Loopback Phone"]
        assert run("-s", serial, "push", str(tmp_path / "in.bin"), "/data/local/tmp/d/in.bin").returncode == 0
        assert (tmp_path / "sandbox/d/in.bin").read_bytes() == data
        assert run("-s", serial, "pull", "/data/local/tmp/d/in.bin", str(tmp_path / "out.bin")).returncode == 0
        assert (tmp_path / "out.bin").read_bytes() == data
        assert "in.bin" in run("-s", serial, "ls", "/data/local/tmp/d").stdout  # LIST/DENT

        # Our adb-server transport and listing, through that real server.
        t = open_transport(serial, transport="auto", adb=adb)
        assert isinstance(t, AdbServerTransport)
        assert t.shell("echo out; echo err >&2; exit 4", 30) == ("out\nerr", 4)
        listing = {d.serial: d for d in list_devices(adb=adb)}
        assert listing[serial].authorized and listing[serial].model == "Loopback Phone"

        agent = AdbAgent(t, runtime="onnx", workdir=tmp_path / "work", settle_max_s=0)
        models = [make_conv_onnx(tmp_path / "one.onnx"), make_conv_onnx(tmp_path / "two.onnx", 8)]
        result = agent.benchmark(models, BenchmarkSettings(runtime="onnx", warmup_runs=1, min_runs=5,
                                                           max_runs=10, min_seconds=0.0))
        assert [x.name for x in result.timings] == ["one.onnx", "two.onnx"]


def _authorize(key: Path) -> dict:
    from tests.adbd_endpoint.protocol import decode_adb_pubkey, pubkey_id

    text = Path(str(key) + ".pub").read_text()
    return {pubkey_id(text): decode_adb_pubkey(text)}


def test_debian_adb_unauthorized_key_is_refused(tmp_path, adb_env):
    adb, _key, run = adb_env
    with authorized_endpoint(tmp_path) as (serial, _fixture_key, ep):  # the server's key is not listed
        run("connect", serial)
        state = run("-s", serial, "get-state", timeout=20)
        assert "unauthorized" in (state.stdout + state.stderr)
        listing = {d.serial: d for d in list_devices(adb=adb)}
        assert listing[serial].authorized is False
