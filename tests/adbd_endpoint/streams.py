"""One ADB stream (an OPENed service) as the device side sees it.

Why a class of its own: adb's flow control is per stream — after each WRTE the sender
waits for the peer's OKAY before the next — and service code (shell, sync) wants plain
blocking `read_exact` / `write` calls, not packets.
"""
from __future__ import annotations

import threading

from .protocol import A_CLSE, A_WRTE, Message

ACK_TIMEOUT_S = 120.0  # a host that stops acknowledging for this long is treated as gone


class StreamClosed(Exception):
    """The host closed the stream or the connection dropped."""


class Stream:
    def __init__(self, conn, local_id: int, remote_id: int):
        self.conn = conn
        self.local_id = local_id
        self.remote_id = remote_id
        self._inbox = bytearray()
        self._cond = threading.Condition()
        self._acked = threading.Event()
        self._acked.set()
        self.closed = threading.Event()
        self.aborted = False  # the connection was cut: buffered data is never delivered
        self._sent_close = False
        self.stdin_sink = None  # an interactive shell's stdin: WRTE data goes there


    # --- called by the connection's reader thread -------------------------------------
    def deliver(self, data: bytes) -> None:
        if self.stdin_sink is not None:
            try:
                self.stdin_sink.write(data)
                self.stdin_sink.flush()
            except OSError:
                pass
            return
        with self._cond:
            self._inbox += data
            self._cond.notify_all()

    def on_okay(self) -> None:
        self._acked.set()

    def on_close(self) -> None:
        self.closed.set()
        self._acked.set()
        with self._cond:
            self._cond.notify_all()

    # --- called by the service thread -------------------------------------------------
    def abort(self) -> None:
        """The connection dropped (a cable pulled): what was buffered is lost, as in adbd."""
        self.aborted = True
        self.on_close()

    def read_exact(self, n: int) -> bytes:
        with self._cond:
            if self.aborted:
                raise StreamClosed()
            while len(self._inbox) < n:
                if self.closed.is_set():
                    raise StreamClosed()
                self._cond.wait(0.5)
            out = bytes(self._inbox[:n])
            del self._inbox[:n]
            return out

    def write(self, data: bytes) -> None:
        """Send `data` as WRTE packets of at most the negotiated size, one OKAY each."""
        step = self.conn.max_payload
        for i in range(0, len(data), step):
            if not self._acked.wait(ACK_TIMEOUT_S) or self.closed.is_set():
                raise StreamClosed()
            self._acked.clear()
            self.conn.send(Message(A_WRTE, self.local_id, self.remote_id, data[i:i + step]))

    def _claim_close(self) -> bool:
        """True exactly once: whoever gets it sends our one CLSE for this stream."""
        with self._cond:
            if self._sent_close:
                return False
            self._sent_close = True
            return True

    def close(self) -> None:
        """Device-side close: CLSE(local, remote), as adbd does when the service exits."""
        if not self.closed.is_set():
            # Wait for the last WRTE's OKAY so the host has consumed everything first.
            self._acked.wait(ACK_TIMEOUT_S)
            if not self.closed.is_set() and self._claim_close():
                try:
                    self.conn.send(Message(A_CLSE, self.local_id, self.remote_id))
                except OSError:
                    pass
        self.closed.set()

    def host_closed(self) -> None:
        """The host sent CLSE: answer with ours (hosts such as adb-shell wait for it)."""
        if self._claim_close():
            try:
                self.conn.send(Message(A_CLSE, self.local_id, self.remote_id))
            except OSError:
                pass
        self.on_close()
