"""`lutbuild merge`: LUTs of different hosts combined in one transaction (real SQLite files)."""
from __future__ import annotations

import random
import sqlite3
from pathlib import Path

import pytest
from test_mcd_fixtures import DEVICE, synth_lut

from lut_db import (
    SCHEMA_VERSION, DeviceRecord, LatencyTable, LayerConfig, LutError, LutWriter, MeasurementRow, RuntimeSpec,
    open_lut_for_reading, open_lut_for_writing,
)
from lut_db.merge import MERGED_TABLES, MergeConflict, merge_luts
from lut_db.schema import MIGRATIONS
from profiler.predictor import LatencyPredictor
from search.spaces import get_space
from lutbuild_helpers import invoke

TFLITE = RuntimeSpec("tflite", version="2.16.1")
ONNX = RuntimeSpec("onnx", version="1.20.0")
HOST_A, HOST_B = "local:vm:Intel(R) Xeon(R)", "local:vm:AMD EPYC"


def conv(cout: int) -> LayerConfig:
    return LayerConfig("conv", 14, 14, 16, cout, kernel=1, act="relu")


def mrow(cfg: LayerConfig, ms: float, at: str, source: str = "measured", device: str = HOST_A,
         runtime: RuntimeSpec = TFLITE) -> MeasurementRow:
    measured = source == "measured"
    return MeasurementRow(cfg, device, runtime, n=50 if measured else 0, median_ms=ms,
                          mean_ms=ms if measured else None, p10_ms=ms * 0.9 if measured else None,
                          p90_ms=ms * 1.1 if measured else None, std_ms=ms * 0.02 if measured else None,
                          source=source, plan="full" if measured else "sparse", measured_at=at, warmup_runs=10,
                          state_before={"host": device}, state_after={"throttled": False})


def make_lut(path: Path, rows: list[MeasurementRow], devices=(), calibration=(), space=None) -> Path:
    """A LUT written exactly as `lutbuild build` writes one (LutWriter)."""
    db = open_lut_for_writing(path)
    writer = LutWriter(db)
    for device in devices:
        writer.register_device(device)
    writer.write(rows)
    for device_id, runtime, name, value, at in calibration:
        writer.set_calibration(device_id, runtime.name, runtime.options, name, value, {"how": "empty graph"}, at)
    if space:
        writer.register_space(*space)
    db.close()
    return path


def dump(path: Path) -> dict[str, list[tuple]]:
    """Every row of every merged table (measurement ids left out: the destination numbers its own)."""
    db = open_lut_for_reading(path)
    try:
        out = {}
        for table in MERGED_TABLES:
            columns = [c for c in db[table].columns_dict if not (table == "measurements" and c == "id")]
            out[table] = sorted(db.execute(f"SELECT {', '.join(columns)} FROM {table}").fetchall(), key=repr)
        return out
    finally:
        db.close()


def measurement(path: Path, cfg: LayerConfig, device: str = HOST_A) -> dict:
    db = open_lut_for_reading(path)
    try:
        return next(db["measurements"].rows_where("layer_key = ? AND device_id = ?", [cfg.key, device]))
    finally:
        db.close()


def one_error_line(result) -> str:
    lines = [line for line in result.stderr.splitlines() if line.strip()]
    assert result.exit_code == 1, result.output
    assert len(lines) == 1 and lines[0].startswith("lutbuild: error: "), lines
    return lines[0]


@pytest.fixture
def two_hosts(tmp_path):
    """Two LUTs filled on two hosts: own slices, one shared key of HOST_A's slice, calibration, spaces."""
    a = make_lut(tmp_path / "A.sqlite",
                 [mrow(conv(8), 0.10, "2026-01-01T00:00:00+00:00"), mrow(conv(16), 0.20, "2026-01-01T00:00:00+00:00")],
                 devices=[DeviceRecord(HOST_A, model="Xeon VM", soc="Intel", first_seen="2026-01-01T00:00:00+00:00")],
                 calibration=[(HOST_A, TFLITE, "overhead", 0.011, "2026-01-01T00:00:00+00:00")],
                 space=("space-a", [conv(8), conv(16)]))
    b = make_lut(tmp_path / "B.sqlite",
                 [mrow(conv(8), 0.30, "2026-02-01T00:00:00+00:00", device=HOST_B, runtime=ONNX),
                  mrow(conv(32), 0.40, "2026-02-01T00:00:00+00:00", source="interpolated", device=HOST_B,
                       runtime=ONNX)],
                 devices=[DeviceRecord(HOST_B, model="EPYC VM", soc="AMD", first_seen="2026-02-01T00:00:00+00:00")],
                 calibration=[(HOST_B, ONNX, "overhead", 0.02, "2026-02-01T00:00:00+00:00")],
                 space=("space-b", [conv(8), conv(32)]))
    return a, b


# --- combining, provenance -------------------------------------------------------------------

