"""lut_db: schema, transactional writes, upsert rules, fast reads, interpolation, coverage."""
from __future__ import annotations

import sqlite3

import pytest

from lut_db import (
    DEFAULT_RUNTIME_OPTIONS, OVERHEAD, SCHEMA_VERSION, DeviceRecord, LatencyTable, LayerConfig,
    LutWriter, MeasurementRow, MissingLatencyError, NotALutDatabase, RuntimeSpec, SchemaTooNew,
    UnknownSlice, devices, format_table, interpolate_family, interpolate_layers, missing_keys,
    open_lut, schema_version, slices, space_coverage,
)
from lut_db.errors import LutError

TFLITE = RuntimeSpec("tflite", version="2.16.1")
DEVICE = "android:pixel7:abc"


def conv(cin: int, cout: int, hw: int = 28) -> LayerConfig:
    return LayerConfig("conv", hw, hw, cin, cout, kernel=1, act="relu")


def row(cfg: LayerConfig, ms: float, source: str = "measured", device: str = DEVICE,
        runtime: RuntimeSpec = TFLITE) -> MeasurementRow:
    return MeasurementRow(cfg, device, runtime, n=50 if source == "measured" else 0, median_ms=ms,
                          mean_ms=ms, p10_ms=ms * 0.9, p90_ms=ms * 1.1, std_ms=ms * 0.02, source=source,
                          plan="full" if source == "measured" else "sparse", warmup_runs=10,
                          state_before={"temperatures_c": {"cpu": 40.0}}, state_after={"throttled": False})


@pytest.fixture
def lut_path(tmp_path):
    return tmp_path / "lut.sqlite"


@pytest.fixture
def writer(lut_path):
    db = open_lut(lut_path)
    yield LutWriter(db)
    db.close()


# --- schema ---------------------------------------------------------------------------------

def test_new_lut_has_tables_wal_and_records_schema_version(lut_path):
    db = open_lut(lut_path)
    assert {"layers", "devices", "measurements", "calibration", "space_layers", "meta", "migrations"} <= set(
        db.table_names())
    assert schema_version(db) == SCHEMA_VERSION
    assert [r["name"] for r in db["migrations"].rows] == ["m001_initial"]
    assert db.journal_mode == "wal"
    assert db.execute("PRAGMA foreign_keys").fetchone()[0] == 1
    db.close()


def test_reopening_is_idempotent(lut_path, writer):
    writer.write([row(conv(8, 8), 1.0)])
    writer.db.close()
    for create in (True, False):
        db = open_lut(lut_path, create=create)
        assert db["measurements"].count == 1
        assert db["migrations"].count == 1
        db.close()


def test_newer_schema_is_refused(lut_path):
    db = open_lut(lut_path)
    db["meta"].upsert({"name": "schema_version", "value": "7"}, pk="name")
    db.close()
    with pytest.raises(SchemaTooNew) as err:
        open_lut(lut_path)
    assert str(err.value) == (f"{lut_path}: schema version 7 is newer than this netadaptv2 supports "
                              f"({SCHEMA_VERSION}); upgrade netadaptv2")


def test_non_sqlite_file_is_refused_with_its_name(tmp_path):
    path = tmp_path / "notes.sqlite"
    path.write_text("this is not a database at all\n" * 10)
    for create in (True, False):
        with pytest.raises(NotALutDatabase, match="notes.sqlite: not an SQLite file"):
            open_lut(path, create=create)
    assert path.read_text().startswith("this is not")  # untouched


def test_foreign_sqlite_db_is_refused_and_left_untouched(tmp_path):
    path = tmp_path / "other.db"
    conn = sqlite3.connect(path)
    conn.execute("CREATE TABLE users (id INTEGER PRIMARY KEY, name TEXT)")
    conn.commit()
    conn.close()
    for create in (True, False):
        with pytest.raises(NotALutDatabase, match=r"other\.db: SQLite but not a netadaptv2 LUT.*users"):
            open_lut(path, create=create)
    conn = sqlite3.connect(path)
    assert [r[0] for r in conn.execute("SELECT name FROM sqlite_master WHERE type='table'")] == ["users"]
    conn.close()


def test_foreign_db_with_its_own_meta_table_is_refused(tmp_path):
    path = tmp_path / "other.db"
    conn = sqlite3.connect(path)
    conn.execute("CREATE TABLE meta (k TEXT, v TEXT)")
    conn.commit()
    conn.close()
    with pytest.raises(NotALutDatabase, match="other.db"):
        open_lut(path)


