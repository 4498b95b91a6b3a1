"""FastDepth search space: shapes, LUT keys vs the built network, tied widths, CBC."""
import random

import pytest
import torch

from search.spaces.fastdepth_net import ChannelBypass, FastDepthNet
from search.spaces.ops import ConvBNAct, ResidualAdd, Upsample
from search.spaces import get_space

torch.set_num_threads(1)


@pytest.fixture(scope="module")
def tiny():
    return get_space("fastdepth-tiny")


@pytest.fixture(scope="module")
def full():
    return get_space("fastdepth")


def test_fastdepth_space_matches_the_paper_network(full):
    assert full.task == "depth" and full.spec.input_hw == (224, 224) and full.spec.in_channels == 3
    cfg = full.max_config()
    widths = [cfg.widths["stem"]] + [full.block_widths(b, cfg)[3] for b in full.blocks]
    assert widths == [32, 64, 128, 128, 256, 256, 512, 512, 512, 512, 512, 512, 1024, 1024]
    assert [cfg.widths[s.out_var] for s in full.decoder] == [512, 256, 128, 64, 32]
    assert full.blocks[-1].out_hw == (7, 7)
    assert 0.70e9 < full.macs(cfg) < 0.76e9  # unpruned MobileNet-NNConv5 skip-add (the pruned one is 0.37 G)
    assert all(c % 8 == 0 for v in full.width_vars.values() for c in v.choices)


def test_skip_widths_are_one_shared_variable(full):
    # decoder stages 2, 3, 4 read the stream variable of encoder layers 5, 3, 1
    assert full.tied() == {"s0.b3.out": ["d2"], "s0.b1.out": ["d3"], "s0.b0.out": ["d4"]}
    assert [s.skip_layer for s in full.decoder] == [None, 5, 3, 1, None]
    cfg = full.max_config().replace(widths={"s0.b3.out": 96})
    adds = [k for k in full.layer_configs(cfg) if k.op == "add" and k.h == 28]
    assert [(k.cin, k.cout) for k in adds] == [(96, 96)]


def test_cbc_layers_are_the_stride1_equal_width_ones(full):
    assert [i + 1 for i, b in enumerate(full.blocks) if b.residual] == [3, 5, 7, 8, 9, 10, 11, 13]
    cfg = full.max_config().replace(widths={"s0.b7.out": 0, "s0.b8.out": 200})
    cfg = full.canonical(cfg)
    assert cfg.widths["s0.b8.out"] == 200
    assert full.depth(cfg) == pytest.approx(18 - 1 - (1 - cfg.widths["s0.b8.out"] / 512))
    keys = full.layer_configs(cfg)
    assert len(keys) == len(full.layer_configs(full.max_config())) - 2 + 1  # one layer gone, one bypass key


@pytest.mark.parametrize("name", ["fastdepth-tiny", "fastdepth"])
def test_decoder_stage_shapes(name):
    space = get_space(name)
    net = space.build_subnet(space.max_config()).eval()
    assert isinstance(net, FastDepthNet)
    h, w = space.spec.input_hw
    shapes = {}
    for stage_name, stage in net.decoder.items():
        stage.register_forward_hook(lambda m, i, o, n=stage_name: shapes.__setitem__(n, tuple(o.shape)))
    with torch.no_grad():
        out = net(torch.rand(1, 3, h, w))
    assert tuple(out.shape) == (1, 1, h, w) and bool((out >= 0).all())
    cfg = space.max_config()
    for k, stage in enumerate(space.decoder, start=1):
        side = h // 2 ** (5 - k)
        assert shapes[stage.name] == (1, cfg.widths[stage.out_var], side, side)
        assert stage.out_hw == (side, side)


def _executed_keys(space, cfg):
    """(op, h, w, cin, cout, kernel, stride) of every LUT-level module, in execution order."""
    net = space.build_subnet(cfg).eval()
    seen = []

    def hook(module, inputs, output):
        x = inputs[0]
        if isinstance(module, ConvBNAct):
            op = "dwconv" if module.conv.groups > 1 else "conv"
            seen.append((op, x.shape[2], x.shape[3], x.shape[1], output.shape[1], module.conv.kernel_size[0],
                         module.conv.stride[0]))
        elif isinstance(module, Upsample):
            seen.append(("upsample", x.shape[2], x.shape[3], x.shape[1], output.shape[1], 1, module.factor))
        elif isinstance(module, (ResidualAdd, ChannelBypass)):
            stream = inputs[1]
            seen.append(("add", stream.shape[2], stream.shape[3], x.shape[1], stream.shape[1], 1, 1))
    for m in net.modules():
        if isinstance(m, (ConvBNAct, Upsample, ResidualAdd, ChannelBypass)):
            m.register_forward_hook(hook)
    h, w = space.spec.input_hw
    with torch.no_grad():
        net(torch.rand(1, 3, h, w))
    return seen


def test_layer_configs_equal_the_built_network(tiny):
    rng = random.Random(3)
    for cfg in [tiny.max_config(), tiny.min_config()] + [tiny.random_config(rng) for _ in range(6)]:
        keys = [(k.op, k.h, k.w, k.cin, k.cout, k.kernel, k.stride) for k in tiny.layer_configs(cfg)]
        assert keys == _executed_keys(tiny, cfg)


def test_all_layer_configs_cover_random_subnets(tiny, full):
    assert len(tiny.all_layer_configs()) < 400  # small enough for a quick full LUT
    for space in (tiny, full):
        every = space.all_layer_configs()
        rng = random.Random(0)
        for cfg in [space.max_config(), space.min_config(), space.uniform_config(0.5)] + \
                [space.random_config(rng) for _ in range(20)]:
            space.validate(cfg)
            missing = set(space.layer_configs(cfg)) - every
            assert not missing, sorted(k.key for k in missing)[:3]


def test_space_api_for_profiler_and_mcd(tiny):
    assert "fastdepth-tiny" in tiny.describe()
    cfg = tiny.max_config()
    text = tiny.block_strings(cfg)
    assert text[0].startswith("stem: cn_k3_s2_c16") and text[-1] == "head: cn_k1_c1"
    assert any(line.startswith("d2: nn_k5_c32_re_x5") for line in text)
    with pytest.raises(ValueError):
        tiny.validate(cfg.replace(widths={"d1.out": 7}))
    assert tiny.macs(tiny.min_config()) < tiny.macs(tiny.uniform_config(0.5)) < tiny.macs(cfg)


def test_depth_space_has_no_classifier_width_and_no_blockwise_layout(tiny):
    """The decoder replaces the classifier head: no ``head.fc`` variable, and the predictor must not cache by block."""
    assert "head.fc" not in tiny.width_vars and {"d1.out", "d5.out"} <= set(tiny.width_vars)
    assert not tiny.blockwise_layout
