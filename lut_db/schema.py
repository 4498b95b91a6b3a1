"""Open or create a LUT file: the SQLite schema and its migrations.

One file holds every device, runtime and search space (a "slice" is one device + runtime +
runtime options). The schema evolves only through named migration functions, recorded in
the `migrations` table by `sqlite_utils.Migrations`; `meta.schema_version` is the number a
reader checks first, so an old netadaptv2 refuses a file written by a newer one instead of
misreading it. All latencies are milliseconds; timestamps are ISO-8601 UTC strings.
"""
from __future__ import annotations

import dataclasses
from pathlib import Path

from sqlite_utils import Database, Migrations

from .connect import check_regular_file, connect_reader, connect_writer, enable_wal, lut_errors
from .errors import LutError, NotALutDatabase, SchemaTooNew
from .layer_key import LayerConfig

#: Highest schema version this code reads and writes; each migration sets its own number.
SCHEMA_VERSION = 1
#: Identifies our files in `meta.application` (a foreign db may have a `meta` table too).
APPLICATION = "netadaptv2-lut"
SOURCES = ("measured", "interpolated")

_SQLITE_MAGIC = b"SQLite format 3\x00"


class _LutMigrations(Migrations):
    migrations_table = "migrations"  # sqlite-utils' default is `_sqlite_migrations`


MIGRATIONS = _LutMigrations("netadaptv2_lut")


def _set_schema_version(db: Database, version: int) -> None:
    db["meta"].upsert({"name": "schema_version", "value": str(version)}, pk="name")


@MIGRATIONS()
def m001_initial(db: Database) -> None:
    """Tables of version 1: layers, devices, measurements, calibration, space_layers."""
    db["meta"].create({"name": str, "value": str}, pk="name", not_null=["value"])
    db["meta"].insert({"name": "application", "value": APPLICATION})

    layer_columns = {f.name: f.type for f in dataclasses.fields(LayerConfig)}
    types = {"str": str, "int": int}
    db["layers"].create(
        {"key": str, **{name: types[t] for name, t in layer_columns.items()}},
        pk="key", not_null=list(layer_columns),
    )
    db["devices"].create(
        {"device_id": str, "model": str, "soc": str, "abi": str, "os_version": str,
         "cpu_core": str, "first_seen": str},
        pk="device_id", not_null=["first_seen"],
    )
    db["measurements"].create(
        {
            "id": int, "layer_key": str, "device_id": str,
            "runtime": str, "runtime_version": str, "runtime_options": str,
            "n": int, "median_ms": float, "mean_ms": float, "p10_ms": float, "p90_ms": float,
            "std_ms": float,
            "source": str, "plan": str, "measured_at": str, "warmup_runs": int,
            "state_before": str, "state_after": str, "throttled": bool,
        },
        pk="id",
        foreign_keys=[("layer_key", "layers", "key"), ("device_id", "devices", "device_id")],
        not_null=["layer_key", "device_id", "runtime", "runtime_version", "runtime_options", "n",
                  "median_ms", "source", "plan", "measured_at", "throttled"],
    )
    # The upsert target of `LutWriter.write` and the coverage join (layer_key first).
    db["measurements"].create_index(
        ["layer_key", "device_id", "runtime", "runtime_options"], unique=True,
        index_name="measurements_slot",
    )
    # `LatencyTable.load` reads one slice.
    db["measurements"].create_index(
        ["device_id", "runtime", "runtime_options", "source"], index_name="measurements_slice",
    )
    db["calibration"].create(
        {"device_id": str, "runtime": str, "runtime_options": str, "name": str,
         "value_ms": float, "measured_at": str, "detail": str},
        pk=("device_id", "runtime", "runtime_options", "name"),
        foreign_keys=[("device_id", "devices", "device_id")],
        not_null=["value_ms", "measured_at"],
    )
    db["space_layers"].create(
        {"space": str, "layer_key": str}, pk=("space", "layer_key"),
        foreign_keys=[("layer_key", "layers", "key")],
    )
    _set_schema_version(db, 1)


def open_lut(path: str | Path, create: bool = True) -> Database:
    """`open_lut_for_writing(path)` (`create=True`) or `open_lut_for_reading(path)` (`create=False`)."""
    return open_lut_for_writing(path) if create else open_lut_for_reading(path)


