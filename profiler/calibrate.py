"""Boundary costs and drift: the two per-slice constants a build keeps next to its rows.

`overhead` (calibration name, ms): what one `invoke()`/`run()` of any model costs beyond its
layers (runtime entry, delegate dispatch, Python binding, output fetch). A layer exported
alone pays it once, and so does a whole network, once in total. Every benchmark batch also
times the overhead model (`export.overhead_module`: a one-element ReLU, a few ns of work); each layer row stores its
statistics *minus that batch's overhead* (median, mean, p10, p90; clamped at 0; the raw
figures stay in the row's `state_after["profiler"]`), and the slice's `overhead`
calibration is the median of the per-batch overheads. `LatencyTable.predict` then returns
sum(layers) + overhead: one overhead per network, as the device pays it.

`reference` (calibration name, ms): the raw median of one fixed mid-cost layer, re-timed in
every batch; the calibration holds the device's **fast state**: the 10th percentile of that
median over the slice's batches so far (`fast_state_ms`; the lowest of fewer than 11 batches).
A batch whose reference runs more than `drift_pct` slower is re-measured and the fastest
attempt kept (`measure.measure_batch`); its drift is stored with the rows either way.

Why the fast state and not the median: this host's core switches for seconds to minutes into
a state ~1.5x slower (the reference layer read 0.064-0.076 ms fast, 0.097-0.165 ms slow over
one build, docs/lut.md "Noise protocol"), as a phone does when it throttles. With the median as
the anchor, a build that spent most of its batches in the slow state re-measured its *fast*
batches towards the slow one, and a slice mixed the two states. A low percentile rather than
the minimum: one lucky batch does not set the bar every other batch fails.
"""
from __future__ import annotations

import json
import statistics
from dataclasses import dataclass

from sqlite_utils import Database

from lut_db.layer_key import LayerConfig
from lut_db.reader import OVERHEAD  # the calibration LatencyTable.predict adds back once
from lut_db.writer import LutWriter

REFERENCE = "reference"


@dataclass(frozen=True)
class Reference:
    """The drift reference of a slice: its layer and its anchor raw median (ms)."""

    layer: LayerConfig
    value_ms: float | None  # the fast state of the batches so far (`fast_state_ms`); None until one measured it


def calibration(db: Database, device_id: str, runtime: str, options: str, name: str) -> tuple[float, dict] | None:
    """(value ms, detail) of one calibration constant of a slice, None when absent."""
    row = db.execute("SELECT value_ms, detail FROM calibration WHERE device_id = ? AND runtime = ? "
                     "AND runtime_options = ? AND name = ?", [device_id, runtime, options, name]).fetchone()
    if row is None:
        return None
    return row[0], json.loads(row[1] or "{}")


def load_reference(db: Database, device_id: str, runtime: str, options: str,
                   default: LayerConfig | None) -> Reference:
    """The slice's stored reference (layer + anchor value), or `default` not yet measured."""
    stored = calibration(db, device_id, runtime, options, REFERENCE)
    if stored is None or "key" not in stored[1]:
        return Reference(default, None)
    return Reference(LayerConfig.from_key(stored[1]["key"]), stored[0])


def update_reference(db: Database, writer: LutWriter, device_id: str, runtime: str, options: str,
                     layer: LayerConfig) -> Reference:
    """Set the slice's `reference` calibration to the fast state of its batches' reference medians."""
    sql = ("SELECT DISTINCT json_extract(state_after, '$.profiler.batch'), "
           "json_extract(state_after, '$.profiler.reference_ms') FROM measurements "
           "WHERE device_id = ? AND runtime = ? AND runtime_options = ? AND source = 'measured' "
           "AND json_extract(state_after, '$.profiler.reference_key') = ?")
    values = [ms for _, ms in db.execute(sql, [device_id, runtime, options, layer.key]).fetchall() if ms]
    if not values:
        return Reference(layer, None)
    value = fast_state_ms(values)
    writer.set_calibration(device_id, runtime, options, REFERENCE, value,
                           {"key": layer.key, "batches": len(values), "median_ms": statistics.median(values),
                            "what": "10th percentile over batches of this layer's raw median (ms): the device's "
                                    "fast state, the drift anchor"})
    return Reference(layer, value)


def fast_state_ms(values: list[float]) -> float:
    """The fast state of per-batch reference medians (ms): their 10th percentile, lower
    nearest rank (the minimum of 1..10 values, the 2nd lowest of 11..20, ...)."""
    return sorted(values)[(len(values) - 1) // 10]


def drift_pct(reference_ms: float, first_ms: float | None) -> float:
    """Relative drift of the reference layer in %, positive = slower than the anchor (0 when
    there is nothing to compare with)."""
    if not first_ms:
        return 0.0
    return 100.0 * (reference_ms / first_ms - 1.0)


def batch_overheads(db: Database, device_id: str, runtime: str, options: str) -> list[float]:
    """Per-batch overheads (ms) recorded in the slice's measured rows, one per batch."""
    sql = ("SELECT DISTINCT json_extract(state_after, '$.profiler.batch'), "
           "json_extract(state_after, '$.profiler.overhead_ms') FROM measurements "
           "WHERE device_id = ? AND runtime = ? AND runtime_options = ? AND source = 'measured' "
           "AND json_extract(state_after, '$.profiler.overhead_ms') IS NOT NULL")
    return [ms for _, ms in db.execute(sql, [device_id, runtime, options]).fetchall()]


def update_overhead(db: Database, writer: LutWriter, device_id: str, runtime: str, options: str) -> float | None:
    """Set the slice's `overhead` calibration to the median per-batch overhead; return it (ms)."""
    values = batch_overheads(db, device_id, runtime, options)
    if not values:
        return None
    value = statistics.median(values)
    current = calibration(db, device_id, runtime, options, OVERHEAD)
    if current is None or current[0] != value or current[1].get("batches") != len(values):
        writer.set_calibration(device_id, runtime, options, OVERHEAD, value, {
            "what": "per-invoke cost of a one-element ReLU model (ms); subtracted from every layer row, "
                    "added once per network by LatencyTable.predict",
            "batches": len(values), "min_ms": min(values), "max_ms": max(values),
        })
    return value
