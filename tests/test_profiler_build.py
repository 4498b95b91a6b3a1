"""profiler.build (one device) / verify logic with a scripted agent and a fake export cache (fast).

The real subprocess, real exports and real runner are exercised in test_lutbuild_cli.py.
"""
from __future__ import annotations

import json
import sqlite3
from pathlib import Path

import pytest

from device_agents.contract import BadTiming, BatchResult, DeviceInfo, DeviceState, ModelTiming
from lut_db.reader import LatencyTable
from lut_db.schema import open_lut
from profiler import build_engine as engine_module
from profiler import calibrate
from profiler import verify as verify_module
from profiler.build import BuildOptions, build_lut, slice_runtime
from profiler.export import OVERHEAD_NAME
from profiler.verify import VerifyOptions, verify_lut
from profiler.verify_report import format_report
from search.spaces import get_space

OVERHEAD_MS = 0.005


class FakeCache:
    """Stands in for ModelCache: 'exports' are empty files named like the real ones."""

    def __init__(self, cache_dir, runtime, jobs=2, **kwargs):
        self.root = Path(cache_dir)
        self.root.mkdir(parents=True, exist_ok=True)
        self.exported, self.export_cpu_s = 0, 0.0
        self.networks_seen: dict[str, dict] = {}

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        pass

    def overhead(self):
        path = self.root / f"{OVERHEAD_NAME}.onnx"
        path.touch()
        return path

    def layers(self, cfgs):
        paths = []
        for cfg in cfgs:
            path = self.root / f"{cfg.digest}.onnx"
            path.touch()
            paths.append(path)
        return paths

    def networks(self, spec, subnets, seed=0):
        paths = []
        for i, subnet in enumerate(subnets):
            path = self.root / f"net{i}.onnx"
            path.write_text(json.dumps(subnet))
            paths.append(path)
        return paths


def layer_ms(cfg) -> float:
    """The scripted agent's 'true' latency of a layer (ms), before the per-invoke overhead."""
    return 0.002 + cfg.macs() * 2e-9


class ScriptedAgent:
    """A device whose layers take `layer_ms` + OVERHEAD_MS; can fail or drift on a given call
    (`drift_on_calls`: calls whose layers run 1.5x slow, or {call: factor})."""

    def __init__(self, space, fail_on_call=None, drift_on_calls=(), network_scale=1.0):
        self.by_name = {f"{c.digest}.onnx": c for c in space.all_layer_configs()}
        self.space = space
        self.calls = 0
        self.benchmarked: list[str] = []
        self.batches: list[list[str]] = []  # per call: the files benchmarked
        self.fail_on_call = fail_on_call
        self.drift_on_calls = dict(drift_on_calls) if isinstance(drift_on_calls, dict) \
            else dict.fromkeys(drift_on_calls, 1.5)
        self.network_scale = network_scale

    def info(self):
        return DeviceInfo(device_id="fake:dev", model="fake", cpu_core="1")

    def runtime_version(self, runtime):
        return f"{runtime} 0.0-test"

    def _ms(self, path: Path, drift: float) -> float:
        if path.name.startswith("overhead"):
            return OVERHEAD_MS
        if path.name.startswith("net"):
            from search.spaces.space import SubnetConfig

            cfg = SubnetConfig.from_dict(json.loads(path.read_text()))
            return OVERHEAD_MS + self.network_scale * sum(layer_ms(c) for c in self.space.layer_configs(cfg))
        return OVERHEAD_MS + layer_ms(self.by_name[path.name]) * drift

    def benchmark(self, models, settings):
        self.calls += 1
        if self.calls == self.fail_on_call:
            raise KeyboardInterrupt  # like a kill in the middle of a batch
        drift = self.drift_on_calls.get(self.calls, 1.0)
        self.batches.append([Path(p).name for p in models])
        timings = []
        for path in models:
            ms = self._ms(Path(path), drift)
            timings.append(ModelTiming(Path(path).name, 50, ms, ms, ms * 0.99, ms * 1.01, ms * 0.01, ms * 0.98,
                                       ms * 1.1, pass_medians_ms=(ms,) * settings.repeats))
            self.benchmarked.append(Path(path).name)
        return BatchResult(timings, DeviceState(), DeviceState())

    def close(self):
        pass


