"""`nas-search demo`'s end: the searched network's latency on an int8 LUT slice, shown only when the
demo's LUT has one (issue 12); a look-up, no export. Real SQLite files written by the LUT writer."""
from __future__ import annotations

from pathlib import Path

from lut_db.layer_key import RuntimeSpec
from lut_db.schema import open_lut
from lut_db.writer import LutWriter, MeasurementRow
from search.demo import _int8_prediction, format_table
from search.spaces import get_space

DEVICE = "local:test"
FP32 = RuntimeSpec("tflite", "t")
INT8 = RuntimeSpec("tflite", "t", dtype="int8")


def _write(db: Path, rt: RuntimeSpec, layers, ms: float) -> None:
    lut = open_lut(db)
    try:
        LutWriter(lut).write([MeasurementRow(layer=c, device_id=DEVICE, runtime=rt, n=50, median_ms=ms, mean_ms=ms,
                                             p10_ms=ms, p90_ms=ms, std_ms=0.0) for c in layers])
    finally:
        lut.close()


def _summary(int8: dict | None) -> dict:
    rows = [{"network": "searched (MCD)", "top1": 0.7, "lut_ms": 0.5, "measured_ms": 0.52, "measured_cov": 0.01,
             "error_pct": -3.8, "macs_m": 4.0, "depth": 5.0}]
    summary = {"device": DEVICE, "target_ms": 0.5, "max_lut_ms": 1.0, "rows": rows, "timings_s": {}}
    return summary | ({"int8": {"network": "searched (MCD)", **int8}} if int8 else {})


def test_int8_figure_only_with_an_int8_slice(tmp_path):
    space = get_space("mbv3-tiny")
    cfg = space.min_config()
    layers = list(dict.fromkeys(space.layer_configs(cfg)))
    db = tmp_path / "lut.sqlite"
    _write(db, FP32, layers, 0.01)
    assert _int8_prediction(db, space, DEVICE, "tflite", cfg) is None  # float32 only: nothing shown
    assert "int8" not in format_table(_summary(None))

    _write(db, INT8, layers[1:], 0.03)  # an int8 slice that lacks the stem
    partial = _int8_prediction(db, space, DEVICE, "tflite", cfg)
    assert partial["lut_ms"] is None and layers[0].key in partial["note"]
    assert "has no figure for searched (MCD)" in format_table(_summary(partial))

    _write(db, INT8, layers[:1], 0.03)
    full = _int8_prediction(db, space, DEVICE, "tflite", cfg)
    expected = 0.03 * len(space.layer_configs(cfg))  # every layer once per use, no overhead calibrated
    assert full["runtime_options"] == INT8.options and abs(full["lut_ms"] - expected) < 1e-9
    line = [ln for ln in format_table(_summary(full)).splitlines() if "int8 LUT slice" in ln]
    assert len(line) == 1 and f"{expected:.3f} ms LUT-predicted vs 0.500 ms float32" in line[0]
