"""Fine-tuning one standalone classification network: SGD (Nesterov), cosine LR, pad-crop + flip.

Two callers: the final fine-tune of the searched network (`train_epochs`, through
`ClassificationTask.train_epochs` in `nas-search finetune` and the demo) and NetAdapt V1's
short fine-tune of every proposal (`train_steps`, through
`ClassificationTask.proposal_finetune`). Both are one run of `search.optim.fit`: one
optimizer, one cosine schedule over all steps (no warm-up: the weights are trained).

Reproducible: loader pass ``e`` (numbered from `epoch_offset`) sets the sampler's epoch to
``e`` and augments with a generator seeded ``seed * 1_000_003 + e``.
"""
from __future__ import annotations

import itertools
from collections.abc import Callable, Iterable, Iterator

import torch
import torch.nn.functional as F
from torch import nn
from torch.utils.data import DataLoader

from search.data import augment_batch, start_epoch
from search.optim import Step, fit, make_optimizer, warmup_cosine_schedule


def train_steps(model: nn.Module, loader: DataLoader, steps: int, lr: float, seed: int = 0, momentum: float = 0.9,
                weight_decay: float = 4e-5, label_smoothing: float = 0.1, epoch_offset: int = 0) -> float:
    """`steps` SGD steps, cosine decay from `lr` to 0 over them, as many loader passes as needed;
    returns the mean loss per step. `model` ends in eval mode."""
    losses: list[float] = []
    _run(model, loader, lr, seed, momentum, weight_decay, label_smoothing, itertools.count(epoch_offset),
         steps, losses, max_steps=steps)
    return sum(losses) / max(len(losses), 1)


def train_epochs(model: nn.Module, loader: DataLoader, per_epoch: int, epochs: int, lr: float, seed: int = 0,
                 momentum: float = 0.9, weight_decay: float = 4e-5, label_smoothing: float = 0.1,
                 after_epoch: Callable[[int, float], None] | None = None) -> None:
    """`epochs` epochs of `per_epoch` steps (each a fresh loader pass), one cosine over all of them;
    `after_epoch(epoch, mean loss of its steps)` after each. `model` ends in eval mode."""
    losses: list[float] = []

    def on_epoch(epoch: int, steps: int, seconds: float) -> None:
        if after_epoch is not None:
            after_epoch(epoch, sum(losses[-steps:]) / steps if steps else 0.0)

    _run(model, loader, lr, seed, momentum, weight_decay, label_smoothing, range(epochs), per_epoch * epochs,
         losses, per_epoch=per_epoch, on_epoch=on_epoch)


def _run(model: nn.Module, loader: DataLoader, lr: float, seed: int, momentum: float, weight_decay: float,
         label_smoothing: float, epochs: Iterable[int], total_steps: int, losses: list[float],
         max_steps: int | None = None, per_epoch: int | None = None,
         on_epoch: Callable[[int, int, float], None] | None = None) -> None:
    """One SGD run, cosine over `total_steps`; appends each step's loss to `losses`."""
    optimizer = make_optimizer(model, "sgd", lr, weight_decay, momentum, nesterov=True)
    scheduler = warmup_cosine_schedule(optimizer, 0, total_steps)

    def batches(epoch: int) -> Iterator:
        start_epoch(loader, epoch)
        g = torch.Generator().manual_seed(seed * 1_000_003 + epoch)
        for x, y in loader:
            yield augment_batch(x, g), y

    def on_step(step: Step) -> None:
        losses.append(step.loss.item())

    def loss(output: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
        return F.cross_entropy(output, target, label_smoothing=label_smoothing)

    fit(model, loss, optimizer, batches, epochs, scheduler=scheduler, steps_per_epoch=per_epoch, max_steps=max_steps,
        on_step=on_step, on_epoch=on_epoch)
    model.eval()
