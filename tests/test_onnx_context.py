"""`--context nchwc`: ONNX rows timed between layout-keeping neighbours (docs/lut.md,
"ONNX in-context rows"). The default leaves every options string byte-identical; the
wrapped and pair models really keep ONNX Runtime's NCHWc layout around the layer (read back
from the session's optimized graph); a row is the wrapped model less half its pair models."""
from __future__ import annotations

import json
import sqlite3
from pathlib import Path

import numpy as np
import onnx
import onnxruntime as ort
import pytest
import torch

from device_agents.contract import BatchResult, DeviceState, ModelTiming
from lut_db.layer_key import LayerConfig
from lut_db.reader import BOUNDARY, OVERHEAD, LatencyTable
from lut_db.schema import open_lut
from lut_db.writer import LutWriter, MeasurementRow
from profiler.context_boundary import input_layers
from profiler.context_models import Tensor, boundary_tensors, context_row_ms, input_boundary_ms, wrap_layer
from profiler.errors import ProfilerError
from profiler.export import ModelCache, layer_module
from profiler.measure import BatchMeasurement, ContextPlan, context_plan
from profiler.plan import make_plan
from profiler.runtimes import slice_runtime
from profiler.spaces import resolve_space
from lutbuild_helpers import invoke

DW = LayerConfig.from_key("dwconv:16x16:40->40:k3s2g40:relu:r0:float32")
ADD = LayerConfig.from_key("add:16x16:8->24:k1s1g1:none:r0:float32")
GAP = LayerConfig.from_key("gap:8x8:48->48:k1s1g1:none:r0:float32")
LINEAR = LayerConfig.from_key("linear:1x1:48->64:k1s1g1:hswish:r0:float32")


def test_default_context_leaves_options_unchanged_and_nchwc_adds_context():
    assert slice_runtime("onnx").options == "threads=1;delegate=cpu"
    assert slice_runtime("onnx", context="alone").options == "threads=1;delegate=cpu"
    assert type(slice_runtime("onnx", context="alone")).__name__ == "RuntimeSpec"
    assert slice_runtime("onnx", 2, "1.32.0", context="nchwc").options == "threads=2;delegate=cpu;context=nchwc"
    assert slice_runtime("onnx", context="nchwc").version == ""


@pytest.mark.parametrize("kwargs, needle", [
    ({"runtime": "tflite", "context": "nchwc"}, "--context nchwc: only with --runtime onnx"),
    ({"runtime": "onnx", "context": "nhwc"}, "--context: unknown layer context 'nhwc'"),
    ({"runtime": "onnx", "context": "nchwc", "ort_opt": "extended"}, "only at --ort-opt all"),
    ({"runtime": "onnx", "context": "nchwc", "dtype": "int8"}, "only for float32"),
])
def test_bad_contexts_are_refused(kwargs, needle):
    with pytest.raises(ProfilerError, match=needle.replace("(", r"\(")):
        slice_runtime(**kwargs)


@pytest.mark.parametrize("args, needle", [
    (["--runtime", "onnx", "--context", "nhwc"], "'nhwc' is not one of 'alone', 'nchwc', 'cold'"),
    (["--runtime", "tflite", "--context", "nchwc"], "--context nchwc: only with --runtime onnx"),
])
def test_cli_refuses_bad_context_in_one_line_exit_1_before_touching_the_lut(args, needle, tmp_path):
    db = tmp_path / "lut.sqlite"
    result = invoke("build", "--space", "mbv3-tiny", "--db", db, *args, "--cache-dir", tmp_path / "c")
    assert result.exit_code == 1, result.output
    assert needle in result.output and len(result.output.strip().splitlines()) == 1
    assert not db.exists()


def test_boundary_tensors_follow_the_op_kinds_io():
    assert boundary_tensors(DW) == (Tensor(40, 16, 16), Tensor(40, 8, 8))
    assert boundary_tensors(ADD) == (Tensor(8, 16, 16), Tensor(24, 16, 16), Tensor(24, 16, 16))
    assert boundary_tensors(GAP) == (Tensor(48, 8, 8),)  # a vector out: no neighbour after it
    assert boundary_tensors(LINEAR) == ()


