"""`benchmarks.bench_predict.measure_whole` with `layer_files`: the model's own LUT layer files
timed in the same batch as the whole model; with `lut`: rounds gated by the LUT's reference
layer (real ONNX files, the real local runner, a real LUT file)."""
import pytest
import torch
from torch import nn

from benchmarks.bench_predict import main, measure_whole, same_batch_files
from lut_db.layer_key import LayerConfig
from lut_db.schema import open_lut
from lut_db.writer import DeviceRecord, LutWriter
from profiler import calibrate
from profiler.agents import open_agent
from profiler.runtimes import slice_runtime
from profiler.export import ModelCache, export_module
from profiler.graph_keys import map_graph
from profiler.model_graph import load_model


@pytest.mark.slow
def test_same_batch_layers_sum_each_occurrence(tmp_path):
    small = LayerConfig("conv", 8, 8, 8, 8, kernel=1, act="relu")
    large = LayerConfig("conv", 32, 32, 64, 64, kernel=3, act="relu")
    with ModelCache(tmp_path / "cache", "onnx", jobs=1) as cache:
        a, b = cache.layers([small, large])
        # the "whole model" is `b`; its breakdown lists `b` twice and `a` once
        out = measure_whole(b, "onnx", cache, rounds=1, layer_files=[b, a, b])
    assert len(out["round_layers_now_ms"]) == 1 and len(out["round_ratio_whole_to_layers"]) == 1
    # two occurrences of the whole model's own file (minus overhead each) plus `a`: clearly more than one `b`
    assert out["layers_now_ms"] > 1.5 * out["median_ms"] - 0.1
    assert out["round_ratio_whole_to_layers"][0] == pytest.approx(out["median_ms"] / out["layers_now_ms"])


@pytest.mark.slow
def test_without_layer_files_no_same_batch_figures(tmp_path):
    cfg = LayerConfig("conv", 8, 8, 8, 8, kernel=1, act="relu")
    with ModelCache(tmp_path / "cache", "onnx", jobs=1) as cache:
        (path,) = cache.layers([cfg])
        out = measure_whole(path, "onnx", cache, rounds=2)
    assert len(out["round_medians_ms"]) == 2 and "layers_now_ms" not in out


@pytest.mark.slow
def test_same_batch_files_follow_the_breakdown(tmp_path):
    """Every breakdown line gets its file, in order, generic keys included (a MaxPool here)."""
    model = nn.Sequential(nn.Conv2d(3, 8, 3, padding=1), nn.ReLU(), nn.MaxPool2d(2), nn.Conv2d(8, 8, 1)).eval()
    onnx_path = export_module(model, (torch.randn(1, 3, 16, 16),), "onnx", tmp_path / "m.onnx", image_out=False)
    layers = map_graph(load_model(str(onnx_path))).layers
    with ModelCache(tmp_path / "cache", "onnx", jobs=1) as cache:
        files = same_batch_files(onnx_path, "onnx", cache)
        assert files == [cache.layer_path(m.key) for m in layers]
    assert any(m.generic for m in layers) and all(f.exists() for f in files)


def _lut_with_reference(db, reference: LayerConfig, anchor_ms: float) -> None:
    """A LUT whose local ONNX slice has `reference` as its drift reference, anchored at `anchor_ms`."""
    agent = open_agent("local", "onnx")
    info = agent.info()
    agent.close()
    conn = open_lut(db)
    writer = LutWriter(conn)
    writer.register_device(DeviceRecord.from_info(info))
    writer.set_calibration(info.device_id, "onnx", slice_runtime("onnx").options, calibrate.REFERENCE, anchor_ms,
                           {"key": reference.key})
    conn.close()


@pytest.mark.slow
@pytest.mark.parametrize("anchor_ms, attempts", [(1e-6, 3), (1e6, 1)])
def test_rounds_slower_than_the_luts_fast_state_are_measured_again(tmp_path, anchor_ms, attempts):
    """An anchor no run can reach: every round re-measured `remeasure` times (and the fastest
    attempt kept); an anchor every run beats: each round measured once."""
    reference = LayerConfig("conv", 8, 8, 8, 16, kernel=1, act="relu")
    _lut_with_reference(tmp_path / "lut.sqlite", reference, anchor_ms)
    cfg = LayerConfig("conv", 8, 8, 8, 8, kernel=1, act="relu")
    with ModelCache(tmp_path / "cache", "onnx", jobs=1) as cache:
        (path,) = cache.layers([cfg])
        out = measure_whole(path, "onnx", cache, rounds=2, lut=tmp_path / "lut.sqlite", remeasure=2, state_wait_s=0.5)
    assert out["round_attempts"] == [attempts, attempts] and out["reference_anchor_ms"] == anchor_ms
    assert out["round_reference_anchor_ms"] == [anchor_ms, anchor_ms]  # read again before each round
    assert all((d > 15) == (attempts > 1) for d in out["round_reference_drift_pct"])
    assert [len(p) for p in out["round_pass_medians_ms"]] == [3, 3]  # the runner's 3 passes, per round


@pytest.mark.parametrize("flag, value", [("--rounds", "0"), ("--passes", "0"), ("--remeasure", "-1")])
def test_bad_counts_are_refused_before_any_work(tmp_path, capsys, flag, value):
    with pytest.raises(SystemExit) as exit_info:
        main([flag, value, "--workdir", str(tmp_path / "w")])
    assert exit_info.value.code != 0 and flag in capsys.readouterr().err
    assert not (tmp_path / "w").exists()
