"""adb-shell transport against the loopback adbd: connect, shell, push/pull, faults."""
import os
import sys
import time
from pathlib import Path

import pytest

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))  # `tests.adbd_endpoint` under any import mode
from tests.adbd_endpoint import Faults, start_endpoint  # noqa: E402
from tests.adbd_endpoint.fixtures import authorized_endpoint  # noqa: E402

from device_agents.adb_keys import ensure_key, load_signers  # noqa: E402
from device_agents.adb_transport import AdbShellTransport, DeviceDisconnected, open_transport  # noqa: E402
from device_agents.contract import AgentError  # noqa: E402


def _connect(serial, key, **kw):
    kw.setdefault("auth_timeout_s", 2.0)
    kw.setdefault("backoff_s", 0.05)
    return AdbShellTransport(serial, load_signers(key), **kw)


def test_shell_exit_status_and_merged_output(tmp_path):
    with authorized_endpoint(tmp_path) as (serial, key, ep):
        t = _connect(serial, key)
        assert t.shell("echo out; echo err >&2; exit 3", 10) == ("out\nerr", 3)
        assert t.shell("getprop ro.product.model", 10) == ("Loopback Phone", 0)
        assert t.shell("sleep 1.5; echo late", 10) == ("late", 0)  # silence shorter than the call timeout
        t.close()


def test_push_pull_round_trip_multi_chunk(tmp_path):
    data = os.urandom(700_000)  # > one 64 KiB sync chunk and > one 256 KiB packet
    (tmp_path / "in.bin").write_bytes(data)
    with authorized_endpoint(tmp_path) as (serial, key, ep):
        t = _connect(serial, key)
        t.push(tmp_path / "in.bin", "/data/local/tmp/netadaptv2/deep/in.bin")
        assert (tmp_path / "sandbox/netadaptv2/deep/in.bin").read_bytes() == data
        t.pull("/data/local/tmp/netadaptv2/deep/in.bin", tmp_path / "out.bin")
        assert (tmp_path / "out.bin").read_bytes() == data
        with pytest.raises(AgentError, match="pull"):
            t.pull("/data/local/tmp/missing", tmp_path / "x")
        t.close()


def test_unauthorized_key_gets_the_one_line_hint(tmp_path):
    stranger = ensure_key(tmp_path / "stranger" / "adbkey")
    with authorized_endpoint(tmp_path) as (serial, _key, ep):
        start = time.monotonic()
        with pytest.raises(AgentError) as info:
            _connect(serial, stranger, auth_timeout_s=1.0)
        assert not isinstance(info.value, DeviceDisconnected)  # not retried: a person must act
        msg = str(info.value)
        assert "\n" not in msg and "has not authorized this computer's key" in msg
        assert "Allow USB debugging?" in msg and msg.startswith(serial)
        assert time.monotonic() - start < 10


def test_no_endpoint_is_a_disconnect_after_bounded_tries(tmp_path):
    key = ensure_key(tmp_path / "adbkey")
    host, port, stop = start_endpoint(tmp_path / "sb", None)
    stop()  # nothing listens there now
    with pytest.raises(DeviceDisconnected, match="3 tries"):
        _connect(f"{host}:{port}", key, connect_tries=3, backoff_s=0.01)


def test_dropped_connection_then_reconnect(tmp_path):
    with authorized_endpoint(tmp_path, faults=Faults(drop_on_shell_command=2)) as (serial, key, ep):
        t = _connect(serial, key)
        assert t.shell("echo one", 10) == ("one", 0)
        start = time.monotonic()
        with pytest.raises(DeviceDisconnected):
            t.shell("echo two", 30)
        assert time.monotonic() - start < 5  # EOF is noticed at once, not after the read timeout
        t.reconnect()
        assert t.reconnects == 1 and t.shell("echo three", 10) == ("three", 0)


def test_drop_mid_transfer_leaves_no_partial_file(tmp_path):
    (tmp_path / "big.bin").write_bytes(os.urandom(400_000))
    with authorized_endpoint(tmp_path, faults=Faults(drop_after_sync_bytes=100_000)) as (serial, key, ep):
        t = _connect(serial, key)
        with pytest.raises(DeviceDisconnected):
            t.push(tmp_path / "big.bin", "/data/local/tmp/big.bin")
        deadline = time.monotonic() + 5
        while any((tmp_path / "sandbox").iterdir()) and time.monotonic() < deadline:
            time.sleep(0.05)  # the endpoint notices the drop on its own thread
        assert not list((tmp_path / "sandbox").iterdir())
        t.reconnect()
        t.push(tmp_path / "big.bin", "/data/local/tmp/big.bin")
        assert (tmp_path / "sandbox/big.bin").read_bytes() == (tmp_path / "big.bin").read_bytes()


def test_open_transport_auto_without_adb_server_uses_adb_shell(tmp_path, monkeypatch):
    monkeypatch.setenv("ANDROID_ADB_SERVER_PORT", "1")  # no server can listen there
    with authorized_endpoint(tmp_path) as (serial, key, ep):
        t = open_transport(serial, key_path=key, auth_timeout_s=2)
        assert isinstance(t, AdbShellTransport) and t.shell("true", 10) == ("", 0)
        t.close()
    with pytest.raises(AgentError, match="unknown transport"):
        open_transport(serial, transport="bluetooth")


def test_usb_without_libusb_gives_the_install_hint(tmp_path):
    try:
        import usb1  # noqa: F401
        pytest.skip("python-libusb1 is installed here: the hint path cannot be exercised")
    except (ImportError, OSError):
        pass
    key = ensure_key(tmp_path / "adbkey")
    with pytest.raises(AgentError, match=r"netadaptv2\[usb\].*libusb-1.0-0"):
        AdbShellTransport("0123456789ABCDEF", load_signers(key))