@pytest.fixture
def tiny():
    return get_space("mbv3-tiny")


@pytest.fixture(autouse=True)
def fake_cache(monkeypatch):
    monkeypatch.setattr(engine_module, "ModelCache", FakeCache)
    monkeypatch.setattr(verify_module, "ModelCache", FakeCache)


def get_layer(space, key):
    return next(c for c in space.all_layer_configs() if c.key == key)


def rows(db_path):
    with sqlite3.connect(db_path) as conn:
        return conn.execute("SELECT layer_key, median_ms, source, plan, measured_at, state_after, n "
                            "FROM measurements ORDER BY layer_key").fetchall()


# no probing for the fast state between batches (state_wait_s=0): the tests count benchmark calls;
# test_a_slow_state_is_waited_out_before_the_batch probes
OPTIONS = dict(batch_size=64, cache_dir=Path("unused"), settle_s=0, state_wait_s=0)


def test_build_writes_every_key_minus_the_overhead_and_keeps_the_raw_median(tiny, tmp_path):
    db = tmp_path / "lut.sqlite"
    agent = ScriptedAgent(tiny)
    report = build_lut(tiny, agent, db, "onnx", BuildOptions(**{**OPTIONS, "cache_dir": tmp_path}), progress=False)
    assert report.measured == 407 == report.planned and report.already_measured == 0
    got = rows(db)
    assert len(got) == 407 == len({r[0] for r in got})
    by_key = {c.key: c for c in tiny.all_layer_configs()}
    for key, median, source, plan, _, state_after, n in got:
        assert source == "measured" and plan == "full" and n == 50
        assert median == pytest.approx(layer_ms(by_key[key]))
        profiler = json.loads(state_after)["profiler"]
        assert profiler["raw_median_ms"] == pytest.approx(median + OVERHEAD_MS)
        assert profiler["overhead_ms"] == OVERHEAD_MS and profiler["attempts"] == 1
        assert profiler["pass_medians_ms"] == [pytest.approx(median + OVERHEAD_MS)] * 3  # the runner's 3 passes
    table = LatencyTable.load(db, "fake:dev", "onnx", slice_runtime("onnx").options)
    assert table.overhead_ms == pytest.approx(OVERHEAD_MS)
    cfg = tiny.max_config()
    assert table.predict(tiny.layer_configs(cfg)) == pytest.approx(
        OVERHEAD_MS + sum(layer_ms(c) for c in tiny.layer_configs(cfg)))


def test_resume_measures_nothing_twice(tiny, tmp_path):
    db = tmp_path / "lut.sqlite"
    options = BuildOptions(**{**OPTIONS, "cache_dir": tmp_path, "limit": 100})
    first = build_lut(tiny, ScriptedAgent(tiny), db, "tflite", options, progress=False)
    stamps = {r[0]: r[4] for r in rows(db)}
    assert first.measured == 100 and len(stamps) == 100
    agent = ScriptedAgent(tiny)
    second = build_lut(tiny, agent, db, "tflite", BuildOptions(**{**OPTIONS, "cache_dir": tmp_path}), progress=False)
    assert second.already_measured == 100 and second.measured == 307
    layer_files = [n for n in agent.benchmarked if not n.startswith("overhead")]
    measured_again = {agent.by_name[n].key for n in layer_files} & set(stamps)
    # only the drift reference layer (timed in every batch, never written twice) may repeat
    ref = json.loads(rows(db)[0][5])["profiler"]["reference_key"]
    assert measured_again <= {ref}
    assert {r[0]: r[4] for r in rows(db) if r[0] in stamps} == stamps
    third = build_lut(tiny, ScriptedAgent(tiny), db, "tflite", BuildOptions(**{**OPTIONS, "cache_dir": tmp_path}),
                      progress=False)
    assert third.measured == 0 and len(rows(db)) == 407