def test_reading_a_missing_or_empty_file_is_an_error(tmp_path):
    with pytest.raises(LutError, match="nope.sqlite: no such LUT file"):
        open_lut(tmp_path / "nope.sqlite", create=False)
    assert not (tmp_path / "nope.sqlite").exists()
    (tmp_path / "empty.sqlite").touch()
    with pytest.raises(NotALutDatabase, match="empty.sqlite"):
        open_lut(tmp_path / "empty.sqlite", create=False)


# --- writer ---------------------------------------------------------------------------------

def test_write_stores_layer_device_and_statistics(writer):
    cfg = conv(16, 24)
    assert writer.write([row(cfg, 2.5)]) == 1
    db = writer.db
    assert db["layers"].get(cfg.key)["cout"] == 24
    assert db["devices"].get(DEVICE)["first_seen"]
    m = next(db["measurements"].rows)
    assert (m["median_ms"], m["runtime_version"], m["runtime_options"], m["n"]) == (
        2.5, "2.16.1", "threads=1;delegate=xnnpack", 50)
    assert m["state_before"] == '{"temperatures_c": {"cpu": 40.0}}' and m["throttled"] == 0


def test_failure_in_the_middle_of_write_leaves_no_rows(writer):
    def rows_then_crash():
        yield row(conv(8, 8), 1.0)
        yield row(conv(8, 16), 2.0)
        # mid-call: both rows are written inside the open transaction ...
        assert writer.db.execute("SELECT COUNT(*) FROM measurements").fetchone()[0] == 2
        raise KeyboardInterrupt("killed")  # ... then the process is interrupted

    with pytest.raises(KeyboardInterrupt):
        writer.write(rows_then_crash())
    assert writer.db["measurements"].count == 0
    assert writer.db["layers"].count == 0
    assert writer.db["devices"].count == 0


def test_remeasuring_replaces_the_row(writer):
    cfg = conv(8, 8)
    writer.write([row(cfg, 1.0)])
    writer.write([row(cfg, 1.2)])
    assert [r["median_ms"] for r in writer.db["measurements"].rows] == [1.2]


def test_interpolated_never_overwrites_measured_but_measured_overwrites_interpolated(writer):
    a, b = conv(8, 8), conv(8, 16)
    writer.write([row(a, 1.0), row(b, 5.0, source="interpolated")])
    stored = writer.write([row(a, 9.0, source="interpolated"), row(b, 2.0)])
    assert stored == 1
    got = {r["layer_key"]: (r["median_ms"], r["source"], r["plan"]) for r in writer.db["measurements"].rows}
    assert got == {a.key: (1.0, "measured", "full"), b.key: (2.0, "measured", "full")}
    assert writer.db["measurements"].count == 2


def test_slices_are_separate_rows(writer):
    cfg = conv(8, 8)
    two_threads = RuntimeSpec("tflite", version="2.16.1", threads=2)
    writer.write([row(cfg, 1.0), row(cfg, 0.6, runtime=two_threads), row(cfg, 3.0, device="local:host")])
    assert writer.db["measurements"].count == 3
    assert writer.measured_keys(DEVICE, "tflite", DEFAULT_RUNTIME_OPTIONS) == {cfg.key}
    assert writer.measured_keys(DEVICE, "onnx", DEFAULT_RUNTIME_OPTIONS) == set()


def test_measured_keys_skip_interpolated_rows(writer):
    writer.write([row(conv(8, 8), 1.0), row(conv(8, 16), 2.0, source="interpolated")])
    assert writer.measured_keys(DEVICE, "tflite", DEFAULT_RUNTIME_OPTIONS) == {conv(8, 8).key}


def test_register_device_keeps_first_seen(writer):
    writer.register_device(DeviceRecord(DEVICE, model="Pixel 7", first_seen="2026-01-01T00:00:00+00:00"))
    writer.register_device(DeviceRecord(DEVICE, model="Pixel 7", soc="Tensor G2", cpu_core="7"))
    (dev,) = devices(writer.db)
    assert dev == DeviceRecord(DEVICE, model="Pixel 7", soc="Tensor G2", cpu_core="7",
                               first_seen="2026-01-01T00:00:00+00:00")


def test_measurement_row_rejects_bad_values():
    with pytest.raises(ValueError, match="source"):
        row(conv(8, 8), 1.0, source="guessed")
    with pytest.raises(ValueError, match="median_ms"):
        row(conv(8, 8), float("nan"))
    with pytest.raises(ValueError, match="mean_ms"):
        MeasurementRow(conv(8, 8), DEVICE, TFLITE, n=50, median_ms=1.0)