def open_lut_for_reading(path: str | Path) -> Database:
    """Open an existing LUT file read-only (`connect.connect_reader`: ``mode=ro``, no files left behind).

    Raises `LutError` for a missing file or one that is not a regular file, `NotALutDatabase`
    for a non-SQLite, damaged or foreign file (never adds our tables to it), `SchemaTooNew`
    for a file from a newer netadaptv2. Damage anywhere in the file is found here
    (``PRAGMA quick_check``: ~0.5 s for a 30 MB LUT of 57k rows), not halfway through a command.
    """
    path = Path(path)
    check_regular_file(path, create=False)
    _check_header(path)
    db = connect_reader(path)
    try:
        with lut_errors(path):
            db.execute("PRAGMA foreign_keys = ON")
            _check_ours(db, path, create=False)
            _check_intact(db, path)
            if MIGRATIONS.pending(db):
                raise LutError(f"{path}: written by an older netadaptv2 (schema {schema_version(db)}); "
                               "upgrade it once with `lutbuild build ... --db` on it")
    except BaseException:
        db.close()
        raise
    return db


def open_lut_for_writing(path: str | Path) -> Database:
    """Open a LUT file for writing, creating it (or migrating it to `SCHEMA_VERSION`) as needed.

    Besides the reader's checks (`open_lut_for_reading`), refuses a read-only file or
    directory and a file another process keeps write-locked, before any work. The
    connection has foreign keys on, WAL mode (a reader is not blocked by the one writer),
    write transactions that begin IMMEDIATE and a busy timeout (`lut_db.connect`), so two
    builds on one file both finish.
    """
    path = Path(path)
    if check_regular_file(path, create=True):
        _check_header(path)
    db, existed = connect_writer(path)
    try:
        with lut_errors(path):
            db.execute("PRAGMA foreign_keys = ON")
            _check_ours(db, path, create=True)
            if existed and "meta" in db.table_names():
                _check_intact(db, path)
            if MIGRATIONS.pending(db):
                enable_wal(db)  # persistent in the file; set once, outside any transaction
                with db.atomic():  # IMMEDIATE: a second build waits, then finds nothing pending
                    MIGRATIONS.apply(db)  # all migrations or none: never a half-created LUT
    except BaseException:
        db.close()
        raise
    return db


def schema_version(db: Database) -> int | None:
    """`meta.schema_version` of an open db, None when the db has no such row."""
    if not db["meta"].exists():
        return None
    row = db.execute("SELECT value FROM meta WHERE name = 'schema_version'").fetchone()
    return None if row is None else _version_number(row[0], getattr(db, "path", "LUT"))


def _version_number(value, path) -> int:
    try:
        return int(value)
    except (TypeError, ValueError):
        raise NotALutDatabase(f"{path}: meta.schema_version is {value!r}, expected an integer "
                              "(the file was edited or damaged)") from None


def _check_header(path: Path) -> None:
    with path.open("rb") as f:  # a regular file (connect.check_regular_file): never blocks
        head = f.read(len(_SQLITE_MAGIC))
    if head and head != _SQLITE_MAGIC:
        raise NotALutDatabase(f"{path}: not an SQLite file, expected a netadaptv2 LUT")


def _check_intact(db: Database, path: Path) -> None:
    problems = [row[0] for row in db.execute("PRAGMA quick_check(3)").fetchall()]
    if problems != ["ok"]:
        raise NotALutDatabase(f"{path}: the database is damaged ({'; '.join(map(str, problems))[:200]}); "
                              "restore it from a copy, or build a new LUT")


def _check_ours(db: Database, path: Path, create: bool) -> None:
    tables = set(db.table_names())
    if "meta" not in tables:
        # Only an empty file (or one holding just the migrations bookkeeping) may become a LUT.
        if not create or tables - {MIGRATIONS.migrations_table}:
            what = f"tables: {', '.join(sorted(tables))}" if tables else "no tables"
            raise NotALutDatabase(f"{path}: SQLite but not a netadaptv2 LUT ({what}; no 'meta' table)")
        return
    ours = {"name", "value"} <= set(db["meta"].columns_dict)
    meta = dict(db.execute("SELECT name, value FROM meta").fetchall()) if ours else {}
    if meta.get("application") != APPLICATION or "schema_version" not in meta:
        raise NotALutDatabase(f"{path}: SQLite but not a netadaptv2 LUT (its 'meta' table is not ours)")
    found = _version_number(meta["schema_version"], path)
    if found > SCHEMA_VERSION:
        raise SchemaTooNew(str(path), found, SCHEMA_VERSION)