def test_wrapped_model_computes_the_layer_between_its_neighbours():
    module, inputs, _, _ = layer_module(ADD)
    wrapped = wrap_layer(ADD, module)
    with torch.no_grad():
        expected = wrapped.post(module(wrapped.pre[0](inputs[0]), wrapped.pre[1](inputs[1])))
        assert torch.equal(wrapped(*inputs), expected)
        assert not torch.allclose(wrapped(*inputs), module(*inputs))  # the neighbours are not identities


def optimized_ops(path: Path, tmp_path: Path) -> list[tuple[str, str]]:
    """(domain, op type) of the graph ONNX Runtime runs at ORT_ENABLE_ALL."""
    options = ort.SessionOptions()
    options.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_ALL
    options.optimized_model_filepath = str(tmp_path / "optimized.onnx")
    options.log_severity_level = 3
    ort.InferenceSession(str(path), options, providers=["CPUExecutionProvider"])
    return [(n.domain, n.op_type) for n in onnx.load(options.optimized_model_filepath).graph.node]


def test_in_context_files_keep_the_layer_in_nchwc_with_one_reorder_each_way(tmp_path):
    with ModelCache(tmp_path / "cache", "onnx", jobs=1, context="nchwc") as cache:
        [wrapped] = cache.layers([DW])
        pairs = [cache.pair_path(t) for t in boundary_tensors(DW)]
        assert wrapped.parent.name == "layers" and "context-nchwc" in str(wrapped)
        assert all(p.exists() for p in pairs)
        alone = ModelCache(tmp_path / "cache", "onnx", jobs=1).layer_path(DW)
        assert alone != wrapped and not alone.exists()  # the plain slice's file is another file
        ops = optimized_ops(wrapped, tmp_path)
        if not any(d == "com.microsoft.nchwc" for d, _ in ops):
            pytest.skip(f"this CPU's ONNX Runtime applies no NCHWc layout ({ops})")
        # neighbour, the layer, neighbour: all three blocked convs between one reorder in and one out
        assert [t for _, t in ops] == ["ReorderInput", "Conv", "Conv", "Conv", "ReorderOutput"]
        assert all(d == "com.microsoft.nchwc" for d, _ in ops)
        assert [t for _, t in optimized_ops(pairs[0], tmp_path)] == ["ReorderInput", "Conv", "Conv", "ReorderOutput"]
        plan = context_plan(cache, [DW, DW, GAP], "nchwc")
        assert context_plan(cache, [DW], "alone") is None
        assert not cache.two_inputs_path().exists()  # no two-input layer yet
        cache.layers([ADD])
        with_add = context_plan(cache, [DW, ADD], "nchwc")
        assert with_add.inputs == (1, 2) and with_add.pairs[with_add.two_inputs] == cache.two_inputs_path()
        assert cache.two_inputs_path().exists() and with_add.two_inputs == len(with_add.pairs) - 1
    # each shape once (sorted by channels, height, width), shared by the keys that need it
    assert [p.name for p in plan.pairs] == ["pair-c40-8x8.onnx", "pair-c40-16x16.onnx", "pair-c48-8x8.onnx"]
    assert plan.of_layer == ((1, 0), (1, 0), (2,))


def timing(name: str, ms: float) -> ModelTiming:
    return ModelTiming(name=name, n=50, median_ms=ms, mean_ms=ms, p10_ms=ms * 0.9, p90_ms=ms * 1.1, std_ms=0.001,
                       min_ms=ms * 0.8, max_ms=ms * 1.3)