def test_interpolated_rows_need_only_a_median(writer):
    writer.write([MeasurementRow(conv(8, 8), DEVICE, TFLITE, n=0, median_ms=1.5, source="interpolated",
                                 plan="sparse")])
    m = next(writer.db["measurements"].rows)
    assert (m["median_ms"], m["std_ms"], m["source"]) == (1.5, None, "interpolated")


# --- reader ---------------------------------------------------------------------------------

def test_latency_table_loads_a_slice_and_predicts_sums(lut_path, writer):
    layers = [conv(8, 8), conv(8, 16), conv(16, 16)]
    writer.write([row(cfg, ms) for cfg, ms in zip(layers, (1.0, 2.0, 4.0))])
    writer.write([row(conv(8, 8), 50.0, device="other")])  # another slice must not leak in
    writer.set_calibration(DEVICE, "tflite", DEFAULT_RUNTIME_OPTIONS, OVERHEAD, 0.25, detail={"runs": 100})
    writer.db.close()

    table = LatencyTable.load(lut_path, DEVICE, "tflite")
    assert len(table) == 3 and table.runtime_versions == {"2.16.1"}
    assert table.latency(conv(8, 16)) == 2.0
    assert table.predict(layers) == pytest.approx(7.25)  # layers + overhead once
    assert table.predict(iter(layers + layers)) == pytest.approx(14.25)
    assert table.predict(tuple(layers)) == pytest.approx(7.25)
    assert table.has(conv(8, 8)) and not table.has(conv(32, 32))
    assert table.missing([conv(8, 8), conv(32, 32), conv(32, 32)]) == [conv(32, 32)]


def test_missing_key_raises_naming_the_key_and_slice(lut_path, writer):
    writer.write([row(conv(8, 8), 1.0)])
    writer.db.close()
    table = LatencyTable.load(lut_path, DEVICE, "tflite")
    with pytest.raises(MissingLatencyError) as err:
        table.predict([conv(8, 8), conv(64, 64)])
    msg = str(err.value)
    assert conv(64, 64).key in msg and DEVICE in msg and "tflite" in msg and "lutbuild build" in msg
    assert "\n" not in msg
    with pytest.raises(MissingLatencyError):
        table.predict([conv(64, 64)])


def test_unknown_slice_lists_what_is_there(lut_path, writer):
    writer.write([row(conv(8, 8), 1.0)])
    writer.db.close()
    with pytest.raises(UnknownSlice, match=rf"no measurements for device 'pixel9'.*{DEVICE} tflite"):
        LatencyTable.load(lut_path, "pixel9", "tflite")
    assert [(s.device_id, s.runtime_version, s.rows) for s in LatencyTable.slices(lut_path)] == [
        (DEVICE, "2.16.1", 1)]


def test_interpolate_mode_estimates_and_records_missing_keys(lut_path, writer):
    grid = (8, 16, 32)
    writer.write([row(conv(ci, co), 0.1 + 0.001 * ci * co) for ci in grid for co in grid])
    writer.db.close()
    table = LatencyTable.load(lut_path, DEVICE, "tflite", interpolate=True)
    assert table.latency(conv(24, 12)) == pytest.approx(0.1 + 0.001 * 24 * 12)
    assert table.interpolated_keys == {conv(24, 12).key}
    assert table.source(conv(24, 12)) == "interpolated" and table.source(conv(8, 8)) == "measured"
    with pytest.raises(MissingLatencyError, match="too few to interpolate"):
        table.latency(conv(8, 8, hw=14))  # no neighbour of its family


def test_predict_handles_50_layer_networks(lut_path, writer):
    net = [conv(8 * (1 + i % 5), 8 * (1 + (i + 1) % 5), hw=7 * (1 + i % 4)) for i in range(50)]
    writer.write([row(cfg, 0.01 * (i + 1)) for i, cfg in enumerate(dict.fromkeys(net))])
    writer.db.close()
    table = LatencyTable.load(lut_path, DEVICE, "tflite")
    expected = sum(table.latency(cfg) for cfg in net)
    for _ in range(2000):  # sanity only; timing targets live in benchmarks/
        assert table.predict(net) == pytest.approx(expected)
    assert table.predict(iter(net)) == pytest.approx(expected)


# --- interpolation --------------------------------------------------------------------------

