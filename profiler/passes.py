"""Re-measure passes (`lutbuild build --passes N`): each key's row from the pass with the lowest p10.

Why: this host's core has a time-varying slow state (~1.4-2.6x on XNNPACK's int8 7x7
depthwise, docs/lut.md "INT8 slices") that can hold for a whole pass over a slice, so one
pass's p10 rows may all be slow-state figures. Passes minutes apart see other host states;
per key, the pass with the lowest p10 is the fast-state figure that whole networks' p10s
add up to.

A row keeps ONE pass whole (median, mean, p10, p90, std and provenance of the same batch:
never a mix), and records in `state_after["profiler"]` how many passes the key has seen
(`passes`) and the p10 (ms, overhead subtracted as stored) of each (`pass_p10_ms`, in pass
order). A row without the record has seen one pass (a `--passes 1` build, or an older LUT),
so a killed build resumes: the keys of pass k are those whose row has seen fewer than k.
"""
from __future__ import annotations

import dataclasses
import json
from collections.abc import Sequence

from sqlite_utils import Database

from lut_db.layer_key import LayerConfig, RuntimeSpec
from lut_db.writer import MeasurementRow

from .errors import ProfilerError

#: `state_after["profiler"]` fields of the record: passes seen, and the p10 of each (ms).
PASSES, PASS_P10 = "passes", "pass_p10_ms"

_ROW_COLUMNS = ("layer_key", "runtime_version", "n", "median_ms", "mean_ms", "p10_ms", "p90_ms", "std_ms",
                "plan", "measured_at", "warmup_runs", "state_before", "state_after", "throttled")


def check_passes(passes: int) -> int:
    """`--passes` (BuildOptions.passes): an integer >= 1, else one line naming the option."""
    if isinstance(passes, bool) or not isinstance(passes, int) or passes < 1:
        raise ProfilerError(f"--passes: expected an integer >= 1 (passes over the slice), got {passes!r}")
    return passes


def measured_passes(db: Database, device_id: str, runtime: str, options: str) -> dict[str, int]:
    """Passes seen by each key the slice has measured (1 for a row without the record)."""
    sql = (f"SELECT layer_key, json_extract(state_after, '$.profiler.{PASSES}') FROM measurements "
           "WHERE device_id = ? AND runtime = ? AND runtime_options = ? AND source = 'measured'")
    return {key: int(n or 1) for key, n in db.execute(sql, [device_id, runtime, options]).fetchall()}


def pass_todo(keys: Sequence[LayerConfig], seen: dict[str, int], passes: int) -> list[list[LayerConfig]]:
    """The keys of each pass 1..`passes`, in plan order: pass k = keys whose row has seen fewer
    than k passes (pass 1 = not measured yet: the plain resume)."""
    return [[c for c in keys if seen.get(c.key, 0) < k] for k in range(1, passes + 1)]


def first_pass_row(row: MeasurementRow) -> MeasurementRow:
    """A row measured by pass 1 of a `--passes N > 1` build, with its record (one pass)."""
    return _with_record(row, 1, [row.p10_ms])


def keep_lowest(stored: MeasurementRow | None, new: MeasurementRow) -> tuple[MeasurementRow, bool]:
    """The row to write for a key re-measured by a further pass, and whether `new` replaced it.

    The whole row of the lower p10 (`new` only when strictly lower), with the record of every
    pass so far. No stored row (not expected: pass 1 committed first): `new`, as a first pass."""
    if stored is None:
        return first_pass_row(new), True
    profiler = stored.state_after.get("profiler", {})
    seen = int(profiler.get(PASSES) or 1)
    p10s = list(profiler.get(PASS_P10) or [stored.p10_ms])
    lowered = stored.p10_ms is None or (new.p10_ms is not None and new.p10_ms < stored.p10_ms)
    return _with_record(new if lowered else stored, seen + 1, [*p10s, new.p10_ms]), lowered


def _with_record(row: MeasurementRow, passes: int, p10s: list) -> MeasurementRow:
    state_after = dict(row.state_after)
    state_after["profiler"] = {**state_after.get("profiler", {}), PASSES: passes, PASS_P10: p10s}
    return dataclasses.replace(row, state_after=state_after)


def stored_rows(db: Database, rt: RuntimeSpec, device_id: str,
                layers: Sequence[LayerConfig]) -> dict[str, MeasurementRow]:
    """The slice's measured rows of `layers` as `MeasurementRow`s by key (every column kept; each
    row's own runtime version), so a further pass can write a kept row back unchanged but for its record."""
    by_key = {c.key: c for c in layers}
    keys = list(by_key)
    rows: dict[str, MeasurementRow] = {}
    for start in range(0, len(keys), 500):
        chunk = keys[start:start + 500]
        sql = (f"SELECT {', '.join(_ROW_COLUMNS)} FROM measurements WHERE device_id = ? AND runtime = ? "
               f"AND runtime_options = ? AND source = 'measured' AND layer_key IN ({', '.join('?' * len(chunk))})")
        for (key, version, n, median, mean, p10, p90, std, plan, measured_at, warmup, before, after,
             throttled) in db.execute(sql, [device_id, rt.name, rt.options, *chunk]).fetchall():
            rows[key] = MeasurementRow(
                layer=by_key[key], device_id=device_id, runtime=dataclasses.replace(rt, version=version),
                n=n, median_ms=median, mean_ms=mean, p10_ms=p10, p90_ms=p90, std_ms=std, source="measured",
                plan=plan, measured_at=measured_at, warmup_runs=warmup, state_before=json.loads(before or "{}"),
                state_after=json.loads(after or "{}"), throttled=bool(throttled))
    return rows
