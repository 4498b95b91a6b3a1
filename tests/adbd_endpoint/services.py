"""The two device services the project uses: `shell:` (v1) and `sync:` (v1).

The shell runs `/bin/sh -c` on this host in a sandbox folder that plays
`/data/local/tmp`; device paths under that prefix are rewritten to the sandbox, both in
shell commands and in sync paths, and sync refuses paths that leave it. Output of a v1
shell is stdout and stderr merged, with no exit status, as on a real phone.
"""
from __future__ import annotations

import os
import signal
import stat
import struct
import subprocess
import threading
from pathlib import Path

from .streams import Stream, StreamClosed

DEVICE_TMP = "/data/local/tmp"
SYNC_DATA_MAX = 64 * 1024  # adb's largest DATA chunk
SYNC_PATH_MAX = 1024


def _id(word: bytes) -> int:
    return struct.unpack("<I", word)[0]


ID_STAT, ID_LIST, ID_SEND, ID_RECV, ID_QUIT = (_id(w) for w in (b"STAT", b"LIST", b"SEND", b"RECV", b"QUIT"))
ID_DATA, ID_DONE, ID_OKAY, ID_FAIL, ID_DENT = (_id(w) for w in (b"DATA", b"DONE", b"OKAY", b"FAIL", b"DENT"))


class Sandbox:
    """Maps the device's /data/local/tmp onto a host folder."""

    def __init__(self, root: Path):
        self.root = Path(root).resolve()
        if any(c not in "abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789_/.-+"
               for c in str(self.root)):
            # The prefix is substituted into shell text; keep it free of metacharacters.
            raise ValueError(f"sandbox path must be plain characters: {self.root}")

    def rewrite_command(self, command: str) -> str:
        return command.replace(DEVICE_TMP, str(self.root))

    def host_path(self, device_path: str) -> Path | None:
        """Host path for a device path, or None when it is outside /data/local/tmp."""
        if device_path != DEVICE_TMP and not device_path.startswith(DEVICE_TMP + "/"):
            return None
        rest = device_path[len(DEVICE_TMP):].lstrip("/")
        candidate = Path(os.path.normpath(self.root / rest))
        if candidate != self.root and self.root not in candidate.parents:
            return None
        return candidate


def run_shell(stream: Stream, command: str, sandbox: Sandbox, env: dict[str, str]) -> None:
    """`shell:<command>`: run it, stream merged output, close when it exits.

    An empty command is the interactive shell: the host's WRTE data becomes stdin.
    When the host closes the stream or the connection drops, the process group is
    killed (a real adbd hangs up the shell the same way).
    """
    command = sandbox.rewrite_command(command)
    interactive = command.strip() == ""
    argv = ["/bin/sh"] if interactive else ["/bin/sh", "-c", command]
    proc = subprocess.Popen(argv, cwd=sandbox.root, env=env, stdout=subprocess.PIPE,
                            stderr=subprocess.STDOUT,
                            stdin=subprocess.PIPE if interactive else subprocess.DEVNULL,
                            start_new_session=True)
    stream.conn.track_process(proc)

    def hang_up() -> None:
        stream.closed.wait()
        if proc.poll() is None:
            try:
                os.killpg(proc.pid, signal.SIGKILL)
            except ProcessLookupError:
                pass

    threading.Thread(target=hang_up, daemon=True, name="adbd-hangup").start()
    if interactive:
        stream.stdin_sink = proc.stdin
    try:
        fd = proc.stdout.fileno()
        while True:
            chunk = os.read(fd, 64 * 1024)
            if not chunk:
                break
            stream.write(chunk)
        proc.wait()
        stream.close()
    except (StreamClosed, OSError):
        pass
    finally:
        if proc.poll() is None:
            try:
                os.killpg(proc.pid, signal.SIGKILL)
            except ProcessLookupError:
                pass
            proc.wait()
        proc.stdout.close()
        stream.conn.untrack_process(proc)


