"""Write LUT rows: measurements, devices, calibration constants, search-space key sets.

One writer per file: several phones feed one writer thread (`profiler/build_engine.py`).
Every call is one transaction: a process killed mid-call leaves the LUT as it was before the call.
All latencies are milliseconds; timestamps are ISO-8601 UTC strings.
"""
from __future__ import annotations

import dataclasses
import functools
import json
import math
from dataclasses import dataclass, field
from datetime import datetime, timezone
from typing import Any
from collections.abc import Iterable, Mapping

from sqlite_utils import Database

from .connect import lut_errors
from .layer_key import LayerConfig, RuntimeSpec
from .schema import SOURCES


def utc_now() -> str:
    """Now as ISO-8601 UTC with seconds, the format of every timestamp in the LUT."""
    return datetime.now(timezone.utc).isoformat(timespec="seconds")


@dataclass(frozen=True)
class DeviceRecord:
    """One row of `devices`. Mirrors the device agent's `DeviceInfo` without importing it."""

    device_id: str
    model: str = ""
    soc: str = ""
    abi: str = ""
    os_version: str = ""
    cpu_core: str = ""  # core(s) the runner is pinned to, "" when unpinned
    first_seen: str = ""  # ISO UTC; "" means "now" when first registered

    @classmethod
    def from_info(cls, info: Any) -> DeviceRecord:
        """From any object with DeviceInfo's attributes (device_agents.contract.DeviceInfo)."""
        return cls(**{name: getattr(info, name, "") for name in
                      ("device_id", "model", "soc", "abi", "os_version", "cpu_core")})


@dataclass(frozen=True)
class MeasurementRow:
    """One layer's statistics on one slice (device + runtime + options), in ms.

    `source="interpolated"` rows (sparse plan: n=0, median estimated from measured
    neighbours, no spread statistics) never replace a measured row; a measured row replaces
    anything.
    """

    layer: LayerConfig
    device_id: str
    runtime: RuntimeSpec
    n: int  # timed runs behind the statistics (0 for interpolated rows)
    median_ms: float  # the value predictions use
    mean_ms: float | None = None  # the spread statistics: required for measured rows,
    p10_ms: float | None = None  # None (stored NULL) for interpolated ones
    p90_ms: float | None = None
    std_ms: float | None = None
    source: str = "measured"  # one of SOURCES
    plan: str = "full"  # benchmark plan that produced the row: "full", "sparse", ...
    measured_at: str = field(default_factory=utc_now)  # ISO UTC
    warmup_runs: int = 0
    state_before: Mapping[str, Any] = field(default_factory=dict)  # device thermal/frequency state
    state_after: Mapping[str, Any] = field(default_factory=dict)
    throttled: bool = False  # the device throttled during the batch (the row is suspect)

    def __post_init__(self) -> None:
        if self.source not in SOURCES:
            raise ValueError(f"MeasurementRow.source: expected one of {SOURCES}, got {self.source!r}")
        if not (math.isfinite(self.median_ms) and self.median_ms >= 0):
            raise ValueError(f"MeasurementRow.median_ms: expected a finite latency >= 0 ms, got {self.median_ms}")
        if self.n < 0:
            raise ValueError(f"MeasurementRow.n: expected >= 0, got {self.n}")
        if self.source == "measured":
            absent = [name for name in ("mean_ms", "p10_ms", "p90_ms", "std_ms") if getattr(self, name) is None]
            if absent or self.n < 1:
                raise ValueError(f"MeasurementRow: a measured row needs n >= 1 and {', '.join(absent) or 'its stats'}")


# Layers are immutable by key: the first insert wins, later ones are no-ops.
_INSERT_LAYER = (
    "INSERT OR IGNORE INTO layers (key, op, h, w, cin, cout, kernel, stride, groups, act, hidden, dtype) "
    "VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)"
)
# A device seen only through its rows gets a bare record; `register_device` fills it in.
_INSERT_BARE_DEVICE = (
    "INSERT OR IGNORE INTO devices (device_id, model, soc, abi, os_version, cpu_core, first_seen) "
    "VALUES (?, '', '', '', '', '', ?)"
)
_MEASUREMENT_COLUMNS = (
    "layer_key", "device_id", "runtime", "runtime_version", "runtime_options", "n", "median_ms",
    "mean_ms", "p10_ms", "p90_ms", "std_ms", "source", "plan", "measured_at", "warmup_runs",
    "state_before", "state_after", "throttled",
)
_SLOT = ("layer_key", "device_id", "runtime", "runtime_options")
# Upsert keeping the row id; the WHERE is the source rule: an interpolated value only ever
# replaces another interpolated one, a measured value replaces anything.
_UPSERT_MEASUREMENT = (
    f"INSERT INTO measurements ({', '.join(_MEASUREMENT_COLUMNS)}) "
    f"VALUES ({', '.join('?' * len(_MEASUREMENT_COLUMNS))}) "
    f"ON CONFLICT ({', '.join(_SLOT)}) DO UPDATE SET "
    + ", ".join(f"{c} = excluded.{c}" for c in _MEASUREMENT_COLUMNS if c not in _SLOT)
    + " WHERE excluded.source = 'measured' OR measurements.source = 'interpolated'"
)


