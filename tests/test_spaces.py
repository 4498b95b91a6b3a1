"""Search-space description: decoding, resolution, CBC widths, LUT keys, standalone build."""
import random

import pytest
import torch

from lut_db.layer_key import BlockConfig, LayerConfig
from lut_db.op_kinds import OP_KINDS
from search.spaces import (SPACE_CLASSES, DepthSearchSpace, SearchSpace, SubnetConfig, UnknownSpace, decode_block,
                           get_space, list_spaces, space_from_spec)
from search.spaces.ops import BUILDERS, build_layer


def test_block_string_decodes_all_fields():
    b = decode_block("ir_r2_k5_s2_e4.5_c24_se_hs")
    assert (b.kind, b.repeats, b.kernel, b.stride, b.expand_ratio, b.out_channels, b.se, b.act) == \
        ("ir", 2, 5, 2, 4.5, 24, True, "hswish")


@pytest.mark.parametrize("bad", ["xx_c8", "ir_k3", "ir_c8_q1", "ir_kx_c8"])
def test_bad_block_string_names_the_problem(bad):
    with pytest.raises(ValueError, match="block"):
        decode_block(bad)


def test_unknown_space_lists_known_ones():
    with pytest.raises(UnknownSpace, match="mbv3-tiny"):
        get_space("nope")


def test_mbv3_large_matches_mobilenetv3_large_widths():
    space = get_space("mbv3-large")
    expected_expansions = [64, 72, 72, 120, 120, 240, 200, 184, 184, 480, 672, 672, 960, 960]
    got = [space.width_vars[b.expand_var].max for b in space.blocks if b.expand_var]
    assert got == expected_expansions
    assert [space.width_vars[b.stream_var].max for b in space.blocks][-1] == 960
    assert space.spec.input_hw == (224, 224)
    assert space.final_hw == (7, 7)
    assert space.width_vars["head.fc"].max == 1280
    assert space.kernel_choices == (3, 5, 7)


def test_granularity_is_configurable():
    coarse = get_space("mbv3-tiny", granularity=16)
    assert all(c % 16 == 0 or c == v.max for v in coarse.width_vars.values() for c in v.choices)
    assert len(coarse.all_layer_configs()) < len(get_space("mbv3-tiny").all_layer_configs())


def test_only_residual_blocks_can_be_removed():
    space = get_space("mbv3-large")
    for block in space.blocks:
        assert space.width_vars[block.out_var].zero_allowed == block.residual
        if block.residual:
            assert block.stride == 1 and block.in_var == block.stream_var