class _Sync:
    def __init__(self, stream: Stream, sandbox: Sandbox, on_bytes):
        self.s = stream
        self.sandbox = sandbox
        self.on_bytes = on_bytes  # called with a byte count per DATA chunk (fault injection)

    def send_msg(self, ident: int, *values: int, payload: bytes = b"") -> None:
        self.s.write(struct.pack("<I" + "I" * len(values), ident, *values) + payload)

    def fail(self, message: str) -> None:
        data = message.encode()
        self.send_msg(ID_FAIL, len(data), payload=data)

    def serve(self) -> None:
        while True:
            ident, length = struct.unpack("<II", self.s.read_exact(8))
            if ident == ID_QUIT:
                self.s.close()
                return
            if length > SYNC_PATH_MAX:
                self.fail("path too long")
                self.s.close()
                return
            path = self.s.read_exact(length).decode("utf-8", "surrogateescape")
            handler = {ID_STAT: self.stat, ID_LIST: self.list, ID_RECV: self.recv,
                       ID_SEND: self.send}.get(ident)
            if handler is None:
                self.fail(f"unknown sync command {struct.pack('<I', ident)!r}")
                self.s.close()
                return
            handler(path)

    def stat(self, path: str) -> None:
        host = self.sandbox.host_path(path)
        try:
            st = os.lstat(host) if host else None
        except OSError:
            st = None
        if st is None:  # v1 reports "does not exist" as all zeros
            self.send_msg(ID_STAT, 0, 0, 0)
        else:
            self.send_msg(ID_STAT, st.st_mode & 0xFFFFFFFF, st.st_size & 0xFFFFFFFF,
                          int(st.st_mtime) & 0xFFFFFFFF)

    def list(self, path: str) -> None:
        host = self.sandbox.host_path(path)
        names = []
        if host is not None and host.is_dir():
            names = [".", ".."] + sorted(os.listdir(host))
        for name in names:
            try:
                st = os.lstat(host / name)
            except OSError:
                continue
            raw = name.encode("utf-8", "surrogateescape")
            self.send_msg(ID_DENT, st.st_mode & 0xFFFFFFFF, st.st_size & 0xFFFFFFFF,
                          int(st.st_mtime) & 0xFFFFFFFF, len(raw), payload=raw)
        self.send_msg(ID_DONE, 0, 0, 0, 0)

    def recv(self, path: str) -> None:
        host = self.sandbox.host_path(path)
        if host is None:
            self.fail(f"open failed: Permission denied: {path}")
            return
        try:
            f = open(host, "rb")
        except OSError as e:
            self.fail(f"open failed: {e.strerror}")
            return
        with f:
            while chunk := f.read(SYNC_DATA_MAX):
                self.on_bytes(len(chunk))
                self.send_msg(ID_DATA, len(chunk), payload=chunk)
        self.send_msg(ID_DONE, 0)

    def send(self, spec: str) -> None:
        """SEND "path,mode", then DATA chunks and DONE(mtime); answer OKAY or FAIL.

        Data is written to a temporary name and renamed on DONE, so a transfer cut off
        half-way leaves no truncated file behind. On an error the rest of the transfer
        is still read, so the stream stays in step, and FAIL is sent at the end.
        """
        path, _, mode_text = spec.rpartition(",")
        host = self.sandbox.host_path(path)
        error = None if host is not None else f"Permission denied: {path}"
        tmp = None
        out = None
        if error is None:
            try:
                host.parent.mkdir(parents=True, exist_ok=True)
                tmp = host.with_name(f".{host.name}.adbd-partial")
                out = open(tmp, "wb")
            except OSError as e:
                error = f"couldn't create file: {e.strerror}"
        try:
            while True:
                ident, value = struct.unpack("<II", self.s.read_exact(8))
                if ident == ID_DATA:
                    data = self.s.read_exact(value)
                    self.on_bytes(len(data))
                    if out is not None:
                        out.write(data)
                elif ident == ID_DONE:
                    break
                else:
                    raise StreamClosed()  # protocol violation: adbd drops the stream
            if out is not None:
                out.close()
                out = None
                mode = int(mode_text) if mode_text.isdigit() else 0o644
                os.chmod(tmp, stat.S_IMODE(mode) or 0o644)
                os.utime(tmp, (value, value))
                os.replace(tmp, host)
                tmp = None
        finally:
            if out is not None:
                out.close()
            if tmp is not None and tmp.exists():
                tmp.unlink()
        if error:
            self.fail(error)
        else:
            self.send_msg(ID_OKAY, 0)


def run_sync(stream: Stream, sandbox: Sandbox, on_bytes) -> None:
    try:
        _Sync(stream, sandbox, on_bytes).serve()
    except (StreamClosed, OSError):
        pass