def _layer_params(cfg: LayerConfig) -> tuple:
    return (cfg.key, cfg.op, cfg.h, cfg.w, cfg.cin, cfg.cout, cfg.kernel, cfg.stride, cfg.groups,
            cfg.act, cfg.hidden, cfg.dtype)


def _measurement_params(row: MeasurementRow) -> tuple:
    rt = row.runtime
    return (
        row.layer.key, row.device_id, rt.name, rt.version, rt.options, row.n, row.median_ms,
        row.mean_ms, row.p10_ms, row.p90_ms, row.std_ms, row.source, row.plan, row.measured_at,
        row.warmup_runs, json.dumps(dict(row.state_before), sort_keys=True),
        json.dumps(dict(row.state_after), sort_keys=True), int(row.throttled),
    )


def _one_line_errors(method):
    """An `sqlite3.Error` of the method (disk full, locked, damaged) -> `LutError` naming the file."""
    @functools.wraps(method)
    def wrapped(self, *args, **kwargs):
        with lut_errors(getattr(self.db, "path", "the LUT")):
            return method(self, *args, **kwargs)
    return wrapped


class LutWriter:
    """Writes to an open LUT (`open_lut(path)`); each method is one transaction.

    An `sqlite3.Error` (disk full, another process holding the lock past the busy timeout)
    rolls the call back and is raised as a one-line `LutError` naming the file."""

    def __init__(self, db: Database) -> None:
        self.db = db

    @_one_line_errors
    def write(self, rows: Iterable[MeasurementRow]) -> int:
        """Store `rows` all together or not at all; return how many were stored.

        Rows are consumed inside the transaction, so a failure while producing or writing
        them (an exception, a kill) rolls back every row of this call. A row is not stored
        (and not counted) when it is interpolated and its slot already holds a measured value.
        Unknown devices get a bare `devices` row; call `register_device` for the details.
        """
        stored = 0
        execute = self.db.conn.execute
        with self.db.atomic():
            for row in rows:
                execute(_INSERT_LAYER, _layer_params(row.layer))
                execute(_INSERT_BARE_DEVICE, (row.device_id, row.measured_at))
                stored += execute(_UPSERT_MEASUREMENT, _measurement_params(row)).rowcount
        return stored

    @_one_line_errors
    def register_device(self, device: DeviceRecord) -> None:
        """Insert or refresh a device's details; `first_seen` keeps its first value."""
        record = {k: v for k, v in dataclasses.asdict(device).items() if k != "first_seen"}
        with self.db.atomic():
            self.db["devices"].insert({**record, "first_seen": device.first_seen or utc_now()},
                                      pk="device_id", ignore=True)
            self.db["devices"].update(device.device_id, record)

    @_one_line_errors
    def register_space(self, space: str, layers: Iterable[LayerConfig]) -> int:
        """Record the layer keys search space `space` needs (replacing its previous set).

        The profiler calls this at planning time so `lutbuild show` can report coverage per
        space. Returns the number of distinct keys.
        """
        keys = {}
        for cfg in layers:
            keys.setdefault(cfg.key, cfg)
        with self.db.atomic():
            self.db.conn.executemany(_INSERT_LAYER, (_layer_params(cfg) for cfg in keys.values()))
            self.db.execute("DELETE FROM space_layers WHERE space = ?", [space])
            self.db["space_layers"].insert_all(({"space": space, "layer_key": k} for k in keys),
                                               pk=("space", "layer_key"))
        return len(keys)

    @_one_line_errors
    def set_calibration(self, device_id: str, runtime: str, runtime_options: str, name: str,
                        value_ms: float, detail: Mapping[str, Any] | None = None,
                        measured_at: str | None = None) -> None:
        """Store a per-slice constant in ms, e.g. `overhead` (the per-invoke cost of an empty
        graph, subtracted from each layer by the profiler and added once per network by
        `LatencyTable.predict`)."""
        if not math.isfinite(value_ms):
            raise ValueError(f"set_calibration: {name} expected a finite value in ms, got {value_ms}")
        with self.db.atomic():
            self.db.execute(_INSERT_BARE_DEVICE, [device_id, measured_at or utc_now()])
            self.db["calibration"].upsert(
                {"device_id": device_id, "runtime": runtime, "runtime_options": runtime_options,
                 "name": name, "value_ms": float(value_ms), "measured_at": measured_at or utc_now(),
                 "detail": json.dumps(dict(detail or {}), sort_keys=True)},
                pk=("device_id", "runtime", "runtime_options", "name"),
            )

    @_one_line_errors
    def measured_keys(self, device_id: str, runtime: str, runtime_options: str,
                      include_throttled: bool = True) -> set[str]:
        """Keys with a *measured* row in the slice (what a resumed run skips).

        Interpolated rows are not included: a later full plan should measure them.
        `include_throttled=False` also leaves out rows taken while the device throttled.
        """
        sql = ("SELECT layer_key FROM measurements WHERE device_id = ? AND runtime = ? "
               "AND runtime_options = ? AND source = 'measured'")
        if not include_throttled:
            sql += " AND throttled = 0"
        return {k for (k,) in self.db.execute(sql, [device_id, runtime, runtime_options])}
