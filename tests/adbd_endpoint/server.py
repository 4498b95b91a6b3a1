"""A loopback adbd: enough of the device side of ADB for adb-shell and Debian's `adb`.

Handshake as adbd does it: the host sends CNXN; when keys are required the endpoint
answers AUTH(TOKEN) with 20 random bytes; a SIGNATURE that verifies against an
authorized key, or an RSAPUBLICKEY that is in the authorized list, gets CNXN back; any
other key gets a fresh TOKEN or silence, so the host times out ("unauthorized").
Then OPEN/OKAY/WRTE/CLSE streams carry the `shell:` and `sync:` services.

Fault injection (`Faults`) closes the socket at chosen points so tests can prove the
client side reconnects. Nothing here is meant to be secure: it runs commands as the
test user, in a sandbox folder, on 127.0.0.1 only.
"""
from __future__ import annotations

import os
import secrets
import shutil
import socket
import stat
import sys
import tempfile
import threading
from dataclasses import dataclass, field
from pathlib import Path

from .protocol import (A_AUTH, A_CLSE, A_CNXN, A_OKAY, A_OPEN, A_VERSION_MIN, A_VERSION_SKIP_CHECKSUM,
                       A_WRTE, ADB_AUTH_RSAPUBLICKEY, ADB_AUTH_SIGNATURE, ADB_AUTH_TOKEN, HEADER,
                       MAX_PAYLOAD, TOKEN_SIZE, Message, ProtocolError, checksum, decode_adb_pubkey,
                       pubkey_id, unpack_header, verify_token_signature)
from .services import Sandbox, run_shell, run_sync
from .streams import Stream

DEFAULT_PROPS = {
    "ro.product.model": "Loopback Phone",
    "ro.product.name": "loopback",
    "ro.product.device": "loopback",
    "ro.soc.model": "SM-LOOP",
    "ro.board.platform": "loopback",
    "ro.hardware": "loopback",
    "ro.product.cpu.abi": "arm64-v8a",
    "ro.build.version.release": "14",
    "ro.build.version.sdk": "34",
    "ro.serialno": "LOOP0001",
}


@dataclass
class Faults:
    """Where to cut the connection (each fires once over the endpoint's life).

    drop_on_shell_command: close the socket instead of running the Nth `shell:` command
        (1-based, counted over all connections).
    drop_on_shell_matching: ... instead of running the first command containing this text.
    drop_after_sync_bytes: close the socket once a single file transfer (push or pull)
        has moved this many bytes.
    """

    drop_on_shell_command: int | None = None
    drop_on_shell_matching: str | None = None
    drop_after_sync_bytes: int | None = None
    fired: list[str] = field(default_factory=list)


