"""The two ways a LUT file is opened as SQLite: for reading and for writing.

Every open of a LUT goes through here (`schema.open_lut_for_reading` /
`open_lut_for_writing` add the schema checks), so the file rules live in one place:

- Only a regular file (or, for a writer, a path that does not exist yet) is a LUT: a FIFO
  would hang the open, `/dev/null` gives a `disk I/O error` later.
- Readers never write (``PRAGMA query_only``, and the read-only URI ``mode=ro`` where the
  file may not be written) and leave no file behind (`connect_reader`): a 0444 file would
  otherwise get 0444 ``-wal``/``-shm`` files that break later writes, and a read-only
  directory could not hold them at all.
- Writers refuse a read-only file or directory before any work, and begin every write
  transaction ``IMMEDIATE`` with a busy timeout: a deferred ``BEGIN`` followed by a read
  and then a write fails at once with "database is locked" when another process committed
  in between (WAL), whatever the timeout; ``IMMEDIATE`` takes the write lock first, so two
  builds on one file wait for each other and both finish.
- Every `sqlite3.Error` becomes a one-line `LutError` naming the file and the cause
  (damaged, read-only, disk full, locked, ...): `lut_errors`.
"""
from __future__ import annotations

import contextlib
import os
import random
import sqlite3
import stat
import time
from collections.abc import Iterator
from pathlib import Path
from urllib.parse import quote

from sqlite_utils import Database

from .errors import LutError, NotALutDatabase

#: How long a writer waits for another process's write transaction (s): a build commits one
#: batch per transaction (well under a second), so 10 s only runs out behind a stuck process.
BUSY_TIMEOUT_S = 10.0

# Primary SQLite result codes (https://sqlite.org/rescode.html) -> what the user is told.
_CAUSES = {
    3: "permission denied",  # SQLITE_PERM
    5: f"locked by another process (waited {BUSY_TIMEOUT_S:.0f} s)",  # SQLITE_BUSY
    6: "locked by another connection",  # SQLITE_LOCKED
    8: "read-only (the file, its directory or the file system cannot be written)",  # SQLITE_READONLY
    10: "could not write or read the file: the disk may be full or failing",  # SQLITE_IOERR (EFBIG, EIO)
    11: "the database is damaged",  # SQLITE_CORRUPT
    13: "the disk is full",  # SQLITE_FULL
    14: "cannot open the file",  # SQLITE_CANTOPEN
    26: "not a database (damaged, or not SQLite)",  # SQLITE_NOTADB
}
_HINTS = {
    11: "restore it from a copy, or build a new LUT",
    26: "restore it from a copy, or build a new LUT",
    13: "free some space and run the same command again (committed rows are kept)",
    10: "free some space (or check the disk) and run the same command again (committed rows are kept)",
    5: "wait for the other lutbuild to finish, or stop it",
}


class LutDatabase(Database):
    """A sqlite-utils `Database` whose write transactions begin IMMEDIATE, with the file's path."""

    def __init__(self, conn: sqlite3.Connection, path: Path) -> None:
        super().__init__(conn)
        self.path = path

    @contextlib.contextmanager
    def atomic(self) -> Iterator[LutDatabase]:
        """One transaction (a savepoint when nested); the outermost one takes the write lock first."""
        if self.conn.in_transaction:
            with super().atomic():
                yield self
            return
        self.conn.execute("BEGIN IMMEDIATE")
        try:
            yield self
        except BaseException:
            self.conn.rollback()
            raise
        try:
            self.conn.execute("COMMIT")
        except BaseException:
            self.conn.rollback()
            raise


def cause(exc: sqlite3.Error) -> str:
    """What went wrong, in a user's words, from an sqlite3 error (one line)."""
    code = getattr(exc, "sqlite_errorcode", None)
    text = " ".join(str(exc).split()) or type(exc).__name__
    if code is None:
        return text
    what = _CAUSES.get(code & 0xFF)
    hint = _HINTS.get(code & 0xFF)
    if what is None:
        return text
    return f"{what} ({text})" + (f"; {hint}" if hint else "")


@contextlib.contextmanager
def lut_errors(path: str | Path) -> Iterator[None]:
    """Turn every `sqlite3.Error` raised inside into a one-line `LutError` naming `path`."""
    try:
        yield
    except sqlite3.Error as exc:
        code = getattr(exc, "sqlite_errorcode", 0) or 0
        kind = NotALutDatabase if code & 0xFF in (11, 26) else LutError
        raise kind(f"{path}: {cause(exc)}") from exc


