"""One shell/push/pull interface to a phone, over adb-shell (TCP, USB) or a running adb server.

Why two: adb-shell needs no Google binaries and talks TCP or USB itself, but cannot claim
a USB phone while an adb server holds it; the adb server path (`adb -s SERIAL ...`) works
alongside Android Studio. `open_transport(..., transport="auto")` picks the server when
one is already running and lists the serial, else adb-shell.

Both report a lost connection as `DeviceDisconnected` (retryable after `reconnect()`),
and everything else a user can fix as a one-line `AgentError`.
"""
from __future__ import annotations

import os
import re
import select
import shutil
import socket
import subprocess
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Protocol

from adb_shell import adb_device
from adb_shell import exceptions as ex
from adb_shell.transport.base_transport import BaseTransport

from .adb_keys import load_signers
from .contract import AgentError

RC_MARK = "__RC="
_RC_RE = re.compile(r"(?:\r?\n)?__RC=(\d+)\s*$")
USB_HINT = ("USB needs libusb: pip install 'netadaptv2[usb]' and apt-get install libusb-1.0-0 "
            "(or use the adb server: --transport adb-server)")
CONNECT_TIMEOUT_S = 10.0  # TCP connect + CNXN; a phone on Wi-Fi answers well within this
AUTH_TIMEOUT_S = 30.0  # time for a person to accept the "Allow USB debugging?" prompt
POLL_S = 1.0  # how often a silent read checks its deadline


class DeviceDisconnected(AgentError):
    """The connection dropped; `reconnect()` and retry the (idempotent) operation."""


def unauthorized_error(serial: str) -> AgentError:
    return AgentError(f"{serial}: the phone has not authorized this computer's key "
                      "(~/.android/adbkey.pub); unlock it and accept the 'Allow USB debugging?' "
                      "prompt, then retry")


def with_rc(command: str) -> str:
    """v1 `shell:` gives no exit status: print it after the command, parse it back.

    The subshell keeps an `exit` in `command` from skipping the marker; the newline ends
    a trailing `# comment` in it; `2>&1` merges stderr as the v1 shell does, also where the
    adb server would split it off (shell_v2 phones).
    """
    return f"({command}\n) 2>&1; echo {RC_MARK}$?"


def split_rc(output: str) -> tuple[str, int]:
    """(output without the marker, exit status); a missing marker means the shell died."""
    m = _RC_RE.search(output)
    if not m:
        raise DeviceDisconnected("shell ended without an exit status (connection lost?)")
    return output[:m.start()], int(m.group(1))


class DeviceShell(Protocol):
    """What an agent needs from a phone connection. Paths on the phone are absolute."""

    serial: str
    reconnects: int

    def shell(self, cmd: str, timeout_s: float) -> tuple[str, int]: ...

    def push(self, local: Path, remote: str) -> None: ...

    def pull(self, remote: str, local: Path) -> None: ...

    def reconnect(self) -> None: ...

    def close(self) -> None: ...


def backoff_retry(connect: Callable[[], None], serial: str, tries: int, base_s: float) -> None:
    """Call `connect` until it succeeds: waits base, 2*base, 4*base ... between tries.

    Only `DeviceDisconnected` is retried; an unauthorized key or a missing libusb is not
    going to fix itself.
    """
    last: Exception | None = None
    for attempt in range(tries):
        if attempt:
            time.sleep(base_s * 2 ** (attempt - 1))
        try:
            connect()
            return
        except DeviceDisconnected as e:
            last = e
    raise DeviceDisconnected(f"{serial}: could not reconnect after {tries} tries ({last})")


# --- adb-shell --------------------------------------------------------------------------------

