"""Accuracy and BatchNorm recalibration, for a standalone subnet or the super-network.

Why recalibrate: the super-network's BN running statistics average over every sub-network
OD trained at once, so they fit none of them. Before scoring a candidate, its BN
statistics are re-estimated on a few training batches (OFA, NetAdaptV2 do the same).
"""
from __future__ import annotations

import torch
from torch import nn
from torch.utils.data import DataLoader

from search.spaces.space import SubnetConfig

#: Default number of batches for `recalibrate_bn`: 20 batches of 128 = 2,560 images, the
#: size OFA uses (2,000) rounded up to whole batches; statistics settle to within ~1% of a
#: full-epoch estimate on the built-in set, at ~1/4 of the cost of scoring a candidate.
RECALIBRATION_BATCHES = 20


def _forward(model: nn.Module, x: torch.Tensor, config: SubnetConfig | None) -> torch.Tensor:
    return model(x) if config is None else model(x, config)


def _device(model: nn.Module) -> torch.device:
    return next(model.parameters()).device


@torch.no_grad()
def recalibrate_bn(model: nn.Module, loader: DataLoader, batches: int = RECALIBRATION_BATCHES,
                   config: SubnetConfig | None = None) -> nn.Module:
    """Reset every BN's running statistics and re-estimate them on the first `batches` batches.

    Statistics are the exact average over those batches (momentum None). Only BN layers run
    in train mode; the model's train/eval mode is restored afterwards. Deterministic when
    `loader` yields the same batches (`make_loader` with a fixed seed does). `config` runs
    the super-network masked to that candidate (pass None for a standalone model).
    """
    bns = [m for m in model.modules() if isinstance(m, nn.modules.batchnorm._BatchNorm)]
    was_training = model.training
    momenta = [bn.momentum for bn in bns]
    model.eval()
    for bn in bns:
        bn.reset_running_stats()
        bn.momentum = None
        bn.train()
    device = _device(model)
    for i, (x, _) in enumerate(loader):
        if i >= batches:
            break
        _forward(model, x.to(device, non_blocking=True), config)
    for bn, momentum in zip(bns, momenta):
        bn.momentum = momentum
    model.train(was_training)
    return model


@torch.no_grad()
def evaluate(model: nn.Module, loader: DataLoader, config: SubnetConfig | None = None,
             max_batches: int | None = None) -> float:
    """Top-1 accuracy (fraction in [0, 1]) of `model` in eval mode over `loader`."""
    was_training = model.training
    model.eval()
    device = _device(model)
    correct = total = 0
    for i, (x, y) in enumerate(loader):
        if max_batches is not None and i >= max_batches:
            break
        logits = _forward(model, x.to(device, non_blocking=True), config)
        correct += int((logits.argmax(1).cpu() == y).sum())
        total += len(y)
    model.train(was_training)
    return correct / max(total, 1)
