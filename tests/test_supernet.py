"""OD super-network: masks, CBC, super-kernels, slicing == masking, BN recalibration."""
import random

import pytest
import torch
from torch import nn

from search.data.loader import make_loader
from search.evaluate import evaluate, recalibrate_bn
from search.spaces import SubnetConfig, get_space
from search.supernet import ElasticDepthwise, ODPolicy, SuperNet, build_supernet, centre_crop
from search.supernet.od import ODSample


def _randomize(net: nn.Module, seed: int = 0) -> nn.Module:
    """Non-trivial BN parameters and statistics, so slicing mistakes show."""
    g = torch.Generator().manual_seed(seed)
    for m in net.modules():
        if isinstance(m, nn.BatchNorm2d):
            n = m.num_features
            m.running_mean.copy_(torch.rand(n, generator=g) - 0.5)
            m.running_var.copy_(torch.rand(n, generator=g) + 0.5)
            m.weight.data.copy_(torch.rand(n, generator=g) + 0.5)
            m.bias.data.copy_(torch.rand(n, generator=g) - 0.5)
    return net


@pytest.fixture(scope="module")
def tiny():
    space = get_space("mbv3-tiny")
    torch.manual_seed(0)
    return space, _randomize(SuperNet(space)).eval()


def test_max_forward_equals_max_config_masks(tiny):
    space, net = tiny
    x = torch.randn(3, 3, 32, 32)
    assert torch.allclose(net(x), net(x, space.max_config()), atol=1e-6)


def test_od_sample_masks_drop_last_channels_per_image(tiny):
    space, net = tiny
    od = net.sample_od(64, torch.Generator().manual_seed(0))
    masks = od.masks(net.channels, torch.device("cpu"), torch.float32)
    widths = od.widths["s1.b0.expand"]
    m = masks["s1.b0.expand"]
    assert m.shape == (64, 72, 1, 1)
    for i in range(64):
        w = int(widths[i])
        assert m[i, :w].eq(1).all() and m[i, w:].eq(0).all()  # the first w kept, the LAST dropped
    assert len(set(widths.tolist())) > 3  # different images, different widths
    # sandwich rule: the first quarter runs max, the next quarter min
    assert (widths[:16] == 72).all() and (widths[16:32] == space.min_config().widths["s1.b0.expand"]).all()
    assert set(od.kernels["s0.b1"].tolist()) == {3, 5, 7}


def test_od_widths_are_canonical_per_image(tiny):
    space, net = tiny
    od = net.sample_od(256, torch.Generator().manual_seed(1))
    for i in range(0, 256, 7):
        config = od.config(i)
        space.validate(config)
        assert config == space.canonical(config)


def test_masked_layer_output_is_zero_beyond_width(tiny):
    space, net = tiny
    config = space.max_config().replace({"s0.b0.out": 8, "stem": 8})
    od = net.masks_for(config, 2)
    x = torch.randn(2, 3, 32, 32)
    h = net.stem(x) * od.masks(net.channels, x.device, x.dtype)["stem"]
    assert h[:, 8:].abs().max() == 0 and h[:, :8].abs().max() > 0


def test_cbc_removed_block_output_equals_input(tiny):
    space, net = tiny
    block = net.blocks["s1_b1"]
    x = torch.randn(2, 32, 8, 8)
    for widths in ({"s1.b1.out": 0}, {"s1.b1.expand": 0}):
        config = space.max_config().replace(widths)
        od = net.masks_for(config, 2)
        m = od.masks(net.channels, x.device, x.dtype)
        assert torch.equal(block(x, m, od.kernels["s1.b1"]), x)


def test_cbc_partial_block_bypasses_last_channels(tiny):
    space, net = tiny
    block = net.blocks["s1_b1"]
    config = space.max_config().replace({"s1.b1.out": 16})
    od = net.masks_for(config, 2)
    x = torch.randn(2, 32, 8, 8)
    y = block(x, od.masks(net.channels, x.device, x.dtype), 7)
    assert torch.equal(y[:, 16:], x[:, 16:])  # bypassed channels pass through unchanged
    assert not torch.allclose(y[:, :16], x[:, :16])
    sub = net.subnet(config)
    assert sub.blocks["s1_b1"].project.conv.weight.shape == (16, 96, 1, 1)  # CBC shapes
    assert sub.blocks["s1_b1"].add.computed == 16 and sub.blocks["s1_b1"].add.width == 32


def test_cbc_width_clamped_to_narrower_stream(tiny):
    space, net = tiny
    config = space.max_config().replace({"s1.b0.out": 16, "s1.b1.out": 32})
    sub = net.subnet(config)
    assert sub.blocks["s1_b1"].project.conv.weight.shape[0] == 16
    x = torch.randn(2, 3, 32, 32)
    assert torch.allclose(net(x, config), sub(x), atol=1e-5)


