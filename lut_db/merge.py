"""Combine LUT files filled on different hosts or phone farms into one (`lutbuild merge`).

Every input is opened read-only through `schema.open_lut_for_reading` (regular file, SQLite,
ours, intact, same schema version) and read before the destination is touched, so a bad
input is one line and nothing else happens. The destination is then written in ONE
transaction: a failure anywhere (a conflict under ``fail``, a row the destination refuses,
disk full, a kill) leaves it exactly as it was. A destination that does not exist yet is
built in a temporary file next to it and linked into place only when complete, so a failed
or killed merge leaves no file at all.

Rows are copied whole (every column but the row id), so each keeps its provenance: device,
runtime, runtime version and options, source (measured / interpolated), plan, timestamp,
device state. Two rows of the same layer key and slice (device + runtime + options) are
resolved by the stated policy (`CONFLICT_POLICIES`): ``prefer-measured`` keeps a measured
row over an interpolated one, then the newer ``measured_at``, and on a tie the row already
there (the destination's, then the inputs' in the order given); ``fail`` refuses the whole
merge at the first pair that differs, naming the key, the slice and both files. Identical
rows are never a conflict. Calibration constants (per slice and name) follow the same
policy by ``measured_at``; devices are united (empty fields filled in, the earliest
``first_seen`` kept); a space's key set is the union of the files' sets.

Schema version 1 has no run or provenance table besides these, and nothing refers to a
measurement's id, so the destination numbers copied rows itself. A table this module does
not know (a newer migration, a hand-added table) is refused, never dropped silently.
"""
from __future__ import annotations

import contextlib
import os
import sqlite3
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path

from sqlite_utils import Database

from .connect import cause, lut_errors
from .errors import LutError
from .schema import MIGRATIONS, open_lut_for_reading, open_lut_for_writing

PREFER_MEASURED = "prefer-measured"
FAIL = "fail"
#: How rows of the same key and slice from two files are resolved (see the module doc).
CONFLICT_POLICIES = (PREFER_MEASURED, FAIL)

#: Tables a merge combines, parents before children (foreign keys hold at every insert).
MERGED_TABLES = ("layers", "devices", "measurements", "calibration", "space_layers")
#: Tables every LUT creates for itself (written by the migrations, never copied).
_OWN_TABLES = ("meta", MIGRATIONS.migrations_table)
#: The slot of a measurement: one layer key on one slice (the `measurements_slot` unique index).
_SLOT = ("layer_key", "device_id", "runtime", "runtime_options")
_CALIBRATION_SLOT = ("device_id", "runtime", "runtime_options", "name")


class MergeConflict(LutError):
    """`--on-conflict fail` met two different rows for one key (or constant) and slice."""


@dataclass(frozen=True)
class MergeReport:
    """What one merge did; counts of rows."""

    into: str
    sources: tuple[str, ...]
    created: bool  # the destination did not exist before
    added: int  # measurement rows new in the destination
    replaced: int  # rows replaced by a better one (measured over interpolated, then newer)
    kept: int  # input rows not taken: the slot already held an identical, better or equally good row
    devices_added: int
    calibration_set: int  # calibration constants added or replaced

    def summary(self) -> str:
        verb = "created" if self.created else "merged into"
        return (f"{verb} {self.into} from {len(self.sources)} LUT(s): {self.added} rows added, "
                f"{self.replaced} replaced by a measured or newer row, {self.kept} kept as they were; "
                f"{self.devices_added} devices added, {self.calibration_set} calibration constants set")


@dataclass(frozen=True)
class _Table:
    columns: tuple[str, ...]
    rows: tuple[tuple, ...]

    def dicts(self) -> Iterator[dict]:
        return (dict(zip(self.columns, row)) for row in self.rows)


@dataclass(frozen=True)
class _Contents:
    """Every merged table of one input file, read once."""

    path: Path
    tables: dict[str, _Table]


def merge_luts(sources: Sequence[str | Path], into: str | Path,
               on_conflict: str = PREFER_MEASURED) -> MergeReport:
    """Merge the LUT files `sources` into `into` (created when absent) in one transaction.

    Raises `LutError` (one line) for a bad input or destination before any work, and
    `MergeConflict` under ``on_conflict="fail"``; either way the destination is unchanged.
    """
    if on_conflict not in CONFLICT_POLICIES:
        raise LutError(f"--on-conflict: expected one of {', '.join(CONFLICT_POLICIES)}, got {on_conflict!r}")
    sources = [Path(s) for s in sources]
    into = Path(into)
    _check_paths(sources, into)
    contents = [_read(path) for path in sources]  # every input checked and read before `into` is touched
    if into.exists():
        db = open_lut_for_writing(into)
        try:
            return _merge(db, contents, into, on_conflict, created=False)
        finally:
            db.close()
    return _merge_into_new_file(contents, into, on_conflict)


