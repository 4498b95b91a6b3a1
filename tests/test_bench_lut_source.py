"""`benchmarks.bench_lut_source.ensure_lut`: this host's LUT of a space, built or completed, then checked.

Real builds on this host (local agent, real ONNX / TFLite files run by their runtimes) of a
12-key space registered for the test, into a temporary export cache."""
import sqlite3

import pytest

from benchmarks.bench_lut_source import ensure_lut, main
from device_agents.local import LocalAgent
from lut_db import LatencyTable
from lut_db.errors import MissingLatencyError, NotALutDatabase, UserError
from profiler.build import BuildOptions, build_lut, slice_runtime
from profiler.predictor import LatencyPredictor
from search.spaces import get_space
from lutbuild_helpers import micro_space_registered

MICRO = "test-micro-lut-source"


@pytest.fixture
def micro_space():
    """A 12-key space (one inverted-residual block at 8x8) registered in this process."""
    with micro_space_registered(MICRO):
        yield get_space(MICRO)


def _rows(db) -> dict[str, str]:
    with sqlite3.connect(db) as conn:
        return dict(conn.execute("SELECT layer_key, measured_at FROM measurements").fetchall())


def _table(db, runtime: str) -> LatencyTable:
    return LatencyTable.load(db, LocalAgent().info().device_id, runtime, slice_runtime(runtime).options)


@pytest.mark.slow
@pytest.mark.parametrize("runtime", ["onnx", "tflite"])
def test_completes_a_partial_lut_without_measuring_anything_twice(micro_space, tmp_path, runtime):
    db, cache = tmp_path / "lut" / "micro.sqlite", tmp_path / "cache"
    db.parent.mkdir()
    build_lut(micro_space, LocalAgent(), db, runtime, BuildOptions(cache_dir=cache, limit=4, batch_size=4),
              progress=False)  # a build cut short: 4 keys of 12
    partial = _rows(db)
    assert len(partial) == 4
    with pytest.raises(MissingLatencyError):
        LatencyPredictor(micro_space, _table(db, runtime)).check()

    lines: list[str] = []
    assert ensure_lut(MICRO, db, runtime, log=lines.append, options=BuildOptions(cache_dir=cache)) == db
    rows = _rows(db)
    assert set(rows) == {layer.key for layer in micro_space.all_layer_configs()}  # the full plan: every key
    assert {k: rows[k] for k in partial} == partial  # the 4 measured before were not measured again
    LatencyPredictor(micro_space, _table(db, runtime)).check()
    assert any("4 before" in line for line in lines)

    lines.clear()
    assert ensure_lut(MICRO, db, runtime, log=lines.append, options=BuildOptions(cache_dir=cache)) == db
    assert _rows(db) == rows and any("measured 0 key(s) now" in line for line in lines)


def test_unknown_space_fails_before_creating_the_file(tmp_path):
    db = tmp_path / "new" / "lut.sqlite"
    with pytest.raises(UserError, match="no-such-space"):
        ensure_lut("no-such-space", db)
    assert not db.parent.exists()


def test_a_file_that_is_not_a_lut_is_left_untouched(tmp_path, capsys):
    bad = tmp_path / "notes.sqlite"
    bad.write_text("not a database\n")
    with pytest.raises(NotALutDatabase):
        ensure_lut("mbv3-tiny", bad, options=BuildOptions(cache_dir=tmp_path / "cache"))
    assert main(["--space", "mbv3-tiny", "--db", str(bad), "--cache-dir", str(tmp_path / "cache")]) == 1
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and str(bad) in err[0]
    assert bad.read_text() == "not a database\n"
