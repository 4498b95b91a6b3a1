"""`lutbuild` CLI: user errors, `show`, and real builds (a killed subprocess, a small verify)."""
from __future__ import annotations

import hashlib
import json
import os
import signal
import sqlite3
import subprocess
import sys
import time
from pathlib import Path

import pytest

from device_agents.contract import BenchmarkSettings
from lut_db.layer_key import LayerConfig, RuntimeSpec
from lut_db.schema import open_lut
from lut_db.writer import LutWriter, MeasurementRow
from profiler.cli import cli

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))  # `tests.lutbuild_helpers` under any import mode
from tests.lutbuild_helpers import invoke, micro_space_registered, one_line_error  # noqa: E402

LUTBUILD = Path(sys.executable).with_name("lutbuild")


def digest(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


def test_spaces_lists_the_registered_spaces_with_their_key_counts():
    result = invoke("spaces")
    assert result.exit_code == 0
    assert "mbv3-tiny" in result.output and "407 LUT keys" in result.output and "mbv3-large" in result.output


def test_every_command_has_help_text():
    for name, command in cli.commands.items():
        assert command.help, name
        assert invoke(name, "--help").exit_code == 0


def test_bad_space_name_in_a_real_process_is_one_line_exit_1_and_no_file(tmp_path):
    db = tmp_path / "lut.sqlite"
    proc = subprocess.run([str(LUTBUILD), "build", "--space", "mbv3-huge", "--runtime", "onnx", "--db", str(db)],
                          capture_output=True, text=True, timeout=120)
    assert proc.returncode == 1
    line = one_line_error(proc.stderr)
    assert "unknown search space 'mbv3-huge'" in line and "mbv3-tiny" in line
    assert not db.exists()


def test_a_file_that_is_not_sqlite_is_one_line_exit_1_and_untouched(tmp_path):
    db = tmp_path / "notes.sqlite"
    db.write_text("these are my notes\n")
    before = digest(db)
    for args in (["build", "--space", "mbv3-tiny", "--runtime", "onnx", "--db", db],
                 ["verify", "--space", "mbv3-tiny", "--runtime", "onnx", "--db", db], ["show", "--db", db]):
        result = invoke(*args)
        assert result.exit_code == 1, result.output
        assert "not an SQLite file" in one_line_error(result.stderr) and str(db) in result.stderr
    assert digest(db) == before and sorted(p.name for p in tmp_path.iterdir()) == ["notes.sqlite"]


def test_a_lut_with_a_newer_schema_is_one_line_exit_1_and_untouched(tmp_path):
    db = tmp_path / "future.sqlite"
    conn = open_lut(db)
    conn.execute("UPDATE meta SET value = '99' WHERE name = 'schema_version'")
    conn.conn.commit()
    conn.execute("PRAGMA wal_checkpoint(TRUNCATE)")
    conn.close()
    before = digest(db)
    for args in (["build", "--space", "mbv3-tiny", "--runtime", "onnx", "--db", db], ["show", "--db", db]):
        result = invoke(*args)
        assert result.exit_code == 1
        assert "schema version 99 is newer" in one_line_error(result.stderr)
    assert digest(db) == before


def test_bad_options_are_one_line_exit_1(tmp_path):
    db = tmp_path / "lut.sqlite"
    for args, expected in [
        (["build", "--space", "mbv3-tiny", "--runtime", "tf", "--db", db], "--runtime"),
        (["build", "--space", "mbv3-tiny", "--runtime", "onnx", "--db", db, "--batch-size", "0"], "--batch-size"),
        (["build", "--space", "mbv3-tiny", "--runtime", "onnx", "--db", db, "--plan", "dense"], "--plan"),
        (["build", "--space", "mbv3-tiny", "--runtime", "onnx", "--db", db, "--device", " "], "--device"),
        (["verify", "--space", "mbv3-tiny", "--runtime", "onnx", "--db", db], "no such LUT file"),
        (["show", "--db", db], "no such LUT file"),
    ]:
        result = invoke(*args)
        assert result.exit_code == 1, (args, result.output)
        assert expected in one_line_error(result.stderr), (args, result.stderr)
    assert not db.exists()


def test_verify_on_a_slice_the_lut_does_not_have_names_the_slices_present(tmp_path):
    db = tmp_path / "lut.sqlite"
    _small_lut(db, device_id="android:pixel:123")
    result = invoke("verify", "--space", "mbv3-tiny", "--runtime", "onnx", "--db", db, "--quiet")
    assert result.exit_code == 1
    line = one_line_error(result.stderr)
    assert "no measurements for device 'local:" in line and "android:pixel:123" in line


def _small_lut(db: Path, device_id: str = "dev1") -> None:
    conn = open_lut(db)
    writer = LutWriter(conn)
    layers = [LayerConfig("conv", 8, 8, 8, c) for c in (8, 16, 24)]
    writer.register_space("mbv3-tiny", layers + [LayerConfig("gap", 4, 4, 8, 8)])
    rt = RuntimeSpec("tflite", "ai-edge-litert 2.3", 1, "xnnpack")
    writer.write([MeasurementRow(c, device_id, rt, 50, 0.01 * i + 0.01, 0.01, 0.01, 0.01, 0.0)
                  for i, c in enumerate(layers)])
    writer.set_calibration(device_id, "tflite", rt.options, "overhead", 0.00065)
    conn.close()


def test_show_prints_devices_slices_calibration_and_coverage(tmp_path):
    db = tmp_path / "lut.sqlite"
    _small_lut(db)
    result = invoke("show", "--db", db)
    assert result.exit_code == 0, result.output
    out = result.output
    for expected in ("devices", "slices", "calibration", "coverage per search space", "dev1", "tflite",
                     "threads=1;delegate=xnnpack", "0.00065", "mbv3-tiny"):
        assert expected in out, expected
    coverage_line = [line for line in out.splitlines() if line.startswith("mbv3-tiny")][0]
    assert coverage_line.split()[-4:] == ["4", "3", "0", "1"]  # needed, measured, interpolated, missing


# ----------------------------------------------------------------------------- real runs
def _count(db: Path) -> int:
    try:
        with sqlite3.connect(f"file:{db}?mode=ro", uri=True, timeout=5) as conn:
            return conn.execute("SELECT COUNT(*) FROM measurements").fetchone()[0]
    except sqlite3.OperationalError:  # not created yet
        return 0


def _rows(db: Path) -> dict[str, str]:
    with sqlite3.connect(db) as conn:
        return dict(conn.execute("SELECT layer_key, measured_at FROM measurements").fetchall())


@pytest.mark.slow
def test_a_killed_build_subprocess_resumes_without_measuring_anything_twice(tmp_path):
    db, cache = tmp_path / "lut.sqlite", tmp_path / "cache"
    args = [str(LUTBUILD), "build", "--space", "mbv3-tiny", "--runtime", "onnx", "--db", str(db), "--batch-size", "4",
            "--limit", "16", "--jobs", "1", "--repeats", "1", "--cache-dir", str(cache), "--quiet"]
    proc = subprocess.Popen(args, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)
    deadline = time.monotonic() + 240
    try:
        while _count(db) < 4 and proc.poll() is None and time.monotonic() < deadline:
            time.sleep(0.05)
        assert proc.poll() is None, f"build ended before it could be killed: {proc.stderr.read()}"
        os.kill(proc.pid, signal.SIGKILL)  # right after the first committed batch
    finally:
        proc.wait(timeout=60)
    first = _rows(db)
    assert 4 <= len(first) < 16 and len(first) % 4 == 0  # whole batches only
    rerun = subprocess.run(args, capture_output=True, text=True, timeout=600)
    assert rerun.returncode == 0, rerun.stderr
    assert f"measured 16 key(s) now, {len(first)} before" in rerun.stdout
    after = _rows(db)
    assert len(after) == len(first) + 16
    assert {k: after[k] for k in first} == first  # the committed rows were not measured again
    with sqlite3.connect(db) as conn:
        assert conn.execute("SELECT COUNT(*), COUNT(DISTINCT layer_key) FROM measurements").fetchone() == (
            len(after), len(after))
        assert conn.execute("SELECT COUNT(*) FROM calibration WHERE name = 'overhead'").fetchone()[0] == 1
    assert not [p for p in cache.rglob("*.tmp*")]  # the kill left no half-written model either


@pytest.fixture
def micro_space():
    """A 12-key space registered in this process (click runner only)."""
    with micro_space_registered("test-micro") as name:
        yield name


@pytest.mark.slow
def test_real_build_and_verify_of_a_small_space_write_json_and_plot(micro_space, tmp_path):
    db, cache = tmp_path / "lut.sqlite", tmp_path / "cache"
    common = ["--space", micro_space, "--runtime", "onnx", "--db", db, "--cache-dir", cache, "--quiet"]
    result = invoke("build", *common)
    assert result.exit_code == 0, result.output + result.stderr
    assert "measured 1" in result.output
    out_json, out_png = tmp_path / "verify.json", tmp_path / "verify.png"
    result = invoke("verify", *common, "--samples", "3", "--rounds", "1", "--json", out_json, "--plot", out_png)
    assert result.exit_code == 0, result.output + result.stderr
    assert "LUT (sum of layers)" in result.output and "MAC proxy" in result.output
    report = json.loads(out_json.read_text())
    for key in ("n", "mape_pct", "within_5pct", "within_10pct", "spearman", "mac_proxy", "samples", "plan",
                "device", "runtime", "runtime_version", "noise"):
        assert key in report, key
    assert report["n"] == 3 and report["runtime_version"].startswith("onnxruntime")
    assert report["protocol"]["fast_passes_pct"] == BenchmarkSettings.fast_passes_pct  # the runner's rule, recorded
    if report["device"]["cpu_core"] and os.cpu_count() > 1:  # pinned, with other cores: their load is recorded
        busy = report["noise"]["others_busy_pct_median"]
        assert 0 <= busy <= report["noise"]["others_busy_pct_max"] <= 100
        state = open_lut(db, create=False).execute("SELECT state_after FROM measurements").fetchone()[0]
        assert 0 <= json.loads(state)["profiler"]["others_busy"] <= 1
    assert all(s["measured_ms"] > 0 and s["predicted_ms"] > 0 for s in report["samples"])
    assert out_png.read_bytes()[:4] == b"\x89PNG"
    result = invoke("show", "--db", db)
    assert micro_space in result.output
