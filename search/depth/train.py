"""Training loops of the depth task: the OD super-network, and a short fine-tune of one network.

Kept small and visible (nanoGPT style): sample per-image widths, masked forward, masked L1,
step. AdamW with a cosine schedule: it converges in the few hundred steps a CPU demo
affords (FastDepth itself used SGD for 20 epochs on NYU; pass `optimizer="sgd"` for that).
Deterministic for a seed (data order, OD draws; the caller seeds the model init).

CPU note: on a loaded 2-core host, torch's multi-threaded depthwise-conv backward can be
10x slower than one thread; callers (benchmarks, tests) use `torch.set_num_threads(1)`.
"""
from __future__ import annotations

import math
import time
from dataclasses import dataclass
from typing import Callable, Iterator

import torch
from torch import nn
from torch.utils.data import DataLoader

from .losses import masked_l1
from .supernet import DepthSuperNet


@dataclass(frozen=True)
class DepthTrainConfig:
    """Settings of `train_supernet` / `finetune`; every default says why."""

    steps: int = 600  # tiny space on builtin-depth, batch 32: ~2-3 min on one CPU core
    lr: float = 2e-3  # AdamW default that is stable from scratch with BN
    weight_decay: float = 1e-4  # light: the data set is small, the network smaller
    optimizer: str = "adamw"  # or "sgd" (momentum 0.9, FastDepth's choice)
    warmup_steps: int = 20  # fresh BN statistics + large steps diverge without it
    seed: int = 0
    log_every: int = 50


def _batches(loader: DataLoader) -> Iterator:
    if len(loader) == 0:  # would loop forever without a step
        raise ValueError(f"depth training: the loader yields no batch ({len(loader.dataset)} images, "
                         f"batch size {loader.batch_size}, drop_last {loader.drop_last})")
    epoch = 0
    while True:
        sampler = getattr(loader, "sampler", None)
        if hasattr(sampler, "set_epoch"):
            sampler.set_epoch(epoch)
        if hasattr(loader.dataset, "set_epoch"):
            loader.dataset.set_epoch(epoch)
        yield from loader
        epoch += 1


def _optimizer(model: nn.Module, cfg: DepthTrainConfig) -> torch.optim.Optimizer:
    decay = [p for p in model.parameters() if p.dim() > 1]
    other = [p for p in model.parameters() if p.dim() <= 1]  # BN and biases: no weight decay
    groups = [{"params": decay, "weight_decay": cfg.weight_decay}, {"params": other, "weight_decay": 0.0}]
    if cfg.optimizer == "sgd":
        return torch.optim.SGD(groups, lr=cfg.lr, momentum=0.9)
    if cfg.optimizer == "adamw":
        return torch.optim.AdamW(groups, lr=cfg.lr)
    raise ValueError(f"unknown optimizer {cfg.optimizer!r}; expected 'adamw' or 'sgd'")


def _lr_lambda(cfg: DepthTrainConfig) -> Callable[[int], float]:
    def factor(step: int) -> float:
        if step < cfg.warmup_steps:
            return (step + 1) / cfg.warmup_steps
        progress = (step - cfg.warmup_steps) / max(1, cfg.steps - cfg.warmup_steps)
        return 0.5 * (1 + math.cos(math.pi * min(1.0, progress)))
    return factor


def _loop(model: nn.Module, forward: Callable, loader: DataLoader, cfg: DepthTrainConfig,
          log: Callable[[str], None] | None, on_step: Callable[[int, float], None] | None = None) -> list[float]:
    # channels-last: CPU depthwise convolutions (and their backward) run ~2.5x faster in NHWC
    model.to(memory_format=torch.channels_last)
    optimizer = _optimizer(model, cfg)
    schedule = torch.optim.lr_scheduler.LambdaLR(optimizer, _lr_lambda(cfg))
    model.train()
    losses, t0 = [], time.perf_counter()
    for step, (rgb, depth) in zip(range(cfg.steps), _batches(loader)):
        loss = masked_l1(forward(rgb.contiguous(memory_format=torch.channels_last)), depth)
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        optimizer.step()
        schedule.step()
        losses.append(float(loss.detach()))
        if on_step is not None:
            on_step(step, losses[-1])
        if log and (step + 1) % cfg.log_every == 0:
            recent = losses[-cfg.log_every:]
            log(f"step {step + 1}/{cfg.steps} L1 {sum(recent) / len(recent):.4f} m "
                f"({(step + 1) * len(rgb) / (time.perf_counter() - t0):.0f} img/s)")
    return losses


def train_supernet(supernet: DepthSuperNet, loader: DataLoader, cfg: DepthTrainConfig = DepthTrainConfig(),
                   log: Callable[[str], None] | None = None) -> list[float]:
    """OD training: every batch draws per-image sub-networks (`DepthSuperNet.sample_od`). Returns losses."""
    generator = torch.Generator().manual_seed(cfg.seed)
    return _loop(supernet, lambda x: supernet(x, supernet.sample_od(len(x), generator)), loader, cfg, log)


def finetune(model: nn.Module, loader: DataLoader, cfg: DepthTrainConfig,
             log: Callable[[str], None] | None = None,
             on_step: Callable[[int, float], None] | None = None) -> list[float]:
    """Plain training of one standalone network (NetAdapt V1's short per-candidate fine-tune, final fine-tune).

    `on_step(step, loss)` runs after every optimizer step (e.g. to validate at epoch ends).
    """
    return _loop(model, model, loader, cfg, log, on_step)