def test_merge_into_a_new_file_keeps_every_row_whole(two_hosts, tmp_path):
    a, b = two_hosts
    before = dump(a), dump(b)
    report = merge_luts([a, b], tmp_path / "C.sqlite")
    merged = dump(tmp_path / "C.sqlite")
    assert report.created and (report.added, report.replaced, report.kept) == (4, 0, 0)
    # Every row of both inputs, every column (device, runtime, version, options, source, plan, time, state).
    for table in MERGED_TABLES:
        assert merged[table] == sorted(before[0][table] + [r for r in before[1][table] if r not in before[0][table]],
                                       key=repr), table
    assert measurement(tmp_path / "C.sqlite", conv(32), HOST_B)["source"] == "interpolated"
    assert (dump(a), dump(b)) == before  # inputs untouched
    assert sorted(p.name for p in tmp_path.iterdir()) == ["A.sqlite", "B.sqlite", "C.sqlite"]  # no temp, no -wal


def test_merge_into_an_existing_lut_keeps_its_rows_and_fills_device_details(two_hosts, tmp_path):
    a, b = two_hosts
    c = make_lut(tmp_path / "C.sqlite", [mrow(conv(64), 0.9, "2025-12-01T00:00:00+00:00")],
                 devices=[DeviceRecord(HOST_A, cpu_core="0", first_seen="2025-12-01T00:00:00+00:00")])
    report = merge_luts([a, b], c)
    assert not report.created and report.added == 4 and report.devices_added == 1
    assert measurement(c, conv(64))["median_ms"] == 0.9
    db = open_lut_for_reading(c)
    device = db["devices"].get(HOST_A)
    db.close()
    # Empty fields filled from A, C's own detail kept, the earliest first sighting kept.
    assert (device["model"], device["soc"], device["cpu_core"], device["first_seen"]) == (
        "Xeon VM", "Intel", "0", "2025-12-01T00:00:00+00:00")


def test_merge_knows_every_table_of_the_schema(tmp_path):
    """A migration that adds a table must teach the merge how to carry it (ids remapped)."""
    db = open_lut_for_writing(tmp_path / "fresh.sqlite")
    tables = set(db.table_names())
    db.close()
    assert tables == set(MERGED_TABLES) | {"meta", MIGRATIONS.migrations_table}


# --- conflicts -------------------------------------------------------------------------------

def test_prefer_measured_then_newest_then_first(tmp_path):
    old, new = "2026-01-01T00:00:00+00:00", "2026-03-01T00:00:00+00:00"
    a = make_lut(tmp_path / "A.sqlite", [
        mrow(conv(8), 1.0, new, source="interpolated"),  # newer, but interpolated
        mrow(conv(16), 2.0, old),  # older measured
        mrow(conv(32), 3.0, old),  # same rank as B's: the first file wins
    ])
    b = make_lut(tmp_path / "B.sqlite", [
        mrow(conv(8), 1.5, old),
        mrow(conv(16), 2.5, new),
        mrow(conv(32), 3.5, old),
    ])
    c = tmp_path / "C.sqlite"
    report = merge_luts([a, b], c)
    assert [measurement(c, conv(k))["median_ms"] for k in (8, 16, 32)] == [1.5, 2.5, 3.0]
    assert measurement(c, conv(8))["source"] == "measured" and measurement(c, conv(8))["n"] == 50
    assert (report.added, report.replaced, report.kept) == (3, 2, 1)
    # The policy does not depend on the order of the files, except for the tie.
    merge_luts([b, a], tmp_path / "D.sqlite")
    assert [measurement(tmp_path / "D.sqlite", conv(k))["median_ms"] for k in (8, 16, 32)] == [1.5, 2.5, 3.5]


def test_calibration_conflict_keeps_the_newer_constant(tmp_path):
    a = make_lut(tmp_path / "A.sqlite", [mrow(conv(8), 1.0, "2026-01-01T00:00:00+00:00")],
                 calibration=[(HOST_A, TFLITE, "overhead", 0.010, "2026-01-01T00:00:00+00:00")])
    b = make_lut(tmp_path / "B.sqlite", [mrow(conv(8), 1.0, "2026-01-01T00:00:00+00:00")],
                 calibration=[(HOST_A, TFLITE, "overhead", 0.012, "2026-02-01T00:00:00+00:00")])
    merge_luts([b, a], tmp_path / "C.sqlite")
    table = LatencyTable.load(tmp_path / "C.sqlite", HOST_A, "tflite", TFLITE.options)
    assert table.overhead_ms == 0.012


def test_identical_rows_are_no_conflict(two_hosts, tmp_path):
    a, _ = two_hosts
    c = tmp_path / "C.sqlite"
    merge_luts([a], c)
    report = merge_luts([a], c, on_conflict="fail")  # the same rows again: nothing to refuse
    assert (report.added, report.replaced, report.kept) == (0, 0, 2)
    assert dump(c) == dump(a)


