"""The on-device latency lookup table (LUT): SQLite schema, writes, fast reads, coverage.

Write:  `LutWriter(open_lut_for_writing(path)).write(rows)`; read: `LatencyTable.load(path, device, runtime)`
(or `open_lut_for_reading(path)`). Both opens live in `schema.py` / `connect.py`; every
sqlite3 error reaches the user as a one-line `LutError` naming the file.
Imports nothing else of netadaptv2. All latencies are milliseconds.
"""
from .coverage import SliceInfo, SpaceCoverage, devices, format_table, missing_keys, slices, space_coverage
from .errors import LutError, MissingLatencyError, NotALutDatabase, SchemaTooNew, UnknownSlice
from .interpolate import family_key, interpolate_family, interpolate_layers
from .layer_key import ACTIVATIONS, OP_KINDS, LayerConfig, RuntimeSpec
from .reader import DEFAULT_RUNTIME_OPTIONS, OVERHEAD, LatencyTable
from .schema import SCHEMA_VERSION, SOURCES, open_lut, open_lut_for_reading, open_lut_for_writing, schema_version
from .writer import DeviceRecord, LutWriter, MeasurementRow, utc_now

__all__ = [
    "ACTIVATIONS", "DEFAULT_RUNTIME_OPTIONS", "OP_KINDS", "OVERHEAD", "SCHEMA_VERSION", "SOURCES",
    "DeviceRecord", "LatencyTable", "LayerConfig", "LutError", "LutWriter", "MeasurementRow",
    "MissingLatencyError", "NotALutDatabase", "RuntimeSpec", "SchemaTooNew", "SliceInfo",
    "SpaceCoverage", "UnknownSlice", "devices", "family_key", "format_table", "interpolate_family",
    "interpolate_layers", "missing_keys", "open_lut", "open_lut_for_reading",
    "open_lut_for_writing", "schema_version", "slices", "space_coverage",
    "utc_now",
]
