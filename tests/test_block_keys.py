"""Whole-block LUT keys (`lutbuild build --granularity block`): the key, its module, its plan, its
interpolation and how `LatencyPredictor` uses block rows."""
from __future__ import annotations

import json
import random
import sqlite3

import onnx
import pytest
import torch

from lut_db.block_interpolate import block_family, estimate_blocks
from lut_db.errors import MissingLatencyError
from lut_db.layer_key import BlockConfig, LayerConfig, RuntimeSpec, is_block, parse_key
from lut_db.reader import LatencyTable
from lut_db.schema import open_lut_for_writing
from lut_db.writer import LutWriter, MeasurementRow
from lutbuild_helpers import invoke
from profiler.agents import open_agent
from profiler.block_plan import block_grid, interpolate_block_slice, make_block_plan
from profiler.build import BuildOptions, build_lut
from profiler.errors import ProfilerError
from profiler.export import ModelCache
from profiler.predictor import LatencyPredictor
from search.spaces import get_space
from search.spaces.ops import build_layer
from search.spaces.subnet import InvertedResidual

DEVICE = "test-device"
RT = RuntimeSpec("onnx", "1.0", delegate="cpu")


@pytest.fixture(scope="module")
def tiny():
    return get_space("mbv3-tiny")


def _residual_se_block(tiny):
    return next(b for b in tiny.blocks if b.residual and b.se)


# ----------------------------------------------------------------------------- the key
def test_layer_keys_are_unchanged_and_block_keys_round_trip(tiny):
    conv = LayerConfig("conv", 16, 16, 24, 72, kernel=1, act="relu")
    assert conv.key == "conv:16x16:24->72:k1s1g1:relu:r0:float32"  # old keys byte-identical
    block = tiny.block_key(_residual_se_block(tiny), 24, 72, 16, 7)
    assert block.key == "block:ir:8x8:24->72->16:k7s1:hswish:r24:res1:float32"
    assert is_block(block.key) and not is_block(conv.key)
    assert BlockConfig.from_key(block.key) == block and parse_key(block.key) == block
    assert parse_key(conv.key) == conv and type(parse_key(conv.key)) is LayerConfig
    assert BlockConfig.from_dict(block.to_dict()) == block
    assert hash(block) == hash(BlockConfig.from_key(block.key))
    with pytest.raises(ValueError, match="not of the form op:HxW"):
        LayerConfig.from_key(block.key)  # readers that parse layer keys skip block rows


@pytest.mark.parametrize("kwargs, message", [
    ({"op": "block"}, "is a BlockConfig"),
])
def test_a_plain_layer_config_cannot_be_a_block(kwargs, message):
    with pytest.raises(ValueError, match=message):
        LayerConfig(h=8, w=8, cin=8, cout=8, **kwargs)


@pytest.mark.parametrize("kwargs, message", [
    ({"op": "conv"}, "is a BlockConfig"),
    ({"kind": "cn"}, "unknown kind"),
    ({"kind": "ds", "expand": 16}, "ds block's expand"),
    ({"residual": True, "cout": 16}, "cout <= cin"),
    ({"residual": True, "stride": 2}, "stride 1"),
    ({"expand": 0}, "positive integer"),
])
def test_bad_block_configs_are_refused(kwargs, message):
    fields = {"op": "block", "h": 8, "w": 8, "cin": 8, "cout": 8, "expand": 24, "kind": "ir", **kwargs}
    with pytest.raises(ValueError, match=message):
        BlockConfig(**fields)


def test_block_keys_of_a_network_have_its_layers_macs(tiny):
    rng = random.Random(0)
    for _ in range(100):
        cfg = tiny.random_config(rng)
        blocks = tiny.block_configs(cfg)
        assert sum(k.macs() for k in blocks) == tiny.macs(cfg)
        assert blocks[0] == tiny.layer_configs(cfg)[0] and blocks[-3:] == tiny.layer_configs(cfg)[-3:]
        assert set(blocks) <= tiny.all_block_configs()


@pytest.mark.parametrize("which", ["residual_se", "strided", "cbc"])
def test_block_module_is_the_networks_block(tiny, which):
    """The exported block is the network's `InvertedResidual`: same modules, same output."""
    block, widths = {"residual_se": (_residual_se_block(tiny), (24, 72, 24, 5)),
                     "strided": (tiny.blocks[0], (16, 48, 24, 3)),
                     "cbc": (_residual_se_block(tiny), (32, 96, 16, 7))}[which]
    module, (x,) = build_layer(tiny.block_key(block, *widths))
    reference = InvertedResidual(block, *widths).eval()
    reference.load_state_dict(module.state_dict())  # same parameter names: same composition
    with torch.no_grad():
        assert torch.allclose(module(x), reference(x), atol=1e-6)