def test_a_kill_mid_batch_keeps_committed_batches_and_no_half_batch(tiny, tmp_path):
    db = tmp_path / "lut.sqlite"
    agent = ScriptedAgent(tiny, fail_on_call=3)
    with pytest.raises(KeyboardInterrupt):
        build_lut(tiny, agent, db, "onnx", BuildOptions(**{**OPTIONS, "cache_dir": tmp_path}), progress=False)
    assert len(rows(db)) == 2 * 64
    report = build_lut(tiny, ScriptedAgent(tiny), db, "onnx", BuildOptions(**{**OPTIONS, "cache_dir": tmp_path}),
                       progress=False)
    assert report.measured == 407 - 128 and len(rows(db)) == 407


def test_a_drifting_batch_is_measured_again(tiny, tmp_path):
    db = tmp_path / "lut.sqlite"
    agent = ScriptedAgent(tiny, drift_on_calls={2})  # batch 2's first attempt runs 50% slow
    report = build_lut(tiny, agent, db, "onnx", BuildOptions(**{**OPTIONS, "cache_dir": tmp_path, "limit": 192}),
                       progress=False, log=lambda msg: None)
    assert agent.calls == 4 and report.remeasured_batches == 1 and report.drifted_batches == 0
    attempts = [json.loads(r[5])["profiler"]["attempts"] for r in rows(db)]
    assert sorted(attempts).count(2) == 64
    by_key = {c.key: c for c in tiny.all_layer_configs()}
    assert all(r[1] == pytest.approx(layer_ms(by_key[r[0]])) for r in rows(db))  # the drifted values were dropped


def test_a_batch_faster_than_the_anchor_is_kept_and_the_anchor_moves_to_the_fast_state(tiny, tmp_path):
    db = tmp_path / "lut.sqlite"
    agent = ScriptedAgent(tiny, drift_on_calls={1})  # batch 1 (no anchor yet) runs in the slow state
    report = build_lut(tiny, agent, db, "onnx", BuildOptions(**{**OPTIONS, "cache_dir": tmp_path, "limit": 192}),
                       progress=False, log=lambda msg: None)
    # batches 2 and 3 ran 33% faster than batch 1's anchor: the fast state, not a drift to undo
    assert agent.calls == 3 and report.remeasured_batches == 0 and report.drifted_batches == 0
    with sqlite3.connect(db) as conn:
        anchor, detail = conn.execute("SELECT value_ms, detail FROM calibration WHERE name = 'reference'").fetchone()
    ref = get_layer(tiny, json.loads(detail)["key"])
    assert anchor == pytest.approx(OVERHEAD_MS + layer_ms(ref))  # the fast batches' reference, not the median
    assert json.loads(detail)["median_ms"] == pytest.approx(OVERHEAD_MS + layer_ms(ref))


def test_a_batch_slow_in_every_attempt_keeps_its_fastest_attempt(tiny, tmp_path):
    db = tmp_path / "lut.sqlite"
    said = []
    agent = ScriptedAgent(tiny, drift_on_calls={2: 2.0, 3: 1.6})  # batch 2: both attempts slow, the second less
    report = build_lut(tiny, agent, db, "onnx", BuildOptions(**{**OPTIONS, "cache_dir": tmp_path, "limit": 128}),
                       progress=False, log=said.append)
    assert agent.calls == 3 and report.remeasured_batches == 1 and report.drifted_batches == 1
    by_key = {c.key: c for c in tiny.all_layer_configs()}
    second = [r for r in rows(db) if json.loads(r[5])["profiler"]["attempts"] == 2]
    assert len(second) == 64
    assert all(r[1] == pytest.approx(1.6 * layer_ms(by_key[r[0]])) for r in second)  # the 1.6x attempt, not 2.0x
    ref = by_key[json.loads(second[0][5])["profiler"]["reference_key"]]
    drift = 100 * ((OVERHEAD_MS + 1.6 * layer_ms(ref)) / (OVERHEAD_MS + layer_ms(ref)) - 1)
    assert drift > 15  # still slower than the fast state: written, counted as drifted
    assert all(json.loads(r[5])["profiler"]["reference_drift_pct"] == pytest.approx(drift, abs=1e-3) for r in second)
    assert any("slower than the fast state after 2 attempt(s)" in line for line in said)