def test_removed_block_absent_from_subnet_and_depth_is_continuous(tiny):
    space, net = tiny
    config = space.max_config().replace({"s0.b1.out": 0, "s1.b1.out": 16})
    sub = net.subnet(config)
    assert "s0_b1" not in sub.blocks and "s1_b1" in sub.blocks
    assert space.depth(config) == pytest.approx(3.5)


def test_super_kernel_centre_crop():
    w = torch.arange(49.0).view(1, 1, 7, 7)
    assert torch.equal(centre_crop(w, 3), w[..., 2:5, 2:5])
    assert torch.equal(centre_crop(w, 5), w[..., 1:6, 1:6])
    dw = ElasticDepthwise(4, 7, 1, "none").eval()
    x = torch.randn(5, 4, 9, 9)
    ref = nn.functional.conv2d(x, dw.conv.weight[:, :, 2:5, 2:5], padding=1, groups=4)
    assert torch.allclose(dw(x, 3), dw.act(dw.bn(ref)), atol=1e-6)


def test_per_image_kernels_match_per_kernel_runs():
    torch.manual_seed(0)
    dw = _randomize(ElasticDepthwise(8, 7, 2, "relu")).eval()
    x = torch.randn(6, 8, 10, 10)
    kernels = torch.tensor([7, 3, 5, 3, 7, 5])
    y = dw(x, kernels)
    for i, k in enumerate(kernels.tolist()):
        assert torch.allclose(y[i], dw(x[i:i + 1], k)[0], atol=1e-6)
    xc = x.clone().requires_grad_()  # gradients flow through the per-image path
    dw.train()(xc.contiguous(memory_format=torch.channels_last), kernels).sum().backward()
    assert xc.grad is not None and dw.conv.weight.grad.abs().sum() > 0


@pytest.mark.parametrize("space_name,hw,count", [("mbv3-tiny", 32, 12), ("mbv3-large", 64, 4)])
def test_sliced_subnet_equals_masked_supernet(space_name, hw, count):
    space = get_space(space_name)
    torch.manual_seed(1)
    net = _randomize(SuperNet(space), 1).eval()
    rng = random.Random(0)
    configs = [space.max_config(), space.min_config()] + [space.random_config(rng) for _ in range(count)]
    # force removed blocks and narrower streams into some configs
    residual = [b for b in space.blocks if b.residual]
    configs.append(space.max_config().replace({residual[0].out_var: 0, residual[-1].expand_var: 0}))
    x = torch.randn(3, 3, hw, hw)
    for config in configs:
        sub = net.subnet(config)
        assert not sub.training
        assert torch.allclose(net(x, config), sub(x), atol=1e-5, rtol=1e-5), space.block_strings(config)


def test_subnet_weights_are_ordered_slices(tiny):
    space, net = tiny
    config = space.min_config().replace({"s1.b0.expand": 24}, {"s1.b0": 5})
    sub = net.subnet(config)
    w = net.blocks["s1_b0"].dw.conv.weight
    assert torch.equal(sub.blocks["s1_b0"].dw.conv.weight, w[:24, :, 1:6, 1:6])
    e = net.blocks["s1_b0"].expand.conv.weight
    assert torch.equal(sub.blocks["s1_b0"].expand.conv.weight, e[:24, :config.widths["s0.b0.out"]])
    assert torch.equal(sub.blocks["s1_b0"].dw.bn.running_var, net.blocks["s1_b0"].dw.bn.running_var[:24])


def test_training_step_through_od_reaches_every_parameter(tiny):
    space, _ = tiny
    torch.manual_seed(0)
    net = SuperNet(space, policy=ODPolicy(max_share=0.5))
    od = net.sample_od(16, torch.Generator().manual_seed(0))
    net(torch.randn(16, 3, 32, 32), od).logsumexp(1).sum().backward()
    missing = [n for n, p in net.named_parameters() if p.grad is None or p.grad.abs().sum() == 0]
    assert not missing


class _Images(torch.utils.data.Dataset):
    def __init__(self, n=96, seed=0):
        g = torch.Generator().manual_seed(seed)
        self.x = torch.randn(n, 3, 32, 32, generator=g) * 2 + 1
        self.y = torch.randint(0, 10, (n,), generator=g)

    def __len__(self):
        return len(self.y)

    def __getitem__(self, i):
        return self.x[i], self.y[i]


