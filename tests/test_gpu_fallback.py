"""GPU-delegate fallback stored per LUT row (issue 12): `lutbuild build --delegate gpu` over the
loopback adbd with a stand-in benchmark_model records, in every row, what the GPU delegate took of
that layer; `show` counts the rows that partly ran on the CPU, `LatencyTable` knows their keys and
`verify` warns in one line when its predictions use them. A LUT without such records (every LUT
written before) opens and shows as before.

No phone GPU here: the stand-in tool prints what a real benchmark_model prints with
`--use_gpu=true` (outputs quoted in tensorflow issues, as in test_gpu_delegate.py), choosing a
partial delegation (HARD_SWISH left on the CPU) for model files whose size in 8-byte words is
even (flatbuffers are 4-byte aligned), a complete one for the others, and a time from the size
(so the slice's reference layer does not drift).
"""
from __future__ import annotations

import json
import sqlite3
import sys
from pathlib import Path

import pytest

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))  # `tests.adbd_endpoint` under any import mode
from tests.adbd_endpoint import start_endpoint  # noqa: E402

from device_agents.adb_keys import ensure_key  # noqa: E402
from device_agents.gpu_delegate import GpuDelegation  # noqa: E402
from lut_db.coverage import gpu_fallback  # noqa: E402
from lut_db.layer_key import LayerConfig, RuntimeSpec  # noqa: E402
from lut_db.reader import LatencyTable  # noqa: E402
from lut_db.schema import open_lut  # noqa: E402
from lut_db.writer import LutWriter, MeasurementRow  # noqa: E402
from profiler.export import ModelCache  # noqa: E402
from profiler.lut_rows import delegation_record  # noqa: E402
from profiler.show import show_lut  # noqa: E402
from profiler.spaces import resolve_space  # noqa: E402
from lutbuild_helpers import invoke, micro_space_registered

SPACE = "test-gpu-micro"
GPU_OPTIONS = "threads=1;delegate=gpu;gpu_precision_loss=false"

STAND_IN = """#!/bin/sh
case "$1" in --help) echo "usage: benchmark_model --graph=..."; exit 0 ;; esac
for a in "$@"; do case "$a" in --graph=*) g="${a#--graph=}" ;; esac; done
size=$(wc -c < "$g")
us=$((size / 20 + 100))
echo "Use gpu: [1]"
echo "INFO: Created TensorFlow Lite delegate for GPU."
if [ $((size / 8 % 2)) -eq 0 ]; then
  echo "ERROR: Following operations are not supported by GPU delegate:"
  echo "HARD_SWISH: Operation is not supported."
  echo "2 operations will run on the GPU, and the remaining 1 operations will run on the CPU."
else
  echo "Explicitly applied GPU delegate, and the model graph will be completely executed by the delegate."
fi
echo "Running benchmark for at least 1 iterations and at least 0.5 seconds"
echo "count=3 first=$us curr=$us min=$us max=$us avg=$us std=0"
echo "Running benchmark for at least 50 iterations and at least 0 seconds"
echo "count=50 first=$us curr=$us min=$us max=$((us + 20)) avg=$((us + 5)) std=3"
"""


@pytest.fixture(scope="module", autouse=True)
def micro_space():
    with micro_space_registered(SPACE) as name:
        yield name


