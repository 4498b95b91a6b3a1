"""The two LUT opens (read, write): damaged, read-only, non-regular, locked, full files (issue 13).

Each test runs the real `lutbuild` (click runner, or a subprocess where a process matters)
on a real SQLite file and checks the exit code, ONE line on stderr naming the file and the
cause, and that the file's bytes (and its folder) are unchanged.
"""
from __future__ import annotations

import hashlib
import os
import resource
import signal
import sqlite3
import stat
import subprocess
import sys
import threading
import time
from pathlib import Path

import pytest

from lut_db import LutError, NotALutDatabase, open_lut_for_reading, open_lut_for_writing
from lut_db.layer_key import LayerConfig, RuntimeSpec
from lut_db.reader import LatencyTable
from lut_db.writer import DeviceRecord, LutWriter, MeasurementRow
from lutbuild_helpers import invoke

LUTBUILD = Path(sys.executable).with_name("lutbuild")
RT = RuntimeSpec("tflite", "ai-edge-litert 2.3", 1, "xnnpack")


def one_error_line(stderr: str) -> str:
    lines = [line for line in stderr.splitlines() if line.strip()]
    assert len(lines) == 1, lines
    assert lines[0].startswith("lutbuild: error: ") and "Traceback" not in stderr
    return lines[0]


