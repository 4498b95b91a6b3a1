"""`lutbuild build --passes N`: every key measured N times in separate batches, each key keeping
the whole row of its lowest-p10 pass (`profiler/passes.py`), and `LatencyTable.load(statistic=)`
(docs/lut.md "INT8 slices"). Real SQLite files; the builds export real ONNX files and time them
with ONNX Runtime on this host."""
from __future__ import annotations

import json
import sqlite3
import time

import pytest

from lut_db.layer_key import LayerConfig, RuntimeSpec
from lut_db.reader import LatencyTable
from lut_db.schema import open_lut
from lut_db.writer import LutWriter, MeasurementRow
from lutbuild_helpers import invoke, micro_space_registered, one_line_error
from profiler.build import BuildOptions, build_lut
from profiler.errors import ProfilerError
from profiler.passes import PASS_P10, PASSES, keep_lowest, pass_todo
from profiler.plan import make_plan
from profiler.spaces import resolve_space

ONNX = RuntimeSpec("onnx", version="onnxruntime 1.0")
CONV = LayerConfig.from_key("conv:8x8:8->16:k1s1g1:relu:r0:float32")
DW = LayerConfig.from_key("dwconv:8x8:16->16:k3s1g16:relu:r0:float32")


def measured(cfg: LayerConfig, median: float, p10: float, batch: str, **profiler) -> MeasurementRow:
    return MeasurementRow(layer=cfg, device_id="dev", runtime=ONNX, n=10, median_ms=median, mean_ms=median,
                          p10_ms=p10, p90_ms=median * 1.2, std_ms=0.01,
                          state_after={"profiler": {"batch": batch, **profiler}})


def test_a_further_pass_keeps_the_whole_row_of_the_lower_p10_and_records_every_pass():
    first = measured(CONV, 1.0, 0.9, "b1")
    slow = measured(CONV, 1.6, 1.5, "b2")
    row, lowered = keep_lowest(first, slow)
    assert not lowered and row.median_ms == 1.0 and row.state_after["profiler"]["batch"] == "b1"
    assert row.state_after["profiler"][PASSES] == 2 and row.state_after["profiler"][PASS_P10] == [0.9, 1.5]
    fast = measured(CONV, 0.85, 0.8, "b3")
    row, lowered = keep_lowest(row, fast)  # never a mix: median, p90 and provenance come with the p10
    assert lowered and (row.median_ms, row.p10_ms, row.p90_ms) == (0.85, 0.8, 0.85 * 1.2)
    assert row.state_after["profiler"]["batch"] == "b3"
    assert row.state_after["profiler"][PASSES] == 3 and row.state_after["profiler"][PASS_P10] == [0.9, 1.5, 0.8]
    same = measured(CONV, 0.7, 0.8, "b4")  # equal p10: the row already there stays
    assert keep_lowest(row, same)[0].state_after["profiler"]["batch"] == "b3"


def test_pass_k_holds_the_keys_whose_row_has_seen_fewer_than_k_passes_in_plan_order():
    keys = [CONV, DW]
    assert pass_todo(keys, {}, 2) == [[CONV, DW], [CONV, DW]]
    assert pass_todo(keys, {CONV.key: 2, DW.key: 1}, 3) == [[], [DW], [CONV, DW]]
    assert pass_todo(keys, {CONV.key: 1, DW.key: 1}, 1) == [[]]


def test_latency_table_reads_the_p10_statistic_and_medians_by_default(tmp_path):
    db_path = tmp_path / "lut.sqlite"
    db = open_lut(db_path)
    LutWriter(db).write([measured(CONV, 1.0, 0.8, "b1"),
                         MeasurementRow(layer=DW, device_id="dev", runtime=ONNX, n=0, median_ms=0.5,
                                        source="interpolated")])  # an older interpolated row: no p10
    db.close()
    median = LatencyTable.load(db_path, "dev", "onnx", ONNX.options)
    assert median.statistic == "median" and median.latency(CONV) == 1.0 and median.latency(DW) == 0.5
    p10 = LatencyTable.load(db_path, "dev", "onnx", ONNX.options, statistic="p10")
    assert p10.statistic == "p10" and p10.latency(CONV) == 0.8
    assert p10.missing([CONV, DW]) == [DW]  # no p10 stored: missing, never its median
    with pytest.raises(ValueError, match="statistic: expected one of median, p10, got 'p90'"):
        LatencyTable.load(db_path, "dev", "onnx", ONNX.options, statistic="p90")


def test_passes_below_one_are_refused_before_the_file_is_touched(tmp_path):
    db = tmp_path / "lut.sqlite"
    result = invoke("build", "--space", "mbv3-tiny", "--runtime", "onnx", "--db", db, "--passes", "0",
                    "--cache-dir", tmp_path / "c")
    assert result.exit_code == 1 and "--passes" in one_line_error(result.stderr)
    with pytest.raises(ProfilerError, match=r"--passes: expected an integer >= 1 .*got 0"):
        build_lut("mbv3-tiny", object(), db, "onnx", BuildOptions(passes=0))
    assert not db.exists()


@pytest.fixture
def passes_space():
    """A 14-key space (11 measured + 3 interpolated in the sparse plan), registered in this process."""
    with micro_space_registered("test-passes", expand=3) as name:
        yield name