class PollingTcpTransport(BaseTransport):
    """adb-shell's TCP transport, changed in two ways that matter for long benchmarks.

    * A read that finds nothing returns b"" after POLL_S instead of raising, so silence
      is bounded by the per-call `read_timeout_s`, not by a socket timeout.
    * End of stream (the phone closed the socket) raises ConnectionResetError at once;
      the stock transport returns b"" and the caller spins until its read timeout.
    """

    def __init__(self, host: str, port: int):
        self._host, self._port = host, port
        self._sock: socket.socket | None = None

    def connect(self, transport_timeout_s):
        self._sock = socket.create_connection((self._host, self._port),
                                              timeout=transport_timeout_s or CONNECT_TIMEOUT_S)
        self._sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)

    def close(self):
        if self._sock is not None:
            try:
                self._sock.shutdown(socket.SHUT_RDWR)
            except OSError:
                pass
            self._sock.close()
            self._sock = None

    def bulk_read(self, numbytes, transport_timeout_s):
        if self._sock is None:
            raise ConnectionResetError("not connected")
        readable, _, _ = select.select([self._sock], [], [], POLL_S)
        if not readable:
            return b""
        data = self._sock.recv(numbytes)
        if not data:
            raise ConnectionResetError(f"{self._host}:{self._port} closed the connection")
        return data

    def bulk_write(self, data, transport_timeout_s):
        if self._sock is None:
            raise ConnectionResetError("not connected")
        self._sock.settimeout(transport_timeout_s or CONNECT_TIMEOUT_S)
        self._sock.sendall(data)
        return len(data)


_SERIAL_RE = re.compile(r"[A-Za-z0-9][A-Za-z0-9._:%+\-\[\]]{0,199}")


def check_serial(spec: str) -> str:
    """`spec` if it can be an ADB serial or `host:port`, else a one-line `AgentError`.

    Serials (USB `0A1B2C3D`, `emulator-5554`, mDNS `adb-XYZ._adb-tls-connect._tcp`) and
    addresses (`192.168.1.7:5555`, `[fe80::1%wlan0]:5555`) use only these characters; a
    `;`, quote, space or `$` means a typo or an attack, and never reaches a transport.
    """
    if not isinstance(spec, str) or not _SERIAL_RE.fullmatch(spec):
        raise AgentError(f"--device {spec!r}: not an ADB serial or host:port (letters, digits and "
                         "'.', '_', '-', ':', '%', '+', '[', ']' only); see `lutbuild devices`")
    return spec


def _split_host_port(spec: str) -> tuple[str, int] | None:
    host, sep, port = spec.rpartition(":")
    if sep and host and port.isdigit():
        return host.strip("[]"), int(port)
    return None