def check_regular_file(path: Path, create: bool) -> bool:
    """Whether `path` exists; a LutError unless it is a regular file (or absent and `create`)."""
    try:
        st = path.stat()
    except FileNotFoundError:
        if not create:
            raise LutError(f"{path}: no such LUT file; build one with `lutbuild build`") from None
        if not path.parent.is_dir():
            raise LutError(f"{path}: directory {path.parent} does not exist") from None
        return False
    except OSError as exc:
        raise LutError(f"{path}: cannot access ({exc.strerror or exc})") from None
    if stat.S_ISDIR(st.st_mode):
        raise NotALutDatabase(f"{path}: is a directory, expected a netadaptv2 LUT (SQLite) file")
    if not stat.S_ISREG(st.st_mode):
        raise NotALutDatabase(f"{path}: not a regular file (a device, FIFO or socket); expected a netadaptv2 "
                              "LUT (SQLite) file")
    return True


def _writable(path: Path) -> bool:
    """Writable by us *and* not marked read-only by its owner (root ignores the write bits)."""
    try:
        mode = path.stat().st_mode
    except OSError:
        return False
    return bool(mode & 0o222) and os.access(path, os.W_OK)


def _uri(path: Path, **params: str) -> str:
    query = "&".join(f"{k}={v}" for k, v in params.items())
    return f"file:{quote(str(path.resolve()))}?{query}"


def connect_reader(path: Path) -> LutDatabase:
    """Open an existing regular file for reading only; sqlite errors -> LutError.

    Three cases, none of which writes the LUT or leaves a file behind that was not there:
    a file nobody may write (no write bit on it or its directory) with no ``-wal`` is opened
    ``mode=ro&immutable=1`` (SQLite creates no ``-wal``/``-shm``); with a ``-wal`` (a writer
    is at work) ``mode=ro``, which shares the writer's files and sees its commits; a writable
    file without one is opened ``mode=rw`` with ``PRAGMA query_only``: as read-only as
    ``mode=ro`` (every write is refused), but the last connection to close removes the
    ``-wal``/``-shm`` it needed, which a ``mode=ro`` connection cannot."""
    check_regular_file(path, create=False)
    wal = Path(f"{path}-wal")
    read_only = not _writable(path) or not _writable(path.parent)
    if wal.exists():
        params = {"mode": "ro"}
    elif read_only:
        params = {"mode": "ro", "immutable": "1"}
    else:
        params = {"mode": "rw"}
    with lut_errors(path):
        conn = sqlite3.connect(_uri(path, **params), uri=True, timeout=BUSY_TIMEOUT_S)
        conn.execute("PRAGMA query_only = ON")
    return LutDatabase(conn, path)


def connect_writer(path: Path) -> tuple[LutDatabase, bool]:
    """Open (or create) `path` for writing: (db, existed). Refuses a read-only file or directory and
    a file another process keeps write-locked, before any work."""
    existed = check_regular_file(path, create=True)
    if existed and not _writable(path):
        raise LutError(f"{path}: the LUT file is read-only; make it writable (chmod u+w) or write another --db")
    if not _writable(path.parent):
        raise LutError(f"{path}: directory {path.parent} is read-only (SQLite writes {path.name}-wal next to "
                       "the LUT); use a writable directory")
    with lut_errors(path):
        conn = sqlite3.connect(path, timeout=BUSY_TIMEOUT_S)
        conn.isolation_level = "IMMEDIATE"  # Python's implicit transactions too
        db = LutDatabase(conn, path)
        try:
            conn.execute(f"PRAGMA busy_timeout = {int(BUSY_TIMEOUT_S * 1000)}")
            conn.execute("BEGIN IMMEDIATE")  # read-only file system, a stuck writer: found now
            conn.rollback()
        except BaseException:
            conn.close()
            raise
    return db, existed


def enable_wal(db: Database) -> None:
    """Put the file of `db` in WAL mode (persistent), outside any transaction.

    Two processes creating one new LUT at the same moment both ask for it; the switch upgrades
    a shared lock to an exclusive one, and when both hold the shared lock SQLite answers one of
    them SQLITE_BUSY at once, without its busy timeout (waiting could deadlock). So retry for up
    to `BUSY_TIMEOUT_S`, and stop as soon as the file is in WAL (the other process switched it).
    """
    deadline = time.monotonic() + BUSY_TIMEOUT_S
    while True:
        try:
            if str(db.execute("PRAGMA journal_mode").fetchone()[0]).lower() != "wal":
                db.enable_wal()
            return
        except sqlite3.OperationalError as exc:
            if "locked" not in str(exc) or time.monotonic() > deadline:
                raise
            time.sleep(random.uniform(0.01, 0.05))  # jitter: the two processes do not retry in step