def test_cbc_width_zero_removes_block_and_depth_is_continuous():
    space = get_space("mbv3-tiny")
    full = space.max_config()
    residual = next(b for b in space.blocks if b.residual)
    removed = space.canonical(full.replace(widths={residual.out_var: 0}))
    assert removed.widths[residual.expand_var] == 0
    assert space.depth(removed) == space.depth(full) - 1
    half = full.replace(widths={residual.out_var: space.width_vars[residual.in_var].max // 2})
    assert space.depth(half) == pytest.approx(space.depth(full) - 0.5)
    assert len(space.layer_configs(removed)) < len(space.layer_configs(full))


def test_cbc_width_is_clamped_to_a_narrower_stream():
    space = get_space("mbv3-tiny")
    residual = next(b for b in space.blocks if b.residual)
    cfg = space.canonical(space.max_config().replace(widths={residual.in_var: 8}))
    assert cfg.widths[residual.out_var] == 8
    add = [k for k in space.layer_configs(cfg) if k.op == "add"][0]
    assert (add.cin, add.cout) == (8, 8)


@pytest.mark.parametrize("name", ["mbv3-tiny", "mbv3-large"])
def test_every_random_subnet_needs_only_enumerated_keys(name):
    space = get_space(name)
    keys = space.all_layer_configs()
    rng = random.Random(0)
    for _ in range(100):
        assert set(space.layer_configs(space.random_config(rng))) <= keys


def test_validate_names_the_wrong_width():
    space = get_space("mbv3-tiny")
    with pytest.raises(ValueError, match="stem=12"):
        space.validate(space.max_config().replace(widths={"stem": 12}))


def test_subnet_config_round_trips_as_plain_dicts():
    space = get_space("mbv3-tiny")
    cfg = space.random_config(random.Random(3))
    assert SubnetConfig.from_dict(cfg.to_dict()) == cfg
    assert hash(SubnetConfig.from_dict(cfg.to_dict())) == hash(cfg)


@pytest.mark.parametrize("seed", range(4))
def test_standalone_network_layers_match_lut_keys(seed):
    """Layer i of the built network has the shape of LUT key i (so the LUT sum describes it)."""
    space = get_space("mbv3-tiny")
    cfg = space.random_config(random.Random(seed))
    model = space.build_subnet(cfg).eval()
    keys = space.layer_configs(cfg)
    conv_keys = [k for k in keys if k.op in ("conv", "dwconv")]
    model_convs = [m for name, m in model.named_modules()
                   if isinstance(m, torch.nn.Conv2d) and ".se." not in name + "."]
    assert [(m.in_channels, m.out_channels, m.kernel_size[0], m.stride[0], m.groups) for m in model_convs] == \
        [(k.cin, k.cout, k.kernel, k.stride, k.groups) for k in conv_keys]
    assert model(torch.randn(2, 3, *space.spec.input_hw)).shape == (2, space.spec.num_classes)


def test_macs_of_max_mbv3_large_is_mobilenetv3_scale():
    space = get_space("mbv3-large")
    macs = space.macs(space.max_config())
    assert 200e6 < macs < 320e6  # MobileNetV3-Large: 219M at its own kernels; 7x7 everywhere adds some


def test_list_spaces_has_both_builtin_spaces():
    assert {"mbv3-tiny", "mbv3-large"} <= {s.name for s in list_spaces()}


def test_layer_key_round_trip():
    cfg = LayerConfig("se", 8, 8, 72, 72, hidden=24)
    assert LayerConfig.from_key(cfg.key) == cfg


@pytest.mark.parametrize("name", ["mbv3-tiny", "mbv3-large"])
def test_blockwise_layout_is_stem_then_blocks_then_head(name):
    """What `blockwise_layout` promises the latency predictor, checked on random subnets."""
    space = get_space(name)
    assert space.blockwise_layout
    for seed in range(5):
        cfg = space.random_config(random.Random(seed))
        parts = [space.stem_layer(cfg.widths["stem"])]
        for block in space.blocks:
            cin, expand, out, _ = space.block_widths(block, cfg)
            if not space.is_removed(block, cfg):
                parts += space.block_layers(block, cin, expand, out, cfg.kernels.get(block.name, 0))
        parts += space.head_layers(cfg.widths[space.final_stream], cfg.widths["head.fc"])
        assert space.layer_configs(cfg) == parts


def test_space_from_spec_picks_the_class_of_the_spec_type():
    for space in list_spaces():
        assert type(space_from_spec(space.spec)) is SPACE_CLASSES[type(space.spec)]
    assert type(get_space("fastdepth-tiny")) is DepthSearchSpace
    assert type(get_space("mbv3-tiny")) is SearchSpace


def test_every_op_kind_has_one_builder_and_declared_io():
    assert set(BUILDERS) == set(OP_KINDS)
    for op, kind in OP_KINDS.items():
        cfg = BlockConfig(op, 4, 4, 8, 8, kernel=3, expand=16) if op == "block" else \
            LayerConfig(op, 4, 4, 8, 8 if op != "linear" else 16, kernel=3, groups=8 if op == "dwconv" else 1,
                        hidden=8 if op == "se" else 0)
        module, inputs = build_layer(cfg)
        assert [t.dim() for t in inputs] == [4 if k == "image" else 2 for k in kind.inputs]
        assert module(*inputs).dim() == (4 if kind.output == "image" else 2)
        assert cfg.macs() == kind.macs(cfg) >= 0
    with pytest.raises(ValueError, match="unknown op 'concat'"):
        LayerConfig("concat", 4, 4, 8, 8)