def test_a_slow_state_is_waited_out_before_the_batch(tiny, tmp_path):
    db = tmp_path / "lut.sqlite"
    # call 1: batch 1 (no anchor: no probe); calls 2-3: probes in the slow state, 4: a fast probe, 5: batch 2
    agent = ScriptedAgent(tiny, drift_on_calls={2: 1.5, 3: 1.5})
    options = BuildOptions(**{**OPTIONS, "cache_dir": tmp_path, "limit": 128, "state_wait_s": 30,
                              "state_poll_s": 0})
    report = build_lut(tiny, agent, db, "onnx", options, progress=False, log=lambda msg: None)
    assert agent.calls == 5 and report.remeasured_batches == 0 and report.drifted_batches == 0
    assert [len(names) for names in agent.batches][1:4] == [2, 2, 2]  # the probes: overhead model + reference
    by_key = {c.key: c for c in tiny.all_layer_configs()}
    assert all(r[1] == pytest.approx(layer_ms(by_key[r[0]])) for r in rows(db))  # every row from the fast state


def test_a_probe_with_a_bad_timing_ends_the_wait_and_the_batch_runs(tiny, tmp_path):
    """A probe the device times impossibly (BadTiming) stops the wait at once: the batch that
    follows checks its own timings, so nothing waits out `state_wait_s` on a broken probe."""
    class BadProbe(ScriptedAgent):
        def benchmark(self, models, settings):
            if self.calls == 1:  # call 2: the first probe, before batch 2
                self.calls += 1
                raise BadTiming("reference.onnx: the device reported median_ms = 0 ms, expected > 0")
            return super().benchmark(models, settings)

    db = tmp_path / "lut.sqlite"
    agent = BadProbe(tiny)
    options = BuildOptions(**{**OPTIONS, "cache_dir": tmp_path, "limit": 128, "state_wait_s": 30,
                              "state_poll_s": 0})
    report = build_lut(tiny, agent, db, "onnx", options, progress=False, log=lambda msg: None)
    # batch 1, one probe, batch 2: a wait that went on would poll again (state_poll_s = 0)
    assert agent.calls == 3 and report.measured == 128 and len(rows(db)) == 128


def test_fast_state_is_the_low_tenth_percentile_of_the_batches():
    assert calibrate.fast_state_ms([0.10]) == 0.10
    assert calibrate.fast_state_ms([0.11, 0.07, 0.10, 0.12]) == 0.07  # up to 10 batches: the lowest
    batches = [0.065, 0.06, *[0.07] * 9, *[0.11] * 9]  # 20 batches: the 2nd lowest, not the one lucky batch
    assert calibrate.fast_state_ms(batches) == 0.065


def test_sparse_plan_writes_interpolated_rows_that_never_count_as_measured(tiny, tmp_path):
    db = tmp_path / "lut.sqlite"
    report = build_lut(tiny, ScriptedAgent(tiny), db, "onnx",
                       BuildOptions(**{**OPTIONS, "cache_dir": tmp_path, "plan": "sparse"}), progress=False)
    got = rows(db)
    assert report.measured + report.interpolated == 407 == len(got)
    assert report.not_interpolated == 0
    interpolated = [r for r in got if r[2] == "interpolated"]
    assert len(interpolated) == report.interpolated > 150
    assert all(r[3] == "sparse" and r[6] == 0 for r in interpolated)
    again = build_lut(tiny, ScriptedAgent(tiny), db, "onnx",
                      BuildOptions(**{**OPTIONS, "cache_dir": tmp_path, "plan": "sparse"}), progress=False)
    assert again.measured == 0
    # conv/linear latency here is linear in MACs, so bilinear interpolation is nearly exact
    by_key = {c.key: c for c in tiny.all_layer_configs()}
    errors = [abs(r[1] / layer_ms(by_key[r[0]]) - 1) for r in interpolated]
    assert max(errors) < 0.05


