"""Training loops of the depth task: the OD super-network, and a short fine-tune of one network.

Kept small and visible (nanoGPT style): sample per-image widths, masked forward, masked L1,
step, all through `search.optim.fit`. AdamW with warm-up + cosine: it converges in the few
hundred steps a CPU demo affords (FastDepth itself used SGD for 20 epochs on NYU; pass
`optimizer="sgd"` for that). The steps run over as many loader passes as they need (pass
``e`` sets the sampler's and the data set's epoch to ``e``: NYU augments per epoch).
Deterministic for a seed (data order, OD draws; the caller seeds the model init).

`nas-search train` on a depth space trains with `search.train` (epochs, checkpoints, DDP);
`train_supernet` is the same OD step for scripts that hold a super-network in memory
(tests, `benchmarks/bench_depth.py`). `finetune` is the depth task's fine-tune
(`DepthTask.train_epochs`, `DepthTask.proposal_finetune`).

CPU note: on a loaded 2-core host, torch's multi-threaded depthwise-conv backward can be
10x slower than one thread; callers (benchmarks, tests) use `torch.set_num_threads(1)`.
"""
from __future__ import annotations

import itertools
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass

import torch
from torch import nn
from torch.utils.data import DataLoader

from search.data import start_epoch
from search.optim import Step, fit, make_optimizer, warmup_cosine_schedule
from search.supernet import DepthSuperNet

from .losses import masked_l1


@dataclass(frozen=True)
class DepthTrainConfig:
    """Settings of `train_supernet` / `finetune`; every default says why."""

    steps: int = 600  # tiny space on builtin-depth, batch 32: ~2-3 min on one CPU core
    lr: float = 2e-3  # AdamW default that is stable from scratch with BN
    weight_decay: float = 1e-4  # light: the data set is small, the network smaller
    optimizer: str = "adamw"  # or "sgd" (momentum 0.9, no Nesterov: FastDepth's choice)
    warmup_steps: int = 20  # fresh BN statistics + large steps diverge without it
    seed: int = 0  # OD draws of `train_supernet`
    log_every: int = 50  # steps between log lines (mean L1 of those steps, img/s)


def train_supernet(supernet: DepthSuperNet, loader: DataLoader, cfg: DepthTrainConfig = DepthTrainConfig(),
                   log: Callable[[str], None] | None = None) -> list[float]:
    """OD training: every batch draws per-image sub-networks (`DepthSuperNet.sample_od`). Returns losses."""
    generator = torch.Generator().manual_seed(cfg.seed)
    return _train(supernet, lambda x: supernet(x, supernet.sample_od(len(x), generator)), loader, cfg, log)


def finetune(model: nn.Module, loader: DataLoader, cfg: DepthTrainConfig,
             log: Callable[[str], None] | None = None,
             on_step: Callable[[int, float], None] | None = None) -> list[float]:
    """Plain training of one standalone network (NetAdapt V1's short per-candidate fine-tune, final fine-tune).

    `on_step(step, loss)` (0-based step, L1 in m) runs after every optimizer step (e.g. to
    validate at epoch ends). Returns the per-step losses.
    """
    return _train(model, model, loader, cfg, log, on_step)


def _train(model: nn.Module, forward: Callable, loader: DataLoader, cfg: DepthTrainConfig,
           log: Callable[[str], None] | None, on_step: Callable[[int, float], None] | None = None) -> list[float]:
    if len(loader) == 0:  # would loop forever without a step
        raise ValueError(f"depth training: the loader yields no batch ({len(loader.dataset)} images, "
                         f"batch size {loader.batch_size}, drop_last {loader.drop_last})")
    # channels-last: CPU depthwise convolutions (and their backward) run ~2.5x faster in NHWC
    model.to(memory_format=torch.channels_last)
    optimizer = make_optimizer(model, cfg.optimizer, cfg.lr, cfg.weight_decay, momentum=0.9, nesterov=False)
    scheduler = warmup_cosine_schedule(optimizer, cfg.warmup_steps, cfg.steps)
    losses: list[float] = []
    t0 = time.perf_counter()

    def batches(epoch: int) -> Iterator:
        start_epoch(loader, epoch)
        for rgb, depth in loader:
            yield rgb.contiguous(memory_format=torch.channels_last), depth

    def after_step(step: Step) -> None:
        losses.append(float(step.loss.detach()))
        if on_step is not None:
            on_step(step.done - 1, losses[-1])
        if log and step.done % cfg.log_every == 0:
            recent = losses[-cfg.log_every:]
            log(f"step {step.done}/{cfg.steps} L1 {sum(recent) / len(recent):.4f} m "
                f"({step.done * len(step.target) / (time.perf_counter() - t0):.0f} img/s)")

    fit(model, masked_l1, optimizer, batches, itertools.count(0), forward=forward, scheduler=scheduler,
        max_steps=cfg.steps, on_step=after_step)
    return losses