class Endpoint:
    def __init__(self, sandbox_dir: Path, authorized_pubkeys=None, *, props: dict | None = None,
                 faults: Faults | None = None, host: str = "127.0.0.1", port: int = 0,
                 features: tuple[str, ...] = (), extra_tools: dict[str, str] | None = None):
        self.sandbox = Sandbox(Path(sandbox_dir))
        self.sandbox.root.mkdir(parents=True, exist_ok=True)
        # None: no auth at all (like an `adb root`ed emulator); otherwise the key lines.
        self.authorized = None if authorized_pubkeys is None else {
            pubkey_id(_read_key(k)): decode_adb_pubkey(_read_key(k)) for k in authorized_pubkeys}
        self.props = {**DEFAULT_PROPS, **(props or {})}
        self.faults = faults or Faults()
        self.features = features  # advertise only what is implemented: none by default
        self.extra_tools = extra_tools or {}  # name -> sh script text, put first on PATH (fake df, ...)
        self.shell_log: list[str] = []  # every shell command as received (before rewriting)
        self.connections_accepted = 0
        self._lock = threading.Lock()
        self._conns: list[_Connection] = []
        self._stopping = threading.Event()
        self._bin = Path(tempfile.mkdtemp(prefix="adbd-bin-"))
        self._write_tools()
        self._listener = socket.create_server((host, port))
        self._listener.settimeout(0.2)
        self.host, self.port = self._listener.getsockname()[:2]
        self._thread = threading.Thread(target=self._accept_loop, name="adbd-accept", daemon=True)

    # --- the fake Android userland ----------------------------------------------------
    def _write_tools(self) -> None:
        """`python3` (this interpreter, venv included) and `getprop` on the shell's PATH."""
        tools = {
            "python3": f'#!/bin/sh\nexec "{sys.executable}" "$@"\n',
            "getprop": "#!/bin/sh\n" + "case \"$1\" in\n" + "".join(
                f"  '{k}') echo '{v}' ;;\n" for k, v in self.props.items()) +
                "  '') " + " ".join(f"echo '[{k}]: [{v}]';" for k, v in self.props.items()) +
                " ;;\n  *) echo ;;\nesac\n",
        }
        tools.update(self.extra_tools)
        for name, text in tools.items():
            path = self._bin / name
            path.write_text(text)
            path.chmod(stat.S_IRWXU)

    def shell_env(self) -> dict[str, str]:
        env = {k: v for k, v in os.environ.items() if k not in ("PYTHONPATH", "VIRTUAL_ENV")}
        env.update(PATH=f"{self._bin}:{os.environ.get('PATH', '/usr/bin:/bin')}",
                   HOME=str(self.sandbox.root), TMPDIR=str(self.sandbox.root))
        return env

    def banner(self) -> bytes:
        parts = [f"ro.product.{k}={self.props['ro.product.' + k]}" for k in ("name", "model", "device")]
        if self.features:
            parts.append("features=" + ",".join(self.features))
        return ("device::" + ";".join(parts) + ";").encode()

    # --- fault points ------------------------------------------------------------------
    def should_drop_shell(self, command: str) -> bool:
        with self._lock:
            self.shell_log.append(command)
            f = self.faults
            if f.drop_on_shell_command is not None and len(self.shell_log) == f.drop_on_shell_command:
                f.drop_on_shell_command = None
                f.fired.append(f"shell#{len(self.shell_log)}")
                return True
            if f.drop_on_shell_matching and f.drop_on_shell_matching in command:
                f.drop_on_shell_matching = None
                f.fired.append(f"shell~{command[:40]}")
                return True
        return False

    def should_drop_transfer(self, moved: int) -> bool:
        with self._lock:
            limit = self.faults.drop_after_sync_bytes
            if limit is not None and moved >= limit:
                self.faults.drop_after_sync_bytes = None
                self.faults.fired.append(f"sync@{moved}")
                return True
        return False

    # --- lifecycle ---------------------------------------------------------------------
    def start(self) -> Endpoint:
        self._thread.start()
        return self

    def _accept_loop(self) -> None:
        while not self._stopping.is_set():
            try:
                sock, _ = self._listener.accept()
            except TimeoutError:
                continue
            except OSError:
                break
            sock.settimeout(None)
            sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
            conn = _Connection(self, sock)
            with self._lock:
                self.connections_accepted += 1
                self._conns.append(conn)
            conn.start()

    def drop_all(self) -> None:
        """Cut every open connection (a cable pulled), keep listening."""
        with self._lock:
            conns = list(self._conns)
        for c in conns:
            c.drop()

    def stop(self) -> None:
        self._stopping.set()
        self._listener.close()
        self.drop_all()
        if self._thread.is_alive():
            self._thread.join(2)
        with self._lock:
            conns = list(self._conns)
        for c in conns:
            c.join(5)
        shutil.rmtree(self._bin, ignore_errors=True)

    def forget(self, conn: _Connection) -> None:
        with self._lock:
            if conn in self._conns:
                self._conns.remove(conn)


def _read_key(k) -> str:
    if isinstance(k, Path):
        return k.read_text()
    return k.decode() if isinstance(k, bytes) else str(k)