class AdbShellTransport:
    """adb-shell's AdbDevice over TCP (`host:port`) or USB (a serial)."""

    def __init__(self, serial: str, signers: list, *, connect_tries: int = 4, backoff_s: float = 1.0,
                 auth_timeout_s: float = AUTH_TIMEOUT_S, io_timeout_s: float = 60.0):
        self.serial = serial
        self.reconnects = 0
        self._signers = signers
        self._tries = connect_tries
        self._backoff_s = backoff_s
        self._auth_timeout_s = auth_timeout_s
        self._io_timeout_s = io_timeout_s  # push/pull: longest silence allowed
        self._device = self._make_device()
        backoff_retry(self._connect_once, serial, connect_tries, backoff_s)

    def _make_device(self):
        hp = _split_host_port(self.serial)
        if hp is not None:
            return adb_device.AdbDevice(PollingTcpTransport(*hp))
        try:
            return adb_device.AdbDeviceUsb(serial=self.serial, default_transport_timeout_s=None)
        except Exception as e:  # InvalidTransportError (no libusb1), OSError from libusb
            raise AgentError(f"{self.serial}: {USB_HINT} [{type(e).__name__}: {e}]") from e

    def _connect_once(self) -> None:
        offered = []  # set when adb-shell gives up on signatures and offers the public key
        try:
            self._device.close()
            self._device.connect(rsa_keys=self._signers, transport_timeout_s=CONNECT_TIMEOUT_S,
                                 auth_timeout_s=self._auth_timeout_s,
                                 read_timeout_s=self._auth_timeout_s,
                                 auth_callback=lambda _dev: offered.append(True))
        except ex.DeviceAuthError as e:
            raise unauthorized_error(self.serial) from e
        except (ex.AdbTimeoutError, ex.TcpTimeoutException) as e:
            if offered:
                raise unauthorized_error(self.serial) from e
            raise DeviceDisconnected(f"{self.serial}: no answer from adbd ({e})") from e
        except (OSError, ex.AdbConnectionError, ex.InvalidResponseError, ex.InvalidChecksumError,
                ex.InvalidCommandError, ex.UsbReadFailedError, ex.UsbWriteFailedError) as e:
            raise DeviceDisconnected(f"{self.serial}: cannot connect ({e})") from e
        except ex.UsbDeviceNotFoundError as e:
            raise DeviceDisconnected(f"{self.serial}: USB device not found ({e})") from e

    def reconnect(self) -> None:
        backoff_retry(self._connect_once, self.serial, self._tries, self._backoff_s)
        self.reconnects += 1

    def _guard(self, what: str, fn):
        """Run an adb-shell call, translating its exceptions into ours."""
        try:
            return fn()
        except ex.AdbTimeoutError as e:
            self._device.close()  # stream state is unknown now: next use must reconnect
            raise DeviceDisconnected(f"{self.serial}: {what} timed out ({e})") from e
        except (OSError, ex.AdbConnectionError, ex.TcpTimeoutException, ex.InvalidResponseError,
                ex.InvalidChecksumError, ex.InvalidCommandError, ex.UsbReadFailedError,
                ex.UsbWriteFailedError) as e:
            self._device.close()
            raise DeviceDisconnected(f"{self.serial}: connection lost during {what} ({e})") from e
        except (ex.PushFailedError, ex.AdbCommandFailureException) as e:
            raise AgentError(f"{self.serial}: {what} failed: {e}") from e

    def shell(self, cmd: str, timeout_s: float) -> tuple[str, int]:
        out = self._guard(f"shell {cmd[:60]!r}", lambda: self._device.shell(
            with_rc(cmd), read_timeout_s=timeout_s, timeout_s=timeout_s,
            transport_timeout_s=CONNECT_TIMEOUT_S, decode=False))
        return split_rc(out.decode("utf-8", "replace"))

    def push(self, local: Path, remote: str) -> None:
        self._guard(f"push {remote}", lambda: self._device.push(
            str(local), remote, st_mode=0o100644, read_timeout_s=self._io_timeout_s,
            transport_timeout_s=CONNECT_TIMEOUT_S))

    def pull(self, remote: str, local: Path) -> None:
        self._guard(f"pull {remote}", lambda: self._device.pull(
            remote, str(local), read_timeout_s=self._io_timeout_s, transport_timeout_s=CONNECT_TIMEOUT_S))

    def close(self) -> None:
        self._device.close()


# --- the adb server ---------------------------------------------------------------------------

def adb_server_port() -> int:
    return int(os.environ.get("ANDROID_ADB_SERVER_PORT", "5037"))


def adb_server_running() -> bool:
    """True when an adb server already listens; we never start one as a side effect."""
    try:
        with socket.create_connection(("127.0.0.1", adb_server_port()), timeout=0.5):
            return True
    except OSError:
        return False


@dataclass(frozen=True)
class ServerDevice:
    serial: str
    state: str  # "device", "unauthorized", "offline", ...
    details: dict[str, str]  # product/model/device/transport_id from `adb devices -l`


def list_server_devices(adb: str = "adb", timeout_s: float = 10.0) -> list[ServerDevice]:
    out = subprocess.run([adb, "devices", "-l"], capture_output=True, text=True, timeout=timeout_s)
    devices = []
    for line in out.stdout.splitlines():
        if not line.strip() or line.startswith(("List of devices", "*")):
            continue
        fields = line.split()
        if len(fields) < 2:
            continue
        details = dict(f.split(":", 1) for f in fields[2:] if ":" in f)
        devices.append(ServerDevice(fields[0], fields[1], details))
    return devices


_SERVER_LOST = ("device offline", "not found", "no devices", "closed", "protocol fault",
                "connection reset", "broken pipe", "cannot connect")