def digest(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


def rows(n: int, device_id: str = "dev1", start: int = 0) -> list[MeasurementRow]:
    return [MeasurementRow(LayerConfig("conv", 8, 8, 8, 8 * (i + 1)), device_id, RT, 50, 0.01 * (i + 1),
                           0.01, 0.01, 0.01, 0.0) for i in range(start, start + n)]


def small_lut(db: Path, n: int = 3) -> Path:
    conn = open_lut_for_writing(db)
    writer = LutWriter(conn)
    layers = [r.layer for r in rows(n)]
    writer.register_space("mbv3-tiny", layers)
    writer.write(rows(n))
    conn.close()
    return db


def build_args(db: Path, *more) -> list:
    return ["build", "--space", "mbv3-tiny", "--runtime", "onnx", "--db", db, "--quiet", *more]


# ----------------------------------------------------------------------------- row 1: damaged pages
def _damage(db: Path) -> None:
    """Overwrite the last page with garbage, keeping the file's size (a bad sector, a torn copy)."""
    page = sqlite3.connect(db).execute("PRAGMA page_size").fetchone()[0]
    size = db.stat().st_size
    with open(db, "r+b") as f:
        f.seek(size - page)
        f.write(bytes(range(256)) * (page // 256))
    assert db.stat().st_size == size


def test_a_damaged_lut_is_one_line_naming_the_file_for_show_and_build_and_untouched(tmp_path):
    db = small_lut(tmp_path / "lut.sqlite", n=200)
    _damage(db)
    before = digest(db)
    for args in (["show", "--db", db], build_args(db)):
        result = invoke(*args)
        assert result.exit_code == 1, result.output
        line = one_error_line(result.stderr)
        assert str(db) in line and "damaged" in line, line
    with pytest.raises(NotALutDatabase, match="damaged"):
        LatencyTable.load(db, "dev1", "tflite")
    assert digest(db) == before and sorted(p.name for p in tmp_path.iterdir()) == ["lut.sqlite"]


# ----------------------------------------------------------------------------- rows 2-4: read-only
def test_build_on_a_read_only_lut_is_one_line_and_untouched(tmp_path):
    db = small_lut(tmp_path / "lut.sqlite")
    db.chmod(0o444)
    before = digest(db)
    result = invoke(*build_args(db))
    assert result.exit_code == 1
    line = one_error_line(result.stderr)
    assert str(db) in line and "read-only" in line
    assert digest(db) == before and sorted(p.name for p in tmp_path.iterdir()) == ["lut.sqlite"]


def test_reading_a_0444_lut_leaves_no_wal_or_shm_and_a_later_build_can_write(tmp_path):
    db = small_lut(tmp_path / "lut.sqlite")
    db.chmod(0o444)
    before = digest(db)
    result = invoke("show", "--db", db)
    assert result.exit_code == 0, result.output
    assert "mbv3-tiny" in result.output
    assert len(LatencyTable.load(db, "dev1", "tflite")) == 3
    assert sorted(p.name for p in tmp_path.iterdir()) == ["lut.sqlite"] and digest(db) == before
    db.chmod(0o644)
    conn = open_lut_for_writing(db)
    assert LutWriter(conn).write(rows(2, start=3)) == 2
    conn.close()
    assert len(LatencyTable.load(db, "dev1", "tflite")) == 5


def test_a_lut_in_a_read_only_directory_reads_and_build_names_the_directory(tmp_path):
    folder = tmp_path / "shared"
    folder.mkdir()
    db = small_lut(folder / "lut.sqlite")
    before = digest(db)
    folder.chmod(0o555)
    try:
        result = invoke("show", "--db", db)
        assert result.exit_code == 0, result.output
        assert len(LatencyTable.load(db, "dev1", "tflite")) == 3
        result = invoke(*build_args(db))
        assert result.exit_code == 1
        line = one_error_line(result.stderr)
        assert str(folder) in line and "read-only" in line
        assert sorted(p.name for p in folder.iterdir()) == ["lut.sqlite"] and digest(db) == before
    finally:
        folder.chmod(0o755)


# ----------------------------------------------------------------------------- row 5: meta edited
def test_a_schema_version_that_is_not_an_integer_is_one_line(tmp_path):
    db = small_lut(tmp_path / "lut.sqlite")
    with sqlite3.connect(db) as conn:
        conn.execute("UPDATE meta SET value = 'one' WHERE name = 'schema_version'")
    conn.close()
    before = digest(db)
    for args in (["show", "--db", db], build_args(db)):
        result = invoke(*args)
        assert result.exit_code == 1
        line = one_error_line(result.stderr)
        assert str(db) in line and "meta.schema_version is 'one', expected an integer" in line
    assert digest(db) == before


# ----------------------------------------------------------------------------- row 6: disk full
def test_disk_full_mid_write_is_a_lut_error_and_keeps_the_committed_rows(tmp_path):
    db = small_lut(tmp_path / "lut.sqlite")
    conn = open_lut_for_writing(db)
    pages = conn.execute("PRAGMA page_count").fetchone()[0]
    conn.execute(f"PRAGMA max_page_count = {pages + 1}")  # SQLite's own SQLITE_FULL, as on a full disk
    with pytest.raises(LutError, match="the disk is full") as info:
        LutWriter(conn).write(rows(300, start=3))
    assert str(db) in str(info.value) and "\n" not in str(info.value)
    conn.close()
    assert len(LatencyTable.load(db, "dev1", "tflite")) == 3  # nothing half-written, nothing lost
    conn = open_lut_for_writing(db)  # space again: the same write goes through
    assert LutWriter(conn).write(rows(300, start=3)) == 300
    conn.close()


def _file_size_limit(limit: int):
    def apply() -> None:
        signal.signal(signal.SIGXFSZ, signal.SIG_IGN)  # write() then fails with EFBIG: SQLite says "full"
        resource.setrlimit(resource.RLIMIT_FSIZE, (limit, limit))
    return apply


def test_build_on_a_full_disk_is_one_line_exit_1_and_the_lut_unchanged(tmp_path):
    db = small_lut(tmp_path / "lut.sqlite")
    before = digest(db)
    proc = subprocess.run([str(LUTBUILD), *map(str, build_args(db, "--cache-dir", tmp_path / "cache"))],
                          capture_output=True, text=True, timeout=300, preexec_fn=_file_size_limit(2048))
    assert proc.returncode == 1, proc.stderr
    line = one_error_line(proc.stderr)
    assert str(db) in line and "full" in line  # a file size limit reads as an I/O error to SQLite
    assert digest(db) == before


# ----------------------------------------------------------------------------- row 7: two writers
def test_two_writers_started_together_both_finish(tmp_path):
    """A deferred BEGIN that reads before it writes fails at once with 'database is locked' when
    the other writer committed in between (on 5d3ec68: every run of this test); with IMMEDIATE
    transactions and the busy timeout both commit."""
    db = small_lut(tmp_path / "lut.sqlite")
    barrier = threading.Barrier(2)
    errors: list[BaseException] = []

    def writer(device: str) -> None:
        try:
            conn = open_lut_for_writing(db)
            w = LutWriter(conn)
            barrier.wait()
            for batch in range(20):  # what a build's start does: reads inside the transaction, then writes
                w.register_device(DeviceRecord(device, model=str(batch)))
                w.register_space(f"space-{device}", [r.layer for r in rows(5)])
                w.measured_keys(device, "tflite", RT.options)
                w.write(rows(5, device_id=device, start=batch * 5))
            conn.close()
        except BaseException as exc:  # noqa: BLE001 - collected for the assertion
            errors.append(exc)

    threads = [threading.Thread(target=writer, args=(d,)) for d in ("devA", "devB")]
    for t in threads:
        t.start()
    for t in threads:
        t.join(timeout=120)
    assert not errors, errors
    for device in ("devA", "devB"):
        assert len(LatencyTable.load(db, device, "tflite")) == 100


_RACE = """
import sys
from lut_db import open_lut_for_writing
from lut_db.writer import DeviceRecord, LutWriter, MeasurementRow
from lut_db.layer_key import LayerConfig, RuntimeSpec
db, device, start = sys.argv[1], sys.argv[2], float(sys.argv[3])
import time
while time.time() < start:
    time.sleep(0.001)
conn = open_lut_for_writing(db)
w = LutWriter(conn)
w.register_space("mbv3-tiny", [LayerConfig("conv", 8, 8, 8, 8)])
rt = RuntimeSpec("tflite", "v", 1, "xnnpack")
for b in range(10):
    w.measured_keys(device, "tflite", rt.options)
    w.write([MeasurementRow(LayerConfig("conv", 8, 8, 8, 8 * (b * 4 + i + 1)), device, rt, 5, 0.1, 0.1, 0.1, 0.1, 0.0)
             for i in range(4)])
conn.close()
"""


def test_two_processes_creating_one_new_lut_at_the_same_moment_both_finish(tmp_path):
    db = tmp_path / "new.sqlite"
    start = time.time() + 3
    procs = [subprocess.Popen([sys.executable, "-c", _RACE, str(db), d, str(start)], stderr=subprocess.PIPE,
                              text=True) for d in ("devA", "devB")]
    for p in procs:
        assert p.wait(timeout=120) == 0, p.stderr.read()
    for device in ("devA", "devB"):
        assert len(LatencyTable.load(db, device, "tflite")) == 40


# ----------------------------------------------------------------------------- row 16: not a regular file
def test_a_fifo_or_dev_null_as_db_is_one_line_and_never_hangs(tmp_path):
    fifo = tmp_path / "pipe.sqlite"
    os.mkfifo(fifo)
    for db in (fifo, Path("/dev/null")):
        for args in (["show", "--db", db], build_args(db)):
            proc = subprocess.run([str(LUTBUILD), *map(str, args)], capture_output=True, text=True, timeout=120)
            assert proc.returncode == 1, proc.stderr
            line = one_error_line(proc.stderr)
            assert str(db) in line and "not a regular file" in line
    assert stat.S_ISFIFO(fifo.stat().st_mode)
    with pytest.raises(LutError, match="not a regular file"):
        open_lut_for_reading("/dev/null")