def test_fail_refuses_naming_key_slice_and_both_files_and_leaves_c_unchanged(two_hosts, tmp_path):
    a, b = two_hosts
    c = make_lut(tmp_path / "C.sqlite", [mrow(conv(64), 0.9, "2025-12-01T00:00:00+00:00")])
    other = make_lut(tmp_path / "other-farm.sqlite", [mrow(conv(16), 0.25, "2026-03-01T00:00:00+00:00")])
    before = dump(c)
    # A and B are merged first (rows written in the transaction), then `other` conflicts with A: midway.
    result = invoke("merge", a, b, other, "--into", c, "--on-conflict", "fail")
    line = one_error_line(result)
    assert conv(16).key in line and HOST_A in line and "tflite" in line and TFLITE.options in line
    assert str(a) in line and str(other) in line
    assert dump(c) == before
    with pytest.raises(MergeConflict):
        merge_luts([a, other], tmp_path / "new.sqlite", on_conflict="fail")
    assert sorted(p.name for p in tmp_path.iterdir()) == ["A.sqlite", "B.sqlite", "C.sqlite", "other-farm.sqlite"]


def test_a_failure_midway_leaves_c_unchanged(two_hosts, tmp_path):
    """B's last table refers to a layer it does not hold (a hand-edited file, foreign keys off):
    the destination refuses the row after A's and B's other rows were written; all is rolled back."""
    a, b = two_hosts
    conn = sqlite3.connect(b)
    conn.execute("INSERT INTO space_layers (space, layer_key) VALUES ('space-b', 'conv|no-such-layer')")
    conn.commit()
    conn.close()
    c = make_lut(tmp_path / "C.sqlite", [mrow(conv(64), 0.9, "2025-12-01T00:00:00+00:00")])
    before = dump(c)
    line = one_error_line(invoke("merge", a, b, "--into", c))
    assert str(b) in line and str(c) in line and "FOREIGN KEY" in line
    assert dump(c) == before
    with pytest.raises(LutError, match="FOREIGN KEY"):
        merge_luts([a, b], tmp_path / "new.sqlite")
    assert not (tmp_path / "new.sqlite").exists()
    assert not [p for p in tmp_path.iterdir() if "new.sqlite" in p.name]  # no temporary file left


# --- bad inputs: one line, before any work ----------------------------------------------------

def test_schema_version_mismatch_is_one_line_naming_file_and_versions(two_hosts, tmp_path):
    a, b = two_hosts
    conn = sqlite3.connect(b)
    conn.execute("UPDATE meta SET value = ? WHERE name = 'schema_version'", [str(SCHEMA_VERSION + 1)])
    conn.commit()
    conn.close()
    c = tmp_path / "C.sqlite"
    line = one_error_line(invoke("merge", a, b, "--into", c))
    assert str(b) in line and f"schema version {SCHEMA_VERSION + 1}" in line and f"({SCHEMA_VERSION})" in line
    assert not c.exists()


@pytest.mark.parametrize("case", ["not-sqlite", "missing", "into-is-input", "twice"])
def test_bad_files_are_one_line(two_hosts, tmp_path, case):
    a, b = two_hosts
    c = tmp_path / "C.sqlite"
    bad = tmp_path / "notes.txt"
    bad.write_text("not a LUT\n")
    args = {"not-sqlite": (a, bad, "--into", c), "missing": (a, tmp_path / "nope.sqlite", "--into", c),
            "into-is-input": (a, b, "--into", a), "twice": (a, a, "--into", c)}[case]
    before = dump(a)
    line = one_error_line(invoke("merge", *args))
    named = {"not-sqlite": bad, "missing": tmp_path / "nope.sqlite", "into-is-input": a, "twice": a}[case]
    assert str(named) in line
    assert not c.exists() and dump(a) == before


# --- the merged LUT in use --------------------------------------------------------------------

def test_show_lists_both_hosts_of_the_merged_lut(two_hosts, tmp_path):
    a, b = two_hosts
    c = tmp_path / "C.sqlite"
    result = invoke("merge", a, b, "--into", c)
    assert result.exit_code == 0 and "created" in result.output and "4 rows added" in result.output
    shown = invoke("show", "--db", c)
    assert shown.exit_code == 0, shown.output
    for text in (HOST_A, HOST_B, "Xeon VM", "EPYC VM", "space-a", "space-b", "onnx", "tflite"):
        assert text in shown.output


def test_predictor_on_the_merged_lut_predicts_what_it_did_on_the_source(tmp_path):
    space = get_space("mbv3-tiny")
    source = synth_lut(tmp_path / "host.sqlite")
    other = make_lut(tmp_path / "farm.sqlite", [mrow(cfg, 9.9, "2026-02-01T00:00:00+00:00", device=HOST_B)
                                                for cfg in sorted(space.all_layer_configs(), key=lambda c: c.key)[:20]])
    merged = tmp_path / "merged.sqlite"
    merge_luts([source, other], merged, on_conflict="fail")
    options = RuntimeSpec("tflite").options
    before = LatencyPredictor(space, LatencyTable.load(source, DEVICE, "tflite", options))
    after = LatencyPredictor(space, LatencyTable.load(merged, DEVICE, "tflite", options))
    rng = random.Random(0)
    configs = [space.max_config(), space.min_config()] + [space.random_config(rng) for _ in range(5)]
    assert [after.predict(cfg) for cfg in configs] == [before.predict(cfg) for cfg in configs]
    assert after.overhead_ms == before.overhead_ms > 0