# ----------------------------------------------------------------------------- the plan
def test_block_plans(tiny):
    full, sparse = make_block_plan(tiny, "full"), make_block_plan(tiny, "sparse")
    assert set(full.measure) == tiny.all_block_configs() and full.interpolate == ()
    assert full.space == "mbv3-tiny[block]"
    assert set(sparse.keys) == set(full.measure)
    assert len(sparse.measure) < len(full.measure) / 2
    assert [c.key for c in sparse.measure] == sorted(c.key for c in sparse.measure)
    assert make_block_plan(tiny, "sparse") == sparse  # deterministic
    assert not any(isinstance(c, BlockConfig) and c.kind == "cn" for c in full.measure)
    assert {c.op for c in full.measure if not is_block(c.key)} == {"conv", "gap", "linear"}  # stem, cn, head
    blocks = [c for c in full.measure if is_block(c.key)]
    grid = block_grid(blocks)
    for fam in {block_family(c) for c in blocks}:  # every family keeps at least two grid points
        assert sum(block_family(c) == fam for c in grid) >= 2


def test_block_plan_refuses_a_space_without_block_layout():
    with pytest.raises(ProfilerError, match="--granularity layer"):
        make_block_plan(get_space("fastdepth-tiny"), "full")


def test_unknown_granularity_is_one_line(tmp_path):
    result = invoke("build", "--space", "mbv3-tiny", "--db", tmp_path / "l.sqlite", "--granularity", "blocks")
    assert result.exit_code != 0 and "--granularity" in result.output
    with pytest.raises(ProfilerError, match="--granularity: unknown granularity"):
        build_lut("mbv3-tiny", object(), tmp_path / "l.sqlite", "onnx", BuildOptions(granularity="blocks"))
    assert not (tmp_path / "l.sqlite").exists()


# ----------------------------------------------------------------------------- interpolation
def _multilinear_ms(c: BlockConfig) -> float:
    """A latency that is a sum of the block's per-layer MAC terms (what trilinear recovers exactly)."""
    return 0.01 + 2e-5 * c.cin * c.expand + 3e-4 * c.expand + 1e-5 * c.expand * c.cout + 1e-4 * c.cout


def test_block_interpolation_is_exact_for_per_layer_mac_terms(tiny):
    plan = make_block_plan(tiny, "sparse")
    measured = {c: _multilinear_ms(c) for c in plan.measure if isinstance(c, BlockConfig)}
    wanted = [c for c in plan.interpolate if isinstance(c, BlockConfig)]
    estimates = estimate_blocks(measured, wanted)
    assert set(estimates) == set(wanted)
    methods = {how for _, how in estimates.values()}
    assert methods == {"trilinear", "fit"}
    for cfg, (ms, _) in estimates.items():
        assert ms == pytest.approx(_multilinear_ms(cfg), rel=1e-6, abs=1e-9), cfg.key


def test_block_interpolation_leaves_out_what_it_cannot_estimate(tiny):
    block = _residual_se_block(tiny)
    one = tiny.block_key(block, 24, 72, 24, 5)
    other = tiny.block_key(block, 24, 48, 24, 5)
    assert estimate_blocks({one: 0.1}, [other]) == {}
    assert estimate_blocks({}, [other]) == {}


def test_interpolated_block_rows_go_into_the_lut(tmp_path, tiny):
    """Real SQLite: measured grid rows in, interpolated rows of the off-grid keys out; nothing else touched."""
    plan = make_block_plan(tiny, "sparse")
    db = open_lut_for_writing(tmp_path / "lut.sqlite")
    writer = LutWriter(db)
    ms = {c: _multilinear_ms(c) if isinstance(c, BlockConfig) else 0.001 * (1 + c.macs() / 1e6) for c in plan.keys}
    writer.write([MeasurementRow(layer=c, device_id=DEVICE, runtime=RT, n=10, median_ms=ms[c], mean_ms=ms[c],
                                 p10_ms=ms[c], p90_ms=ms[c], std_ms=0.0, source="measured", plan="sparse")
                  for c in plan.measure])
    written, missing = interpolate_block_slice(db, writer, plan, DEVICE, RT)
    db.close()
    assert (written, missing) == (len(plan.interpolate), 0)
    table = LatencyTable.load(tmp_path / "lut.sqlite", DEVICE, "onnx", RT.options)
    assert len(table) == len(plan.keys)
    assert table.interpolated_keys == {c.key for c in plan.interpolate}
    for cfg in plan.interpolate:
        if isinstance(cfg, BlockConfig):
            assert table.latency(cfg) == pytest.approx(ms[cfg], rel=1e-6)


# ----------------------------------------------------------------------------- prediction
def _tables(tiny):
    """A layer table (every layer key) and the same plus a block row for every block key, in ms."""
    layers = {c.key: 0.001 + c.macs() * 1e-8 for c in tiny.all_layer_configs()}
    blocks = {c.key: 2.0 + c.macs() * 1e-8 for c in tiny.all_block_configs() if is_block(c.key)}
    calibration = {"overhead": 0.005}
    return (LatencyTable(layers, device_id=DEVICE, runtime="onnx", calibration_ms=calibration),
            LatencyTable({**layers, **blocks}, device_id=DEVICE, runtime="onnx", calibration_ms=calibration),
            blocks)