def test_recalibrate_bn_changes_stats_and_is_deterministic(tiny):
    space, net = tiny
    config = space.random_config(random.Random(3))
    loader = make_loader(_Images(), 32, shuffle=True, seed=5)
    sub = net.subnet(config)
    before = sub.stem.bn.running_mean.clone()
    recalibrate_bn(sub, loader, batches=2)
    after = sub.stem.bn.running_mean.clone()
    assert not torch.allclose(before, after)
    assert not sub.training  # mode restored
    again = net.subnet(config)
    recalibrate_bn(again, loader, batches=2)
    for (n, a), (_, b) in zip(sub.state_dict().items(), again.state_dict().items()):
        assert torch.equal(a, b), n
    # the super-network recalibrated on the candidate's masks matches the subnet's statistics
    copy = SuperNet(space)
    copy.load_state_dict(net.state_dict())
    recalibrate_bn(copy, loader, batches=2, config=config)
    assert torch.allclose(copy.stem.bn.running_mean[:config.widths["stem"]], after, atol=1e-5)
    acc_sub, acc_masked = evaluate(sub, loader), evaluate(copy.eval(), loader, config=config)
    assert acc_sub == acc_masked and 0.0 <= acc_sub <= 1.0


def test_masks_for_fixed_sample_is_shared_by_all_images(tiny):
    space, net = tiny
    od = net.masks_for(space.min_config(), 7)
    assert isinstance(od, ODSample) and od.batch_size == 7
    masks = od.masks(net.channels, torch.device("cpu"), torch.float32)
    assert masks["s1.b0.expand"].shape == (1, 72, 1, 1)
    assert "head.fc" in masks  # min head width is masked
    assert od.widths["s0.b1.out"] == 0 and od.widths["s0.b1.expand"] == 0


def test_subnet_rejects_invalid_config(tiny):
    space, net = tiny
    with pytest.raises(ValueError):
        net.subnet(SubnetConfig({"stem": 16}, {}))


def test_build_supernet_picks_the_space_family():
    space = get_space("mbv3-tiny")
    net = build_supernet(space, ODPolicy(max_share=0.5, min_share=0.0), dropout=0.1)
    assert type(net) is SuperNet and net.policy == ODPolicy(max_share=0.5, min_share=0.0) and net.dropout == 0.1
    assert build_supernet(space).policy == ODPolicy()


# ---------------------------------------------------------------- grouped OD (issue 16)
def test_grouped_od_sample_sandwich_and_constant_groups():
    space = get_space("mbv3-tiny")
    net = SuperNet(space, policy=ODPolicy(groups=4))
    od = net.sample_od(16, torch.Generator().manual_seed(0))
    assert od.groups == 4
    assert space.canonical(od.config(0)) == space.canonical(space.max_config())
    assert space.canonical(od.config(4)) == space.canonical(space.min_config())
    for g in range(4):  # one sub-network per contiguous group
        assert all(od.config(g * 4 + i) == od.config(g * 4) for i in range(4))
    with pytest.raises(ValueError, match="equal groups"):
        net.sample_od(10, torch.Generator().manual_seed(0))


@pytest.mark.parametrize("channels_last", [False, True])
def test_grouped_od_training_forward_equals_each_group_alone(channels_last):
    """BN statistics per group: one pass over G groups == each sub-network run alone on its images
    (per-image OD normalised every sub-network with the statistics of the whole mixture)."""
    space = get_space("mbv3-tiny")
    torch.manual_seed(0)
    net = _randomize(SuperNet(space, policy=ODPolicy(groups=4))).train()
    od = net.sample_od(16, torch.Generator().manual_seed(1))
    x = torch.randn(16, 3, 32, 32)
    if channels_last:
        net, x = net.to(memory_format=torch.channels_last), x.contiguous(memory_format=torch.channels_last)
    together = net(x, od)
    alone = torch.cat([net(x[g * 4:(g + 1) * 4], od.config(g * 4)) for g in range(4)])
    assert torch.allclose(together, alone, atol=1e-5)
    mixed = net(x, ODSample(16, od.widths, od.kernels))  # same draws, BN over the whole batch
    assert not torch.allclose(mixed, alone, atol=1e-3)


def test_inplace_distillation_teacher_gets_only_label_gradient():
    from search.supernet.distill import inplace_distillation_loss, share_images
    x, y = torch.arange(8.0).view(8, 1), torch.arange(8)
    xs, ys = share_images(x, y, 4)
    assert xs.flatten().tolist() == [0, 1] * 4 and ys.tolist() == [0, 1] * 4
    logits = torch.randn(8, 5, requires_grad=True)
    inplace_distillation_loss(logits, ys % 5, 4, 0.1).backward()
    ref = logits.detach().clone().requires_grad_(True)
    (nn.functional.cross_entropy(ref[:2], ys[:2] % 5, label_smoothing=0.1) * 2 / 8).backward()
    assert torch.allclose(logits.grad[:2], ref.grad[:2], atol=1e-6)  # max group: labels only
    assert logits.grad[2:].abs().sum() > 0  # students learn from the teacher
    same = logits.detach()[:2].repeat(4, 1).requires_grad_(True)  # students equal to the teacher: soft part at rest
    inplace_distillation_loss(same, ys % 5, 4).backward()
    assert same.grad[2:].abs().max() < 1e-6
