"""What a LUT holds, for `lutbuild show`: devices, slices, and coverage per search space.

A slice is one (device, runtime, runtime options); a search space's coverage on a slice is
how many of the layer keys it needs are measured, interpolated, or still missing.
"""
from __future__ import annotations

import dataclasses
from dataclasses import dataclass
from collections.abc import Sequence

from sqlite_utils import Database

from .writer import DeviceRecord

#: Where a row of a GPU-delegate slice records what the delegate took of its layer: the key
#: `gpu_delegation` of `state_after.profiler` (written by `profiler.lut_rows.delegation_record`),
#: a JSON object with `complete` (false: some ops ran on the CPU; null: the tool's output did not
#: say), `fallback` (the op kinds left on the CPU), `summary` and op counts. JSON in the row, not
#: a column: the schema, and every LUT written before, stay as they are.
GPU_DELEGATION = "gpu_delegation"
GPU_DELEGATION_JSON = f"$.profiler.{GPU_DELEGATION}"
#: SQL of a row's `complete` (1, 0 or NULL); NULL for rows without a record or valid JSON.
GPU_COMPLETE_SQL = (f"(CASE WHEN json_valid(state_after) THEN "
                    f"json_extract(state_after, '{GPU_DELEGATION_JSON}.complete') END)")
GPU_RECORDED_SQL = (f"(CASE WHEN json_valid(state_after) THEN "
                    f"json_type(state_after, '{GPU_DELEGATION_JSON}') END) IS NOT NULL")


@dataclass(frozen=True)
class SliceInfo:
    """One slice and its row counts."""

    device_id: str
    runtime: str
    runtime_version: str  # distinct versions in the slice, comma-separated (an update mid-build shows)
    runtime_options: str
    rows: int
    measured: int
    interpolated: int
    throttled: int  # rows taken while the device throttled (candidates for re-measuring)
    last_measured_at: str  # ISO UTC


@dataclass(frozen=True)
class SpaceCoverage:
    """How much of search space `space` one slice covers (counts of distinct layer keys)."""

    space: str
    device_id: str  # "" when the LUT has no slice yet
    runtime: str
    runtime_options: str
    needed: int
    measured: int
    interpolated: int
    missing: int


def devices(db: Database) -> list[DeviceRecord]:
    """Every registered device, oldest first."""
    return [DeviceRecord(**row) for row in db["devices"].rows_where(order_by="first_seen, device_id")]


def slices(db: Database) -> list[SliceInfo]:
    """Every slice with its counts, ordered by device, runtime, options."""
    sql = """
        SELECT device_id, runtime, GROUP_CONCAT(DISTINCT runtime_version), runtime_options,
               COUNT(*), SUM(source = 'measured'), SUM(source = 'interpolated'), SUM(throttled),
               MAX(measured_at)
        FROM measurements
        GROUP BY device_id, runtime, runtime_options
        ORDER BY device_id, runtime, runtime_options
    """
    return [SliceInfo(*row) for row in db.execute(sql).fetchall()]


@dataclass(frozen=True)
class GpuFallback:
    """Rows of one slice that carry a GPU-delegation record, and how many ran partly on the CPU."""

    device_id: str
    runtime: str
    runtime_options: str
    gpu_rows: int  # measured rows with a delegation record
    cpu_fallback: int  # of them, rows where some ops ran on the CPU (GPU + CPU time mixed)
    unknown: int  # of them, rows whose tool output did not say
    fallback_ops: str  # op kinds left on the CPU, comma-separated


