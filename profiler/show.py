"""`lutbuild show`: what a LUT file holds (devices, slices, calibration, coverage per space)."""
from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from lut_db import coverage
from lut_db.connect import lut_errors
from lut_db.layer_key import GENERIC
from lut_db.schema import open_lut


@dataclass(frozen=True)
class GenericCount:
    """Rows of a slice whose key is a generic operator key (`lut_db.layer_key.GenericKey`, `lutbuild predict`)."""

    device_id: str
    runtime: str
    runtime_options: str
    generic_keys: int
    measured: int


@dataclass(frozen=True)
class CalibrationInfo:
    device_id: str
    runtime: str
    runtime_options: str
    name: str
    value_ms: str  # 4 significant digits: overheads are a few microseconds
    measured_at: str


def show_lut(path: str | Path) -> str:
    """Plain-text tables of the LUT at `path` (read-only: never creates or migrates it)."""
    db = open_lut(path, create=False)
    try:
        with lut_errors(path):  # damage past the opening check is one line too
            devices = coverage.devices(db)
            slices = coverage.slices(db)
            spaces = coverage.space_coverage(db)
            calibration = [CalibrationInfo(d, r, o, n, f"{v:.4g}", at) for d, r, o, n, v, at in db.execute(
                "SELECT device_id, runtime, runtime_options, name, value_ms, measured_at FROM calibration "
                "ORDER BY device_id, runtime, runtime_options, name").fetchall()]
            gpu = coverage.gpu_fallback(db)
            generic = [GenericCount(*row) for row in db.execute(
                "SELECT device_id, runtime, runtime_options, COUNT(*), SUM(source = 'measured') FROM measurements "
                "WHERE layer_key LIKE ? GROUP BY device_id, runtime, runtime_options "
                "ORDER BY device_id, runtime, runtime_options", [f"{GENERIC}:%"]).fetchall()]
    finally:
        db.close()
    # GPU-delegate slices only: a slice never mixes GPU-only and GPU + CPU rows silently
    gpu_part = ["GPU delegate: measured rows whose ops partly ran on the CPU (cpu_fallback), per GPU slice",
                coverage.format_table(gpu), ""] if gpu else []
    parts = [
        f"LUT {path}",
        "",
        "devices",
        coverage.format_table(devices, ["device_id", "model", "soc", "abi", "cpu_core", "first_seen"]),
        "",
        "slices (rows per device, runtime and options)",
        coverage.format_table(slices),
        "",
        *gpu_part,
        "generic operator keys (lutbuild predict), rows per slice",
        coverage.format_table(generic),
        "",
        "calibration (ms; composition: a factor, whole model / LUT sum, lutbuild calibrate)",
        coverage.format_table(calibration),
        "",
        "coverage per search space (distinct layer keys)",
        coverage.format_table(spaces),
    ]
    return "\n".join(parts)