class _Connection(threading.Thread):
    """One host connection: a reader loop here, one thread per open stream."""

    def __init__(self, endpoint: Endpoint, sock: socket.socket):
        super().__init__(name="adbd-conn", daemon=True)
        self.ep = endpoint
        self.sock = sock
        self.version = A_VERSION_MIN
        self.max_payload = 4096  # until the CNXN exchange says otherwise
        self._send_lock = threading.Lock()
        self._streams: dict[int, Stream] = {}
        self._next_id = 1
        self._procs: set = set()
        self._procs_lock = threading.Lock()
        self._token = b""
        self._online = False
        self._transfer_bytes = 0

    # --- plumbing ----------------------------------------------------------------------
    def send(self, msg: Message) -> None:
        with self._send_lock:
            self.sock.sendall(msg.pack())

    def _recv_exact(self, n: int) -> bytes:
        buf = bytearray()
        while len(buf) < n:
            chunk = self.sock.recv(n - len(buf))
            if not chunk:
                raise EOFError()
            buf += chunk
        return bytes(buf)

    def _read_message(self) -> Message:
        command, arg0, arg1, length, check = unpack_header(self._recv_exact(HEADER.size))
        if length > MAX_PAYLOAD * 4:
            raise ProtocolError(f"payload of {length} bytes")
        data = self._recv_exact(length) if length else b""
        if self.version < A_VERSION_SKIP_CHECKSUM and checksum(data) != check:
            raise ProtocolError("data checksum mismatch")
        return Message(command, arg0, arg1, data)

    def drop(self) -> None:
        for stream in list(self._streams.values()):
            stream.abort()  # before the socket goes: no service may finish on buffered data
        try:
            self.sock.shutdown(socket.SHUT_RDWR)
        except OSError:
            pass

    def track_process(self, proc) -> None:
        with self._procs_lock:
            self._procs.add(proc)

    def untrack_process(self, proc) -> None:
        with self._procs_lock:
            self._procs.discard(proc)

    def count_transfer(self, n: int) -> None:
        self._transfer_bytes += n
        if self.ep.should_drop_transfer(self._transfer_bytes):
            self.drop()

    # --- the connection's life ---------------------------------------------------------
    def run(self) -> None:
        try:
            while True:
                self._dispatch(self._read_message())
        except (OSError, EOFError, ProtocolError):
            pass
        finally:
            for s in list(self._streams.values()):
                s.on_close()
            try:
                self.sock.close()
            except OSError:
                pass
            self.ep.forget(self)

    def _dispatch(self, m: Message) -> None:
        if m.command == A_CNXN:
            self.version = min(m.arg0, A_VERSION_SKIP_CHECKSUM) if m.arg0 >= A_VERSION_MIN else A_VERSION_MIN
            self.max_payload = max(256, min(m.arg1, MAX_PAYLOAD))
            self._online = False
            if self.ep.authorized is None:
                self._go_online()
            else:
                self._send_token()
        elif m.command == A_AUTH:
            self._on_auth(m)
        elif not self._online:
            return  # adbd ignores stream traffic before the handshake completes
        elif m.command == A_OPEN:
            self._on_open(m)
        elif m.command == A_WRTE:
            stream = self._streams.get(m.arg1)
            if stream is None:
                self.send(Message(A_CLSE, 0, m.arg0))
                return
            stream.deliver(m.data)
            self.send(Message(A_OKAY, stream.local_id, stream.remote_id))
        elif m.command == A_OKAY:
            stream = self._streams.get(m.arg1)
            if stream is not None:
                stream.on_okay()
        elif m.command == A_CLSE:
            stream = self._streams.pop(m.arg1, None)
            if stream is not None:
                stream.host_closed()

    def _send_token(self) -> None:
        self._token = secrets.token_bytes(TOKEN_SIZE)
        self.send(Message(A_AUTH, ADB_AUTH_TOKEN, 0, self._token))

    def _go_online(self) -> None:
        self._online = True
        self.send(Message(A_CNXN, self.version, self.max_payload, self.ep.banner()))

    def _on_auth(self, m: Message) -> None:
        if self.ep.authorized is None or self._online:
            return
        if m.arg0 == ADB_AUTH_SIGNATURE:
            if any(verify_token_signature(k, self._token, m.data) for k in self.ep.authorized.values()):
                self._go_online()
            else:
                self._send_token()  # adbd offers a new token for the host's next key
        elif m.arg0 == ADB_AUTH_RSAPUBLICKEY:
            try:
                known = pubkey_id(m.data) in self.ep.authorized
            except (ValueError, IndexError):
                known = False
            if known:
                self._go_online()  # the user had ticked "always allow" for this key
            # else: a phone would show the prompt; nobody answers it here.

    def _on_open(self, m: Message) -> None:
        service = m.data.rstrip(b"\0").decode("utf-8", "surrogateescape")
        if service.startswith(("shell:", "exec:")):
            command = service.split(":", 1)[1]
            if self.ep.should_drop_shell(command):
                self.drop()
                return
            target = lambda s: run_shell(s, command, self.ep.sandbox, self.ep.shell_env())  # noqa: E731
        elif service == "sync:":
            self._transfer_bytes = 0

            def target(s):
                def on_bytes(n):
                    self.count_transfer(n)
                run_sync(s, self.ep.sandbox, on_bytes)
        else:
            self.send(Message(A_CLSE, 0, m.arg0))  # unknown service: refused
            return
        local_id = self._next_id
        self._next_id += 1
        stream = Stream(self, local_id, m.arg0)
        self._streams[local_id] = stream
        self.send(Message(A_OKAY, local_id, m.arg0))
        threading.Thread(target=self._serve, args=(target, stream), daemon=True,
                         name=f"adbd-{service[:12]}").start()

    def _serve(self, target, stream: Stream) -> None:
        try:
            target(stream)
        finally:
            stream.close()
            self._streams.pop(stream.local_id, None)


def start_endpoint(sandbox_dir, authorized_pubkeys=None, **kwargs):
    """Start an endpoint thread; returns (host, port, stop). `kwargs` go to `Endpoint`.

    The Endpoint object itself is reachable as `stop.endpoint` (shell log, faults).
    """
    ep = Endpoint(Path(sandbox_dir), authorized_pubkeys, **kwargs).start()

    def stop() -> None:
        ep.stop()

    stop.endpoint = ep
    return ep.host, ep.port, stop