def test_user_errors_leave_the_file_untouched(tiny, tmp_path):
    from lut_db.errors import NotALutDatabase
    from profiler.errors import ProfilerError
    from search.spaces import UnknownSpace

    bad = tmp_path / "bad.sqlite"
    bad.write_bytes(b"not a database at all")
    with pytest.raises(NotALutDatabase):
        build_lut(tiny, ScriptedAgent(tiny), bad, "onnx", BuildOptions(cache_dir=tmp_path), progress=False)
    assert bad.read_bytes() == b"not a database at all"
    fresh = tmp_path / "fresh.sqlite"
    with pytest.raises(UnknownSpace):
        build_lut("no-such-space", ScriptedAgent(tiny), fresh, "onnx", BuildOptions(cache_dir=tmp_path))
    with pytest.raises(ProfilerError):
        build_lut(tiny, ScriptedAgent(tiny), fresh, "onnx", BuildOptions(cache_dir=tmp_path, plan="dense"))
    assert not fresh.exists()


def test_verify_reports_lut_and_mac_proxy_figures(tiny, tmp_path):
    db = tmp_path / "lut.sqlite"
    build_lut(tiny, ScriptedAgent(tiny), db, "onnx", BuildOptions(**{**OPTIONS, "cache_dir": tmp_path}),
              progress=False)
    agent = ScriptedAgent(tiny, network_scale=1.02)  # networks run 2% slower than their layers' sum
    result = verify_lut(tiny, agent, db, "onnx", VerifyOptions(samples=12, rounds=2, cache_dir=tmp_path),
                        progress=False)
    report = result.to_json_dict()  # what `--json` writes
    for key in ("n", "mape_pct", "within_5pct", "within_10pct", "spearman", "mac_proxy", "samples", "plan",
                "device", "runtime", "runtime_version", "noise"):
        assert key in report, key
    for key in ("n", "mape_pct", "within_5pct", "within_10pct", "spearman"):
        assert key in report["mac_proxy"], key
    assert report["n"] == 12 == len(report["samples"])
    assert report["samples"][0]["kind"] == "max" and report["samples"][1]["kind"] == "min"
    assert report["within_5pct"] == 1.0 and report["spearman"] > 0.99
    assert 1.0 < report["mape_pct"] < 2.0 and report["bias_pct"] < 0
    assert report["plan"]["measured"] == 407 and report["plan"]["missing"] == 0
    json.dumps(report)  # serializable as is
    from profiler.plots import plot_verify
    from profiler.verify_report import format_report

    assert "MAC proxy" in format_report(result)
    png = plot_verify(result, tmp_path / "v.png")
    assert png.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"


def test_verify_runs_a_process_again_when_its_reference_is_slower_than_the_builds_fast_state(tiny, tmp_path):
    db = tmp_path / "lut.sqlite"
    build_lut(tiny, ScriptedAgent(tiny), db, "onnx", BuildOptions(**{**OPTIONS, "cache_dir": tmp_path}),
              progress=False)
    # each process: a probe of the reference alone, then the process; call 2 (round 1's process) runs slow
    agent = ScriptedAgent(tiny, drift_on_calls={2: 1.5})
    result = verify_lut(tiny, agent, db, "onnx", VerifyOptions(samples=12, rounds=2, cache_dir=tmp_path),
                        progress=False)
    assert [len(names) for names in agent.batches] == [2, 14, 2, 14, 2, 14]  # probe, process (overhead, ref, 12 nets)
    assert result.noise.remeasured_processes == 1
    assert abs(result.noise.reference_drift_pct) < 1e-6  # the slow attempt was not kept
    assert "1 benchmark process(es) run again" in format_report(result)


def test_verify_without_a_slice_is_a_one_line_user_error(tiny, tmp_path):
    from lut_db.errors import LutError

    db = tmp_path / "lut.sqlite"
    open_lut(db).close()
    with pytest.raises(LutError, match="no measurements for device 'fake:dev'"):
        verify_lut(tiny, ScriptedAgent(tiny), db, "onnx", VerifyOptions(samples=3, cache_dir=tmp_path),
                   progress=False)
