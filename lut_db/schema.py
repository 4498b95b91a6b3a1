"""Open or create a LUT file: the SQLite schema and its migrations.

One file holds every device, runtime and search space (a "slice" is one device + runtime +
runtime options). The schema evolves only through named migration functions, recorded in
the `migrations` table by `sqlite_utils.Migrations`; `meta.schema_version` is the number a
reader checks first, so an old netadaptv2 refuses a file written by a newer one instead of
misreading it. All latencies are milliseconds; timestamps are ISO-8601 UTC strings.
"""
from __future__ import annotations

import dataclasses
import sqlite3
from pathlib import Path

from sqlite_utils import Database, Migrations

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
    """Open a LUT file, creating it (or migrating it to `SCHEMA_VERSION`) as needed.

    `create=False` is for readers: a missing or empty file is an error instead of a new LUT.
    Raises `NotALutDatabase` for a non-SQLite file or someone else's SQLite database (never
    adds our tables to it), `SchemaTooNew` for a file from a newer netadaptv2. The
    connection has foreign keys on, WAL mode (a reader is not blocked by the one writer)
    and a busy timeout.
    """
    path = Path(path)
    _check_file(path, create)
    try:
        db = Database(path)
    except sqlite3.Error as exc:
        raise LutError(f"{path}: cannot open ({exc})") from exc
    try:
        db.execute("PRAGMA foreign_keys = ON")
        db.execute("PRAGMA busy_timeout = 10000")  # ms
        try:
            _check_ours(db, path, create)
        except sqlite3.DatabaseError as exc:  # e.g. a corrupt file with a valid header
            raise NotALutDatabase(f"{path}: not a readable SQLite database ({exc})") from exc
        if MIGRATIONS.pending(db):
            db.enable_wal()  # persistent in the file; set once, outside any transaction
            with db.atomic():  # all migrations or none: never a half-created LUT
                MIGRATIONS.apply(db)
    except BaseException:
        db.close()
        raise
    return db


def schema_version(db: Database) -> int | None:
    """`meta.schema_version` of an open db, None when the db has no such row."""
    if not db["meta"].exists():
        return None
    row = db.execute("SELECT value FROM meta WHERE name = 'schema_version'").fetchone()
    return int(row[0]) if row else None


def _check_file(path: Path, create: bool) -> None:
    if not path.exists():
        if not create:
            raise LutError(f"{path}: no such LUT file; build one with `lutbuild build`")
        return
    if path.is_dir():
        raise NotALutDatabase(f"{path}: is a directory, expected a netadaptv2 LUT (SQLite) file")
    with path.open("rb") as f:
        head = f.read(len(_SQLITE_MAGIC))
    if head and head != _SQLITE_MAGIC:
        raise NotALutDatabase(f"{path}: not an SQLite file, expected a netadaptv2 LUT")


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
    found = int(meta["schema_version"])
    if found > SCHEMA_VERSION:
        raise SchemaTooNew(str(path), found, SCHEMA_VERSION)
