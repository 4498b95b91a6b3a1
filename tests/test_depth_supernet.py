"""Depth super-network: sliced sub-network == masked super-network; OD training step."""
import random

import pytest
import torch

from search.supernet import DepthSuperNet, ODPolicy, build_supernet
from search.spaces import get_space

torch.set_num_threads(1)


@pytest.fixture(scope="module")
def supernet():
    torch.manual_seed(0)
    space = get_space("fastdepth-tiny")
    net = DepthSuperNet(space)
    with torch.no_grad():  # non-trivial BN so every channel and statistic matters
        for m in net.modules():
            if isinstance(m, torch.nn.BatchNorm2d):
                m.running_mean.normal_(0, 0.2)
                m.running_var.uniform_(0.5, 1.5)
                m.weight.uniform_(0.5, 1.5)
                m.bias.normal_(0, 0.2)
        net.net.head.bn.bias.fill_(3.0)  # keep the ReLU head active
    return net.eval()


def test_sliced_subnet_equals_masked_supernet(supernet):
    space = supernet.space
    rng = random.Random(0)
    x = torch.rand(3, 3, 64, 64)
    configs = [space.max_config(), space.min_config(), space.uniform_config(0.5)]
    configs += [space.random_config(rng) for _ in range(6)]
    with torch.no_grad():
        for cfg in configs:
            masked = supernet(x, supernet.masks_for(cfg, len(x)))
            sliced = supernet.subnet(cfg)(x)
            assert torch.allclose(masked, sliced, atol=1e-5), space.block_strings(cfg)
            assert float(masked.std()) > 0
        assert not torch.allclose(supernet(x, supernet.masks_for(configs[1], 3)), supernet(x), atol=1e-3)


def test_subnet_is_physically_smaller(supernet):
    space = supernet.space
    small = supernet.subnet(space.min_config())
    n_small = sum(p.numel() for p in small.parameters())
    assert n_small < sum(p.numel() for p in supernet.net.parameters()) / 5
    assert not small.training


def test_od_training_step_reaches_every_width():
    torch.manual_seed(1)
    net = DepthSuperNet(get_space("fastdepth-tiny")).train()
    od = net.sample_od(8, torch.Generator().manual_seed(0))
    assert set(od.widths) >= set(net.space.width_vars)
    out = net(torch.rand(8, 3, 64, 64), od)
    assert out.shape == (8, 1, 64, 64)
    out.mean().backward()
    assert net.net.decoder["d1"].pw.conv.weight.grad is not None


def test_build_supernet_of_a_depth_space_is_a_depth_supernet():
    net = build_supernet(get_space("fastdepth-tiny"))
    assert type(net) is DepthSuperNet and net.policy == ODPolicy()