def test_bilinear_function_is_recovered_exactly_on_a_sparse_grid():
    def f(ci, co):
        return 0.3 + 0.01 * ci + 0.02 * co + 0.0005 * ci * co

    grid = (16, 32, 64, 128)
    measured = {(ci, co): f(ci, co) for ci in grid for co in grid}
    wanted = [(ci, co) for ci in range(16, 129, 8) for co in range(16, 129, 8)]
    got = interpolate_family(measured, wanted)
    assert set(got) == set(wanted)
    for point, ms in got.items():
        assert ms == pytest.approx(f(*point), rel=1e-12)


def test_mac_linear_latency_is_extrapolated_closely():
    def f(ci, co):
        return 0.05 + 2e-6 * ci * co * 28 * 28

    measured = {(ci, co): f(ci, co) for ci in (16, 32, 48) for co in (16, 32, 48)}
    wanted = [(64, 96), (8, 8), (40, 96)]  # all outside the grid
    got = interpolate_family(measured, wanted)
    for point in wanted:
        assert got[point] == pytest.approx(f(*point), rel=1e-6)


def test_one_dimensional_families_interpolate_along_the_diagonal():
    dw = {(c, c): 0.1 + 0.01 * c for c in (16, 64, 256)}
    got = interpolate_family(dw, [(32, 32), (128, 128), (512, 512)], macs=lambda ci, co: float(co))
    assert got == pytest.approx({(32, 32): 0.42, (128, 128): 1.38, (512, 512): 5.22})


def test_a_single_point_family_cannot_be_estimated():
    assert interpolate_family({(8, 8): 1.0}, [(8, 8), (16, 16)]) == {(8, 8): 1.0}


def test_interpolate_layers_uses_each_layers_family():
    dw = lambda c, hw=28: LayerConfig("dwconv", hw, hw, c, c, kernel=3, groups=c, act="relu")  # noqa: E731
    measured = {dw(c): 0.01 * c for c in (16, 32, 64)}
    measured[dw(16, hw=14)] = 99.0  # other family (resolution): must not be mixed in
    got = interpolate_layers(measured, [dw(24), dw(128), dw(24, hw=14)])
    assert got[dw(24)] == pytest.approx(0.24)
    assert got[dw(128)] == pytest.approx(1.28)  # MACs of a dwconv grow with c: linear
    assert dw(24, hw=14) not in got  # one point only


# --- coverage -------------------------------------------------------------------------------

def test_coverage_counts_needed_measured_interpolated_missing(writer):
    space = [conv(8, 8), conv(8, 16), conv(16, 16), conv(16, 32)]
    assert writer.register_space("mbv3", space + space[:1]) == 4
    assert space_coverage(writer.db)[0].device_id == ""  # nothing measured yet: needed only
    writer.write([row(space[0], 1.0), row(space[1], 2.0, source="interpolated"), row(conv(64, 64), 3.0)])
    writer.write([row(space[0], 1.1, device="local:host")])

    got = {(c.space, c.device_id): c for c in space_coverage(writer.db)}
    pixel, host = got[("mbv3", DEVICE)], got[("mbv3", "local:host")]
    assert (pixel.needed, pixel.measured, pixel.interpolated, pixel.missing) == (4, 1, 1, 2)
    assert (host.needed, host.measured, host.interpolated, host.missing) == (4, 1, 0, 3)
    assert missing_keys(writer.db, "mbv3", DEVICE, "tflite", DEFAULT_RUNTIME_OPTIONS) == sorted(
        [space[2].key, space[3].key])

    (pixel_slice, host_slice) = sorted(slices(writer.db), key=lambda s: s.device_id != DEVICE)
    assert (pixel_slice.rows, pixel_slice.measured, pixel_slice.interpolated) == (3, 2, 1)
    text = format_table(space_coverage(writer.db))
    assert text.splitlines()[0].split() == ["space", "device_id", "runtime", "runtime_options", "needed",
                                            "measured", "interpolated", "missing"]
    assert len(text.splitlines()) == 4


def test_register_space_replaces_the_previous_key_set(writer):
    writer.register_space("fastdepth", [conv(8, 8), conv(8, 16)])
    writer.register_space("fastdepth", [conv(8, 8)])
    assert [r["layer_key"] for r in writer.db["space_layers"].rows] == [conv(8, 8).key]


def test_layer_config_key_is_cached_and_survives_pickle_and_replace():
    import dataclasses
    import pickle

    cfg = conv(16, 24)
    assert pickle.loads(pickle.dumps(cfg)).key == cfg.key
    wider = dataclasses.replace(cfg, cout=32)
    assert wider.key == "conv:28x28:16->32:k1s1g1:relu:r0:float32"
    assert {cfg: 1}[LayerConfig.from_key(cfg.key)] == 1 and cfg.to_dict() == LayerConfig.from_key(cfg.key).to_dict()