def _check_paths(sources: list[Path], into: Path) -> None:
    if not sources:
        raise LutError("lutbuild merge: name at least one LUT file to merge")
    seen: dict[Path, Path] = {}
    for path in sources:
        real = path.resolve()
        if real in seen:
            raise LutError(f"{path}: named twice (as {seen[real]}); name each LUT once")
        seen[real] = path
    if into.resolve() in seen:
        raise LutError(f"{into}: the destination is also an input; merge into another file")


def _read(path: Path) -> _Contents:
    """One input's merged tables; refuses a table the merge does not know."""
    db = open_lut_for_reading(path)
    try:
        with lut_errors(path):
            unknown = sorted(set(db.table_names()) - set(MERGED_TABLES) - set(_OWN_TABLES))
            unknown = [t for t in unknown if not t.startswith("sqlite_")]
            if unknown:
                raise LutError(f"{path}: table(s) {', '.join(unknown)} unknown to `lutbuild merge` "
                               "(a hand-added table, or a newer netadaptv2); nothing was merged")
            tables = {}
            for name in MERGED_TABLES:
                columns = tuple(c for c in db[name].columns_dict if not (name == "measurements" and c == "id"))
                sql = f"SELECT {', '.join(_quote(c) for c in columns)} FROM {_quote(name)}"
                tables[name] = _Table(columns, tuple(db.execute(sql).fetchall()))
    finally:
        db.close()
    return _Contents(path, tables)


def _merge_into_new_file(contents: list[_Contents], into: Path, on_conflict: str) -> MergeReport:
    """Build the merged LUT in a temporary file next to `into`, then link it into place."""
    tmp = into.with_name(f".{into.name}.merge-{os.getpid()}.tmp")
    try:
        db = open_lut_for_writing(tmp)
        try:
            report = _merge(db, contents, into, on_conflict, created=True)
        finally:
            db.close()  # the last connection checkpoints and removes the -wal/-shm files
        try:
            os.link(tmp, into)  # fails if `into` appeared meanwhile: never overwrites another file
        except FileExistsError:
            raise LutError(f"{into}: created by another process during the merge; run the merge again "
                           "to merge into it") from None
        except OSError as exc:
            raise LutError(f"{into}: cannot create ({exc.strerror or exc})") from None
    finally:
        for leftover in (tmp, Path(f"{tmp}-wal"), Path(f"{tmp}-shm")):
            with contextlib.suppress(FileNotFoundError):
                leftover.unlink()
    return report


def _merge(db: Database, contents: list[_Contents], into: Path, on_conflict: str, created: bool) -> MergeReport:
    """Every input into the open destination `db`, all in one transaction."""
    counts = dict(added=0, replaced=0, kept=0, devices_added=0, calibration_set=0)
    with lut_errors(into), db.atomic():
        for table in MERGED_TABLES:
            columns = tuple(c for c in db[table].columns_dict if not (table == "measurements" and c == "id"))
            for content in contents:
                if content.tables[table].columns != columns:
                    found = ", ".join(content.tables[table].columns)
                    raise LutError(f"{content.path}: table {table} has columns {found}, "
                                   f"{into} has {', '.join(columns)} (a hand-edited file?); nothing was merged")
        slots = _Slots(db, into, "measurements", _SLOT)
        calibration = _Slots(db, into, "calibration", _CALIBRATION_SLOT)
        devices = {row["device_id"]: row for row in db["devices"].rows}
        for content in contents:
            with _naming(content.path, into):
                db["layers"].insert_all(content.tables["layers"].dicts(), ignore=True)  # immutable by key
                counts["devices_added"] += _merge_devices(db, devices, content)
                added, replaced, kept = _merge_measurements(db, slots, content, on_conflict)
                counts["added"] += added
                counts["replaced"] += replaced
                counts["kept"] += kept
                counts["calibration_set"] += _merge_calibration(db, calibration, content, on_conflict)
                db["space_layers"].insert_all(content.tables["space_layers"].dicts(), ignore=True)
    return MergeReport(into=str(into), sources=tuple(str(c.path) for c in contents), created=created, **counts)


@contextlib.contextmanager
def _naming(source: Path, into: Path) -> Iterator[None]:
    """A row of `source` the destination refuses (e.g. a dangling reference in a hand-edited
    file) -> one line naming both files."""
    try:
        yield
    except sqlite3.Error as exc:
        raise LutError(f"{source}: cannot merge into {into}: {cause(exc)}; nothing was merged") from exc