def test_a_row_is_the_wrapped_model_less_half_its_pairs_and_pays_no_overhead():
    ov = 0.006
    names = ["ov", "ref", "w-dw", "w-gap", "w-linear", "p40a", "p40b", "p48"]
    values = [ov, 0.05, 0.040, 0.020, 0.012, 0.030, 0.016, 0.018]
    result = BatchResult([timing(n, v) for n, v in zip(names, values)], DeviceState(), DeviceState())
    plan = ContextPlan((Path("p40a"), Path("p40b"), Path("p48")), ((0, 1), (2,), ()))
    m = BatchMeasurement(result, 0.05, ov, 0.0, 1, plan)
    dw, gap, linear = m.layer_timings
    assert dw.median_ms == pytest.approx(0.040 - 0.5 * (0.030 + 0.016))  # two pairs: no overhead term
    assert gap.median_ms == pytest.approx(0.020 - 0.5 * 0.018 - 0.5 * ov)
    assert linear.median_ms == pytest.approx(0.012 - ov)  # no image tensor: the plain row
    assert dw.p10_ms == pytest.approx(0.9 * dw.median_ms) and dw.name == "w-dw"
    assert m.row_overhead_ms == 0.0 and BatchMeasurement(result, 0.05, ov, 0.0, 1).row_overhead_ms == ov
    assert m.context_detail(0) == {"context": {"wrapped_median_ms": 0.040,
                                               "pairs_median_ms": [["p40a", 0.030], ["p40b", 0.016]]}}
    assert context_row_ms(0.01, [0.01, 0.01, 0.01], ov, 1) == pytest.approx(0.01 - 0.015 + 0.5 * ov)


def test_a_two_input_layer_also_gives_back_the_second_inputs_binding_cost():
    ov, two = 0.006, 0.0085  # the two-input overhead model: 2.5 us more per invoke than one input
    names = ["ov", "ref", "w-add", "p8", "p24", "add2"]
    values = [ov, 0.05, 0.030, 0.016, 0.018, two]
    result = BatchResult([timing(n, v) for n, v in zip(names, values)], DeviceState(), DeviceState())
    plan = ContextPlan((Path("p8"), Path("p24"), Path("add2")), ((0, 1, 1),), (2,), 2)
    [add] = BatchMeasurement(result, 0.05, ov, 0.0, 1, plan).layer_timings
    assert add.median_ms == pytest.approx(0.030 - 0.5 * (0.016 + 2 * 0.018) + 0.5 * ov - (two - ov))
    assert BatchMeasurement(result, 0.05, ov, 0.0, 1, plan).context_detail(0)["context"]["two_inputs_ms"] == two
    with pytest.raises(ValueError, match="2-input layer"):
        context_row_ms(0.03, [0.01], ov, 2)


def test_input_boundary_is_what_reading_the_graph_input_costs_beyond_the_row():
    ov, pre, rin, rout, layer, post = 0.006, 0.002, 0.004, 0.003, 0.020, 0.002
    # a first layer whose input ONNX Runtime reorders: fed = ov + Rin + L + post + Rout(y)
    fed = ov + rin + layer + post + rout
    wrapped, pair_in = ov + rin + pre + layer + post + rout, ov + rin + 2 * pre + rout
    assert input_boundary_ms(fed, wrapped, pair_in, ov) == pytest.approx((rin + rout) / 2)
    # a 3-channel stem: ORT reads NCHW directly and leaves the 3-channel neighbours in NCHW (no reorders)
    fed, wrapped, pair_in = ov + layer + post + rout, ov + pre + layer + post + rout, ov + 2 * pre
    assert input_boundary_ms(fed, wrapped, pair_in, ov) == pytest.approx(0.0)


def test_input_layers_are_the_stems_of_the_space():
    keys = [DW, GAP, LayerConfig.from_key("conv:32x32:3->16:k3s1g1:hswish:r0:float32"),
            LayerConfig.from_key("conv:32x32:3->8:k3s1g1:hswish:r0:float32"),
            LayerConfig.from_key("conv:32x32:16->40:k1s1g1:relu:r0:float32")]
    assert [k.key for k in input_layers("mbv3-tiny", keys)] == ["conv:32x32:3->16:k3s1g1:hswish:r0:float32",
                                                                 "conv:32x32:3->8:k3s1g1:hswish:r0:float32"]
    assert input_layers("mbv3-tiny[block]", keys) == input_layers("mbv3-tiny", keys)