def _rows(db) -> dict[str, tuple]:
    """key -> (source, median, p10, measured_at, state_after["profiler"])."""
    with sqlite3.connect(db) as conn:
        return {key: (source, median, p10, at, json.loads(after).get("profiler", {}))
                for key, source, median, p10, at, after in conn.execute(
                    "SELECT layer_key, source, median_ms, p10_ms, measured_at, state_after FROM measurements")}


def _coherent(row: tuple) -> bool:
    """The row's statistics all come from the batch its provenance names (overhead subtracted)."""
    _, median, p10, _, profiler = row
    overhead = profiler["overhead_ms"]
    return (median == pytest.approx(max(0.0, profiler["raw_median_ms"] - overhead))
            and p10 == pytest.approx(max(0.0, profiler["raw_p10_ms"] - overhead)))


def test_a_second_pass_lowers_slow_rows_keeps_fast_ones_resumes_and_reinterpolates(passes_space, tmp_path):
    db, cache = tmp_path / "lut.sqlite", tmp_path / "cache"
    common = ["build", "--space", passes_space, "--runtime", "onnx", "--db", db, "--cache-dir", cache, "--quiet",
              "--jobs", "1", "--repeats", "1", "--plan", "sparse"]
    result = invoke(*common)  # --passes 1: today's build, no pass record
    assert result.exit_code == 0, result.output + result.stderr
    assert "measured 11 key(s) now" in result.output and "pass 2" not in result.output
    rows = _rows(db)
    assert all(PASSES not in r[4] for r in rows.values())
    measured = [r[4] for r in rows.values() if r[0] == "measured"]  # one runner pass: no per-pass record
    assert len(measured) == 11 and not any("pass_medians_ms" in p or "passes_kept" in p for p in measured)
    plan = make_plan(resolve_space(passes_space), "sparse")
    slow, fast = plan.measure[0].key, plan.measure[1].key
    with sqlite3.connect(db) as conn:  # as if pass 1 caught `slow` in the host's slow state
        conn.execute("UPDATE measurements SET p10_ms = 1000 WHERE layer_key = ? OR source = 'interpolated'", [slow])
        conn.execute("UPDATE measurements SET p10_ms = 0 WHERE layer_key = ?", [fast])
    before = _rows(db)

    result = invoke(*common, "--passes", "2", "--limit", "4")  # killed after 4 keys of pass 2, say
    assert result.exit_code == 0, result.output + result.stderr
    assert "measured 0 key(s) now, 11 before" in result.output and "pass 2: re-measured 4 key(s)" in result.output
    rows = _rows(db)
    assert rows[slow][4][PASS_P10][0] == 1000 and rows[slow][2] == rows[slow][4][PASS_P10][1] < 1000
    assert rows[slow][4]["batch"] != before[slow][4]["batch"] and _coherent(rows[slow])  # the new row, whole
    assert rows[fast][2] == 0 and rows[fast][4][PASS_P10][0] == 0  # kept as it was, its record added
    assert rows[fast][4]["batch"] == before[fast][4]["batch"] and rows[fast][3] == before[fast][3]
    again = [c.key for c in plan.measure[:4]]
    assert all(rows[k][4][PASSES] == 2 and rows[k][2] == min(rows[k][4][PASS_P10]) for k in again)
    assert all(PASSES not in rows[k][4] for k in rows if k not in again)
    assert all(r[2] == 1000 for r in rows.values() if r[0] == "interpolated")  # incomplete: not yet
    first_four = {k: rows[k] for k in again}

    result = invoke(*common, "--passes", "2")  # the resumed run re-measures only the other 7
    assert result.exit_code == 0, result.output + result.stderr
    assert "pass 2: re-measured 7 key(s)" in result.output and "interpolated 3" in result.output
    rows = _rows(db)
    assert {k: rows[k] for k in again} == first_four
    measured_rows = [r for r in rows.values() if r[0] == "measured"]
    assert len(measured_rows) == 11 and all(r[4][PASSES] == 2 for r in measured_rows)
    assert all(r[2] == min(r[4][PASS_P10]) for r in measured_rows)
    assert all(_coherent(r) for k, r in rows.items() if r[0] == "measured" and k != fast)
    lowered = sum(r[4][PASS_P10][1] < r[4][PASS_P10][0] for k, r in rows.items() if r[0] == "measured"
                  and k not in again)
    assert f"pass 2: re-measured 7 key(s), {lowered} row(s) lowered" in result.output
    interpolated = [r for r in rows.values() if r[0] == "interpolated"]
    assert len(interpolated) == 3 and all(r[2] < 1000 for r in interpolated)  # re-interpolated after the passes
    p10 = LatencyTable.load(db, _device(db), "onnx", "threads=1;delegate=cpu", statistic="p10")
    assert p10.latency(LayerConfig.from_key(slow)) == rows[slow][2]

    time.sleep(1.05)  # measured_at has 1-s resolution: a rewritten row would show a new one
    result = invoke(*common, "--passes", "2")  # done: nothing measured again, nothing rewritten
    assert result.exit_code == 0 and "measured 0 key(s) now" in result.output and "pass 2" not in result.output
    assert _rows(db) == rows


def _device(db) -> str:
    with sqlite3.connect(db) as conn:
        return conn.execute("SELECT DISTINCT device_id FROM measurements").fetchone()[0]