class AdbServerTransport:
    """`adb -s SERIAL shell|push|pull` through an adb server that is already running."""

    def __init__(self, serial: str, *, adb: str = "adb", connect_tries: int = 4, backoff_s: float = 1.0,
                 io_timeout_s: float = 120.0):
        self.serial = serial
        self.reconnects = 0
        self._adb = adb
        self._tries = connect_tries
        self._backoff_s = backoff_s
        self._io_timeout_s = io_timeout_s
        backoff_retry(self._connect_once, serial, connect_tries, backoff_s)

    def _run(self, args: list[str], timeout_s: float, what: str) -> subprocess.CompletedProcess:
        try:
            proc = subprocess.run([self._adb, "-s", self.serial, *args], capture_output=True,
                                  timeout=timeout_s)
        except subprocess.TimeoutExpired as e:
            raise DeviceDisconnected(f"{self.serial}: {what} timed out after {timeout_s:.0f} s") from e
        except FileNotFoundError as e:
            raise AgentError(f"adb executable not found: {self._adb}") from e
        err = proc.stderr.decode("utf-8", "replace").strip()
        low = err.lower()
        if "unauthorized" in low:
            raise unauthorized_error(self.serial)
        if proc.returncode != 0 and any(s in low for s in _SERVER_LOST):
            raise DeviceDisconnected(f"{self.serial}: {what}: {err.splitlines()[-1] if err else 'failed'}")
        return proc

    def _connect_once(self) -> None:
        if _split_host_port(self.serial):
            subprocess.run([self._adb, "connect", self.serial], capture_output=True, timeout=CONNECT_TIMEOUT_S)
        proc = self._run(["get-state"], CONNECT_TIMEOUT_S, "get-state")
        state = proc.stdout.decode().strip()
        if state != "device":
            raise DeviceDisconnected(f"{self.serial}: state is {state or 'unknown'!r}")

    def reconnect(self) -> None:
        backoff_retry(self._connect_once, self.serial, self._tries, self._backoff_s)
        self.reconnects += 1

    def shell(self, cmd: str, timeout_s: float) -> tuple[str, int]:
        proc = self._run(["shell", with_rc(cmd)], timeout_s, f"shell {cmd[:60]!r}")
        return split_rc(proc.stdout.decode("utf-8", "replace"))

    def push(self, local: Path, remote: str) -> None:
        proc = self._run(["push", str(local), remote], self._io_timeout_s, f"push {remote}")
        if proc.returncode != 0:
            raise AgentError(f"{self.serial}: push {remote} failed: "
                             f"{proc.stderr.decode('utf-8', 'replace').strip()[-200:]}")

    def pull(self, remote: str, local: Path) -> None:
        proc = self._run(["pull", remote, str(local)], self._io_timeout_s, f"pull {remote}")
        if proc.returncode != 0:
            raise AgentError(f"{self.serial}: pull {remote} failed: "
                             f"{proc.stderr.decode('utf-8', 'replace').strip()[-200:]}")

    def close(self) -> None:
        pass  # the server owns the connection


# --- choosing ---------------------------------------------------------------------------------

TRANSPORTS = ("auto", "adb-shell", "adb-server")


def open_transport(serial: str, *, transport: str = "auto", key_path: Path | str | None = None,
                   adb: str | None = None, connect_tries: int = 4, backoff_s: float = 1.0,
                   auth_timeout_s: float = AUTH_TIMEOUT_S) -> DeviceShell:
    """Connect to `serial` (`host:port` or a USB serial) the way `transport` says.

    auto: the adb server when `adb` is on PATH, a server is already running, and it lists
    the serial; otherwise adb-shell (TCP for host:port, USB for a serial).
    """
    if transport not in TRANSPORTS:
        raise AgentError(f"unknown transport {transport!r}; choose one of {', '.join(TRANSPORTS)}")
    check_serial(serial)
    adb = adb or shutil.which("adb")
    if transport == "adb-server" or (transport == "auto" and adb and adb_server_running()
                                     and serial in {d.serial for d in list_server_devices(adb)}):
        if not adb:
            raise AgentError("--transport adb-server needs the `adb` executable on PATH")
        return AdbServerTransport(serial, adb=adb, connect_tries=connect_tries, backoff_s=backoff_s)
    return AdbShellTransport(serial, load_signers(key_path), connect_tries=connect_tries,
                             backoff_s=backoff_s, auth_timeout_s=auth_timeout_s)