class _Slots:
    """The rows of one table by slot, as the merge has left them so far, and whose file each came from."""

    def __init__(self, db: Database, into: Path, table: str, slot: tuple[str, ...]) -> None:
        self.table, self.slot = table, slot
        self.columns = tuple(c for c in db[table].columns_dict if c != "id")
        sql = f"SELECT {', '.join(_quote(c) for c in self.columns)} FROM {_quote(table)}"
        self.rows: dict[tuple, tuple[dict, Path]] = {}
        for values in db.execute(sql).fetchall():
            row = dict(zip(self.columns, values))
            self.rows[self.key(row)] = (row, into)

    def key(self, row: dict) -> tuple:
        return tuple(row[c] for c in self.slot)


def _rank(row: dict) -> tuple:
    """Bigger is better: a measured row over an interpolated one, then the newer one."""
    return (row.get("source", "measured") == "measured", row["measured_at"] or "")


def _merge_measurements(db: Database, slots: _Slots, content: _Contents, on_conflict: str) -> tuple[int, int, int]:
    inserts, updates, kept = [], [], 0
    for row in content.tables["measurements"].dicts():
        key = slots.key(row)
        held = slots.rows.get(key)
        if held is None:
            inserts.append(row)
        elif held[0] == row:
            kept += 1
            continue
        else:
            if on_conflict == FAIL:
                raise MergeConflict(_conflict_line(f"layer {row['layer_key']}", row, held, content.path,
                                                   lambda r: f"{r['source']} {r['median_ms']:.6g} ms"))
            if _rank(row) > _rank(held[0]):
                updates.append(row)
            else:
                kept += 1
                continue
        slots.rows[key] = (row, content.path)
    db["measurements"].insert_all(inserts)
    _update_by_slot(db, "measurements", _SLOT, updates)
    return len(inserts), len(updates), kept


def _merge_calibration(db: Database, slots: _Slots, content: _Contents, on_conflict: str) -> int:
    changed = []
    for row in content.tables["calibration"].dicts():
        key = slots.key(row)
        held = slots.rows.get(key)
        if held is not None and held[0] == row:
            continue
        if held is not None:
            if on_conflict == FAIL:
                raise MergeConflict(_conflict_line(f"calibration {row['name']}", row, held, content.path,
                                                   lambda r: f"{r['value_ms']:.6g} ms"))
            if _rank(row) <= _rank(held[0]):
                continue
        slots.rows[key] = (row, content.path)
        changed.append(row)
    db["calibration"].upsert_all(changed, pk=_CALIBRATION_SLOT)
    return len(changed)


def _merge_devices(db: Database, devices: dict[str, dict], content: _Contents) -> int:
    """Unite the device records: a new device is added; a known one gets its empty fields filled
    and keeps the earliest `first_seen`. Returns how many devices were added."""
    added = 0
    for row in content.tables["devices"].dicts():
        held = devices.get(row["device_id"])
        if held is None:
            db["devices"].insert(row)
            devices[row["device_id"]] = row
            added += 1
            continue
        merged = {k: (held[k] if held[k] not in ("", None) else v) for k, v in row.items()}
        merged["first_seen"] = min(held["first_seen"], row["first_seen"])
        if merged != held:
            db["devices"].update(row["device_id"], merged)
            devices[row["device_id"]] = merged
    return added


def _update_by_slot(db: Database, table: str, slot: tuple[str, ...], rows: list[dict]) -> None:
    if not rows:
        return
    columns = [c for c in rows[0] if c not in slot]
    sql = (f"UPDATE {_quote(table)} SET {', '.join(f'{_quote(c)} = ?' for c in columns)} "
           f"WHERE {' AND '.join(f'{_quote(c)} = ?' for c in slot)}")
    db.conn.executemany(sql, ([row[c] for c in columns] + [row[c] for c in slot] for row in rows))


def _conflict_line(what: str, row: dict, held: tuple[dict, Path], path: Path, value) -> str:
    other, other_path = held
    where = f"slice {row['device_id']} / {row['runtime']} / {row['runtime_options']}"
    return (f"conflict: {what} on {where}: {other_path} has {value(other)} (measured_at {other['measured_at']}), "
            f"{path} has {value(row)} (measured_at {row['measured_at']}); nothing was merged "
            f"(--on-conflict {PREFER_MEASURED} keeps the measured, then the newer row)")


def _quote(identifier: str) -> str:
    """An identifier of our own schema as SQL (names cannot be query parameters)."""
    return '"' + identifier.replace('"', '""') + '"'