def gpu_fallback(db: Database) -> list[GpuFallback]:
    """One entry per slice with GPU-delegation records (`GPU_DELEGATION`), ordered like `slices`."""
    sql = f"""
        SELECT device_id, runtime, runtime_options, COUNT(*), COALESCE(SUM({GPU_COMPLETE_SQL} = 0), 0),
               COALESCE(SUM({GPU_COMPLETE_SQL} IS NULL), 0)
        FROM measurements WHERE {GPU_RECORDED_SQL}
        GROUP BY device_id, runtime, runtime_options ORDER BY device_id, runtime, runtime_options
    """
    ops_sql = f"""
        SELECT m.device_id, m.runtime, m.runtime_options, GROUP_CONCAT(DISTINCT j.value)
        FROM measurements AS m, json_each(CASE WHEN json_valid(m.state_after) THEN m.state_after END,
                                          '{GPU_DELEGATION_JSON}.fallback') AS j
        GROUP BY m.device_id, m.runtime, m.runtime_options
    """
    ops = {tuple(row[:3]): row[3] for row in db.execute(ops_sql).fetchall()}
    return [GpuFallback(*row, fallback_ops=ops.get(tuple(row[:3])) or "") for row in db.execute(sql).fetchall()]


def space_coverage(db: Database, space: str | None = None) -> list[SpaceCoverage]:
    """Coverage of each recorded search space (or only `space`) on each slice."""
    sql = """
        WITH slices AS (SELECT DISTINCT device_id, runtime, runtime_options FROM measurements)
        SELECT s.space, sl.device_id, sl.runtime, sl.runtime_options, COUNT(*),
               COALESCE(SUM(m.source = 'measured'), 0), COALESCE(SUM(m.source = 'interpolated'), 0)
        FROM space_layers AS s CROSS JOIN slices AS sl
        LEFT JOIN measurements AS m
          ON m.layer_key = s.layer_key AND m.device_id = sl.device_id
         AND m.runtime = sl.runtime AND m.runtime_options = sl.runtime_options
        WHERE :space IS NULL OR s.space = :space
        GROUP BY s.space, sl.device_id, sl.runtime, sl.runtime_options
        ORDER BY s.space, sl.device_id, sl.runtime, sl.runtime_options
    """
    rows = db.execute(sql, {"space": space}).fetchall()
    if not rows:  # no slice yet: still report what each space needs
        rows = db.execute(
            "SELECT space, '', '', '', COUNT(*), 0, 0 FROM space_layers "
            "WHERE :space IS NULL OR space = :space GROUP BY space ORDER BY space", {"space": space},
        ).fetchall()
    return [SpaceCoverage(*row, missing=row[4] - row[5] - row[6]) for row in rows]


def missing_keys(db: Database, space: str, device_id: str, runtime: str, runtime_options: str) -> list[str]:
    """Keys `space` needs that have no row (measured or interpolated) in the slice, sorted."""
    sql = """
        SELECT s.layer_key FROM space_layers AS s
        WHERE s.space = ? AND NOT EXISTS (
            SELECT 1 FROM measurements AS m WHERE m.layer_key = s.layer_key
            AND m.device_id = ? AND m.runtime = ? AND m.runtime_options = ?)
        ORDER BY s.layer_key
    """
    return [k for (k,) in db.execute(sql, [space, device_id, runtime, runtime_options])]


def format_table(items: Sequence[object], columns: Sequence[str] | None = None) -> str:
    """Render dataclass instances as an aligned plain-text table (numbers right-aligned).

    `columns` picks and orders fields (default: all fields of the first item).
    """
    if not items:
        return "(none)"
    columns = list(columns or (f.name for f in dataclasses.fields(items[0])))
    values = [[getattr(item, c) for c in columns] for item in items]
    cells = [[_cell(v) for v in row] for row in values]
    numeric = [all(_is_number(row[i]) for row in values) for i in range(len(columns))]
    widths = [max(len(c), *(len(row[i]) for row in cells)) for i, c in enumerate(columns)]

    def line(row: Sequence[str]) -> str:
        return "  ".join(v.rjust(w) if num else v.ljust(w)
                         for v, w, num in zip(row, widths, numeric)).rstrip()

    return "\n".join([line(columns), line(["-" * w for w in widths]), *(line(r) for r in cells)])


def _is_number(value: object) -> bool:
    return isinstance(value, (int, float)) and not isinstance(value, bool)


def _cell(value: object) -> str:
    if isinstance(value, bool):
        return "yes" if value else "no"
    if isinstance(value, float):
        return f"{value:.3f}"
    return "" if value is None else str(value)