def test_predictor_uses_block_rows_where_the_slice_has_them(tiny):
    layer_table, both, blocks = _tables(tiny)
    rng = random.Random(3)
    configs = [tiny.random_config(rng) for _ in range(50)] + [tiny.max_config(), tiny.min_config()]
    old = LatencyPredictor(tiny, layer_table)
    assert old.granularity == "layer"  # a LUT without block rows: the layer path, as before
    by_layer = LatencyPredictor(tiny, both, granularity="layer")
    by_block = LatencyPredictor(tiny, both)
    assert by_block.granularity == "auto"
    for cfg in configs:
        layer_sum = layer_table.predict(tiny.layer_configs(cfg))
        assert old.predict(cfg) == pytest.approx(layer_sum, abs=1e-12)
        assert by_layer.predict(cfg) == pytest.approx(layer_sum, abs=1e-12)
        assert by_block.predict(cfg) == pytest.approx(both.predict(tiny.block_configs(cfg)), abs=1e-12)
        n_blocks = sum(is_block(c.key) for c in tiny.block_configs(cfg))
        assert by_block.predict(cfg) > layer_sum + 1.9 * n_blocks  # block rows (2 ms each here) were used
    # a slice with some block rows: those blocks by their row, the others by their layers
    half = dict(list(blocks.items())[::2])
    mixed = LatencyTable({**layer_table._ms, **half}, device_id=DEVICE, runtime="onnx",
                         calibration_ms={"overhead": 0.005})
    predictor = LatencyPredictor(tiny, mixed)
    for cfg in configs:
        expected = 0.005
        for key in tiny.block_configs(cfg):
            expected += half[key.key] if key.key in half else (
                mixed.latency(key) if not is_block(key.key) else
                sum(mixed.latency(c) for c in _layers_of(tiny, cfg, key)))
        assert predictor.predict(cfg) == pytest.approx(expected, abs=1e-12)


def _layers_of(tiny, cfg, key):
    for block in tiny.blocks:
        cin, expand, out, _ = tiny.block_widths(block, cfg)
        if (block.residual and out == 0) or block.kind == "cn":
            continue
        if tiny.block_key(block, cin, expand, out, cfg.kernels[block.name]) == key:
            return tiny.block_layers(block, cin, expand, out, cfg.kernels[block.name])
    raise AssertionError(key.key)


def test_predictor_block_granularity_needs_every_block_row(tiny):
    layer_table, both, blocks = _tables(tiny)
    missing_one = dict(both._ms)
    del missing_one[next(iter(blocks))]
    with pytest.raises(MissingLatencyError, match="1 of the 1068 block keys.*--granularity block"):
        LatencyPredictor(tiny, LatencyTable(missing_one, device_id=DEVICE, runtime="onnx"), granularity="block")
    with pytest.raises(MissingLatencyError):
        LatencyPredictor(tiny, layer_table, granularity="block")
    LatencyPredictor(tiny, LatencyTable(missing_one, device_id=DEVICE, runtime="onnx"))  # auto: layers fill in
    with pytest.raises(ValueError, match="granularity"):
        LatencyPredictor(tiny, both, granularity="blocks")


# ----------------------------------------------------------------------------- a real build
@pytest.mark.slow
def test_block_build_on_this_host_writes_block_rows_and_resumes(tmp_path, tiny):
    """Real exports (ONNX), real onnxruntime, real SQLite: a limited block build, then the rest of a
    few keys; the block file is the whole block's graph."""
    db = tmp_path / "lut.sqlite"
    agent = open_agent("local", "onnx")
    try:
        options = BuildOptions(plan="sparse", granularity="block", limit=6, cache_dir=tmp_path / "cache", jobs=1,
                               repeats=1, settings={"warmup_runs": 2, "min_runs": 5, "min_seconds": 0.0})
        first = build_lut(tiny, agent, db, "onnx", options, progress=False)
        second = build_lut(tiny, agent, db, "onnx", options, progress=False)
    finally:
        agent.close()
    assert first.space == "mbv3-tiny[block]" and first.measured == 6
    assert second.already_measured == 6 and second.measured == 6  # resumed, not repeated
    rows = LatencyTable.load(db, first.device_id, "onnx", first.runtime_options)
    plan = make_block_plan(tiny, "sparse")
    assert len(rows) == 12
    measured = [c for c in plan.measure[:12]]
    # A row is its timing less the batch's per-invoke overhead, clamped at 0 (a tiny layer on a
    # loaded host can time under it); the raw timing it came from is always positive.
    assert all(rows.latency(c) >= 0 for c in measured)
    with sqlite3.connect(db) as conn:
        raw = {k: json.loads(state)["profiler"]["raw_median_ms"]
               for k, state in conn.execute("SELECT layer_key, state_after FROM measurements")}
    assert sorted(raw) == sorted(c.key for c in measured) and all(ms > 0 for ms in raw.values())
    block = next(c for c in measured if is_block(c.key))
    path = ModelCache(tmp_path / "cache", "onnx").layer_path(block)
    ops = {n.op_type for n in onnx.load(str(path)).graph.node}
    assert "Conv" in ops and len([n for n in onnx.load(str(path)).graph.node if n.op_type == "Conv"]) >= 2
    shown = invoke("show", "--db", db)
    assert shown.exit_code == 0 and "mbv3-tiny[block]" in shown.output