def test_predict_adds_the_boundary_once_and_slices_without_one_predict_as_before(tmp_path):
    db_path = tmp_path / "lut.sqlite"
    plain, ctx = slice_runtime("onnx", version="v"), slice_runtime("onnx", version="v", context="nchwc")
    db = open_lut(db_path)
    writer = LutWriter(db)
    for rt, ms in ((plain, 0.010), (ctx, 0.004)):
        writer.write([MeasurementRow(layer=c, device_id="host", runtime=rt, n=50, median_ms=ms, mean_ms=ms, p10_ms=ms,
                                     p90_ms=ms, std_ms=0.0) for c in (DW, GAP, LINEAR)])
        writer.set_calibration("host", "onnx", rt.options, OVERHEAD, 0.006)
    writer.set_calibration("host", "onnx", ctx.options, BOUNDARY, 0.0015)
    db.close()
    a = LatencyTable.load(db_path, "host", "onnx", plain.options)
    b = LatencyTable.load(db_path, "host", "onnx", ctx.options)
    assert a.boundary_ms == 0.0 and a.predict([DW, GAP, LINEAR]) == pytest.approx(3 * 0.010 + 0.006)
    assert b.boundary_ms == 0.0015 and b.predict([DW, GAP, LINEAR]) == pytest.approx(3 * 0.004 + 0.006 + 0.0015)
    assert b.predict([DW, DW]) - b.predict([DW]) == pytest.approx(0.004)  # once per network, not per layer


@pytest.mark.slow
def test_an_in_context_build_is_its_own_slice_and_keeps_its_raw_timings(tmp_path):
    db, cache = tmp_path / "lut.sqlite", tmp_path / "cache"
    common = ["build", "--space", "mbv3-tiny", "--runtime", "onnx", "--db", db, "--cache-dir", cache, "--quiet",
              "--jobs", "1", "--repeats", "1", "--limit", "3"]
    result = invoke(*common, "--context", "nchwc")
    assert result.exit_code == 0, result.output
    assert "threads=1;delegate=cpu;context=nchwc" in result.output
    with sqlite3.connect(db) as conn:
        rows = conn.execute("SELECT layer_key, median_ms, state_after FROM measurements WHERE runtime_options = ?",
                            ["threads=1;delegate=cpu;context=nchwc"]).fetchall()
        overhead = conn.execute("SELECT value_ms FROM calibration WHERE name = 'overhead'").fetchone()
        boundary = conn.execute("SELECT detail FROM calibration WHERE name = 'boundary' AND runtime_options = ?",
                                ["threads=1;delegate=cpu;context=nchwc"]).fetchone()
    assert len(rows) == 3 and overhead is not None
    measured = json.loads(boundary[0])["layers_ms"]  # every stem width of the space, measured
    stems = input_layers("mbv3-tiny", make_plan(resolve_space("mbv3-tiny"), "full").measure)
    assert stems and sorted(measured) == [k.key for k in stems]
    assert all(k.startswith("conv:32x32:3->") for k in measured)
    for key, median, state in rows:
        profiler = json.loads(state)["profiler"]
        pairs = profiler["context"]["pairs_median_ms"]
        assert len(pairs) == len(boundary_tensors(LayerConfig.from_key(key)))
        expected = context_row_ms(profiler["context"]["wrapped_median_ms"], [ms for _, ms in pairs],
                                  profiler["overhead_ms"], profiler["context"].get("inputs", 1),
                                  profiler["context"].get("two_inputs_ms"))
        assert median == pytest.approx(max(0.0, expected))
        assert np.isfinite(median)
    result = invoke(*common)  # the plain slice beside it, measured from the layers alone
    assert result.exit_code == 0, result.output
    with sqlite3.connect(db) as conn:
        slices = dict(conn.execute("SELECT runtime_options, COUNT(*) FROM measurements GROUP BY runtime_options"))
    assert slices == {"threads=1;delegate=cpu": 3, "threads=1;delegate=cpu;context=nchwc": 3}


@pytest.mark.parametrize("args, needle", [
    (["--runtime", "tflite", "--context", "nchwc"], "--context nchwc: only with --runtime onnx"),
    (["--runtime", "onnx", "--context", "nchwc", "--same-batch"], "--same-batch: not with --context nchwc"),
])
def test_verify_refuses_bad_context_in_one_line_exit_1_before_any_export(args, needle, tmp_path):
    db, cache = tmp_path / "lut.sqlite", tmp_path / "c"
    result = invoke("verify", "--space", "mbv3-tiny", "--db", db, *args, "--cache-dir", cache)
    assert result.exit_code == 1, result.output
    assert needle in result.output and len(result.output.strip().splitlines()) == 1
    assert not db.exists() and not cache.exists()