@pytest.mark.slow  # exports 12 layers and 3 networks to TFLite: ~100 s on 2 shared cores
def test_gpu_build_stores_the_fallback_per_row_and_show_and_verify_count_it(tmp_path):
    tool = tmp_path / "benchmark_model"
    tool.write_text(STAND_IN)
    key = ensure_key(tmp_path / "keys" / "adbkey")
    host, port, stop = start_endpoint(tmp_path / "sandbox", [Path(str(key) + ".pub")],
                                      props={"ro.serialno": "GPU0001", "ro.product.model": "Loop GPU"})
    db, cache = tmp_path / "lut.sqlite", tmp_path / "cache"
    phone = ["--transport", "adb-shell", "--adb-key", key, "--device", f"{host}:{port}", "--benchmark-binary", tool]
    try:
        result = invoke("build", "--space", SPACE, "--runtime", "tflite", "--db", db, "--cache-dir", cache,
                        "--delegate", "gpu", "--quiet", "--batch-size", 6, "--repeats", 1, "--jobs", 1, *phone)
        assert result.exit_code == 0, result.output
        verify = invoke("verify", "--space", SPACE, "--runtime", "tflite", "--db", db, "--cache-dir", cache,
                        "--delegate", "gpu", "--quiet", "--samples", 3, "--rounds", 1, "--jobs", 1,
                        "--json", tmp_path / "v.json", *phone)
    finally:
        stop()
    assert verify.exit_code == 0, verify.output

    # expected: the layers whose exported file is an even number of 8-byte words (the stand-in's rule)
    with sqlite3.connect(db) as conn:
        stored = {k: json.loads(s)["profiler"]["gpu_delegation"] for k, s in conn.execute(
            "SELECT layer_key, state_after FROM measurements WHERE source = 'measured'").fetchall()}
    with ModelCache(cache, "tflite", 1) as models:
        sizes = {k: models.layer_path(LayerConfig.from_key(k)).stat().st_size for k in stored}
    expected = {k for k, size in sizes.items() if size // 8 % 2 == 0}
    assert 0 < len(expected) < len(stored), "the stand-in's rule should split this space's layers"
    assert {k for k, d in stored.items() if d["complete"] is False} == expected
    for k, d in stored.items():
        assert d["fallback"] == (["HARD_SWISH"] if k in expected else [])
        assert d["summary"] == ("gpu+cpu(HARD_SWISH)" if k in expected else "gpu")
        assert (d["gpu_ops"], d["cpu_ops"]) == ((2, 1) if k in expected else (None, None))

    (count,) = _counts(db)
    assert (count.runtime_options, count.gpu_rows, count.cpu_fallback, count.unknown, count.fallback_ops) == (
        GPU_OPTIONS, len(stored), len(expected), 0, "HARD_SWISH")
    shown = invoke("show", "--db", db).output
    assert "GPU delegate: measured rows whose ops partly ran on the CPU" in shown
    assert any(GPU_OPTIONS in ln and f" {len(expected)} " in ln and "HARD_SWISH" in ln for ln in shown.splitlines())

    table = LatencyTable.load(db, "android:Loop_GPU:GPU0001", "tflite", GPU_OPTIONS)
    assert set(table.cpu_fallback) == expected
    report = json.loads((tmp_path / "v.json").read_text())
    assert report["plan"]["cpu_fallback"] == len({c.key for c in _space_configs()} & expected) > 0
    warnings = [ln for ln in verify.output.splitlines() if ln.startswith("warning: the LUT prediction of")]
    assert len(warnings) == 1 and "partly ran on the CPU (HARD_SWISH)" in warnings[0], verify.output
    assert f"of {report['cpu_fallback_networks']} of the 3 networks" in warnings[0]
    assert report["cpu_fallback_networks"] >= 1


def _space_configs() -> list[LayerConfig]:
    return sorted(resolve_space(SPACE).all_layer_configs(), key=lambda c: c.key)


def _counts(db: Path):
    lut = open_lut(db, create=False)
    try:
        return gpu_fallback(lut)
    finally:
        lut.close()


def _write(db: Path, rows: list[MeasurementRow]) -> None:
    lut = open_lut(db)
    try:
        LutWriter(lut).write(rows)
    finally:
        lut.close()


def _row(key_cfg: LayerConfig, options_rt: RuntimeSpec, delegation: GpuDelegation | None, ms: float) -> MeasurementRow:
    after = {"profiler": {"batch": "t"} | ({"gpu_delegation": delegation_record(delegation)} if delegation else {})}
    return MeasurementRow(layer=key_cfg, device_id="android:P:1", runtime=options_rt, n=50, median_ms=ms, mean_ms=ms,
                          p10_ms=ms, p90_ms=ms, std_ms=0.0, state_after=after)


def test_fallback_note_is_one_line_and_cpu_slices_and_old_rows_show_as_before(tmp_path):
    db = tmp_path / "lut.sqlite"
    gpu = RuntimeSpec("tflite", "bm", delegate="gpu", gpu_precision_loss=False)
    cpu = RuntimeSpec("tflite", "bm")
    a, b, c = _space_configs()[:3]
    partial = GpuDelegation(applied=True, complete=False, gpu_ops=2, cpu_ops=1, fallback=("HARD_SWISH", "MEAN"))
    unknown = GpuDelegation(applied=None, complete=None)
    _write(db, [_row(a, gpu, partial, 1.0), _row(b, gpu, unknown, 1.0), _row(c, gpu, None, 1.0),
                _row(a, cpu, None, 2.0), _row(b, cpu, None, 2.0)])
    table = LatencyTable.load(db, "android:P:1", "tflite", gpu.options)
    assert table.cpu_fallback == {a.key: ("HARD_SWISH", "MEAN")}
    note = table.fallback_note([a, b, c, a])
    assert "\n" not in note and note.startswith("warning: this prediction uses 1 LUT row(s)")
    assert "(HARD_SWISH, MEAN)" in note and gpu.options in note
    assert table.fallback_note([b, c]) == ""
    assert LatencyTable.load(db, "android:P:1", "tflite", cpu.options).cpu_fallback == {}
    (count,) = _counts(db)
    assert (count.gpu_rows, count.cpu_fallback, count.unknown, count.fallback_ops) == (2, 1, 1, "HARD_SWISH,MEAN")
    assert "GPU delegate" in show_lut(db)


def test_a_lut_without_gpu_records_opens_and_shows_no_gpu_section(tmp_path):
    db = tmp_path / "lut.sqlite"
    _write(db, [_row(_space_configs()[0], RuntimeSpec("tflite", "bm"), None, 1.0)])
    with sqlite3.connect(db) as conn:  # a row as an older netadaptv2 may have left it: no JSON at all
        conn.execute("UPDATE measurements SET state_after = 'not json'")
    assert _counts(db) == []
    shown = show_lut(db)
    assert "GPU delegate" not in shown and "threads=1;delegate=xnnpack" in shown
