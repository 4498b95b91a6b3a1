"""The training toolkit: parameter groups, warm-up + cosine schedule, and the one fit loop.

Every training in `nas-search` runs through here: the OD super-network (`search/train.py`),
the final fine-tune and NetAdapt V1's per-proposal fine-tunes of both tasks
(`search/classification/train.py`, `search/depth/train.py`), hence `nas-search finetune`
and the demo. What differs between them (data order and augmentation per epoch, the OD
draw, the loss, what is logged) is passed in as callables; the loop itself is the nanoGPT
one, visible in `fit`:

    for epoch:
        for inputs, target in batches(epoch):        # the epoch's data order / augmentation
            loss = loss_fn(forward(inputs), target)
            loss.backward(); optimizer.step(); scheduler.step()

`fit` draws no random numbers itself, so the callers' seeds and RNG consumption order
(tests/test_train.py: resume == uninterrupted) are theirs alone.
"""
from __future__ import annotations

import contextlib
import math
import time
from collections.abc import Callable, Iterable, Iterator
from contextlib import AbstractContextManager
from dataclasses import dataclass
from typing import Any

import torch
from torch import nn
from tqdm import tqdm

from search.errors import SearchError

OPTIMIZERS = ("sgd", "adamw")


class NonFiniteLoss(SearchError):
    """The loss of a step was nan or inf (training diverged: usually too high a learning rate).

    Raised by `fit` before that step's backward pass, so the weights and whatever the caller
    saved after the previous epoch are the last good ones."""

    def __init__(self, epoch: int, index: int, loss: float, lr: float | None) -> None:
        at_lr = f" at lr {lr:.3g}" if lr is not None else ""
        super().__init__(f"training diverged: loss {loss} at epoch {epoch + 1}, step {index + 1}{at_lr}; "
                         "lower --lr (or check the data)")
        self.epoch, self.index, self.loss, self.lr = epoch, index, loss, lr


def param_groups(model: nn.Module, weight_decay: float) -> list[dict]:
    """Weight decay on weight matrices and kernels only; none on BN parameters and biases (dim <= 1)."""
    decay = [p for p in model.parameters() if p.dim() > 1]
    no_decay = [p for p in model.parameters() if p.dim() <= 1]
    return [{"params": decay, "weight_decay": weight_decay}, {"params": no_decay, "weight_decay": 0.0}]


def make_optimizer(model: nn.Module, name: str, lr: float, weight_decay: float, momentum: float = 0.9,
                   nesterov: bool = True) -> torch.optim.Optimizer:
    """``sgd`` (`momentum`, `nesterov`) or ``adamw`` (torch defaults) over `param_groups`; ValueError otherwise."""
    groups = param_groups(model, weight_decay)
    if name == "sgd":
        return torch.optim.SGD(groups, lr=lr, momentum=momentum, nesterov=nesterov)
    if name == "adamw":
        return torch.optim.AdamW(groups, lr=lr)
    raise ValueError(f"unknown optimizer {name!r}; expected 'sgd' or 'adamw'")


def warmup_cosine(warmup_steps: int, total_steps: int) -> Callable[[int], float]:
    """LR factor of step `s` (0-based): linear warm-up to 1 over `warmup_steps`, then cosine decay to 0
    at `total_steps` (0 beyond it). `warmup_steps` 0: plain cosine from the first step."""
    def factor(step: int) -> float:
        if step < warmup_steps:
            return (step + 1) / warmup_steps
        progress = (step - warmup_steps) / max(1, total_steps - warmup_steps)
        return 0.5 * (1 + math.cos(math.pi * min(1.0, progress)))
    return factor


def warmup_cosine_schedule(optimizer: torch.optim.Optimizer, warmup_steps: int, total_steps: int,
                           first_step: int = 0) -> torch.optim.lr_scheduler.LambdaLR:
    """`warmup_cosine` per optimizer step, starting at step `first_step` of the schedule (a run that
    continues an earlier one's cosine, e.g. one epoch of several)."""
    factor = warmup_cosine(warmup_steps, total_steps)
    return torch.optim.lr_scheduler.LambdaLR(optimizer, lambda step: factor(first_step + step))


@dataclass(frozen=True)
class Step:
    """One optimizer step, as `fit`'s `on_step` sees it."""

    epoch: int  # the epoch index given by `epochs`
    index: int  # step within the epoch (0-based)
    done: int  # steps taken by this `fit` call, this one included
    inputs: Any  # what `forward` received
    target: torch.Tensor
    output: torch.Tensor
    loss: torch.Tensor  # the loss tensor (detach it before keeping it)
    seconds: float  # since the epoch's start (s)


@dataclass
class EpochTally:
    """Sums over one epoch's steps (reset at each epoch's first step): the loss and the task's
    per-batch training figure weighted by images, and the images seen; `add` is an `on_step` body."""

    loss_sum: float = 0.0
    metric_sum: float = 0.0
    seen: float = 0.0

    def add(self, step: Step, metric: Callable[[torch.Tensor, torch.Tensor], float] | None = None) -> None:
        """Count `step`; `metric(output, target)` is a per-batch sum over its images (None: no figure)."""
        if step.index == 0:
            self.loss_sum = self.metric_sum = self.seen = 0.0
        self.loss_sum += float(step.loss.detach()) * len(step.target)
        if metric is not None:
            self.metric_sum += metric(step.output, step.target)
        self.seen += len(step.target)


def fit(model: nn.Module, loss_fn: Callable[[torch.Tensor, torch.Tensor], torch.Tensor],
        optimizer: torch.optim.Optimizer, batches: Callable[[int], Iterable[tuple[Any, torch.Tensor]]],
        epochs: Iterable[int], *, forward: Callable[[Any], torch.Tensor] | None = None,
        scheduler: torch.optim.lr_scheduler.LRScheduler | None = None, steps_per_epoch: int | None = None,
        max_steps: int | None = None, scaler: torch.amp.GradScaler | None = None,
        autocast: Callable[[], AbstractContextManager] = contextlib.nullcontext,
        on_step: Callable[[Step], dict | None] | None = None,
        on_epoch: Callable[[int, int, float], None] | None = None,
        progress: Callable[[int], str] | None = None) -> int:
    """Train `model` for `epochs` (indices: ``range(start, end)``, ``itertools.count(0)``); returns the steps taken.

    Each epoch puts `model` in train mode and takes the batches of `batches(epoch)` (an
    iterable of ``(inputs, target)``; it owns the epoch's data order, augmentation and any
    draw of random sub-networks), at most `steps_per_epoch` of them, and stops the whole fit
    after `max_steps` steps. A batch is only fetched when a step will be taken on it. Per
    step: ``loss_fn(forward(inputs), target)`` under `autocast()`, zero grads, backward and
    optimizer step (through `scaler` when given: mixed precision), `scheduler.step()`, then
    ``on_step(Step)``, whose returned dict (if any) is shown on the progress bar.
    ``on_epoch(epoch, steps, seconds)`` runs after each epoch. `progress(epoch)`, when given,
    is the description of a tqdm bar per epoch. `forward` None: ``model(inputs)``.
    A nan or inf loss raises `NonFiniteLoss` before its backward pass (no step is taken on it).
    """
    forward = forward or model
    done = 0
    for epoch in epochs:
        if max_steps is not None and done >= max_steps:
            break
        model.train()
        t0 = time.perf_counter()
        bar = _bar(steps_per_epoch, progress(epoch)) if progress is not None else None
        index = 0
        for inputs, target in _limited(batches(epoch), steps_per_epoch,
                                       None if max_steps is None else max_steps - done):
            with autocast():
                output = forward(inputs)
                loss = loss_fn(output, target)
            if not torch.isfinite(loss.detach()).all():  # before the step: the weights stay the last good ones
                if bar is not None:
                    bar.close()
                raise NonFiniteLoss(epoch, index, float(loss.detach().float().mean()),
                                    optimizer.param_groups[0].get("lr"))
            optimizer.zero_grad(set_to_none=True)
            if scaler is None:
                loss.backward()
                optimizer.step()
            else:
                scaler.scale(loss).backward()
                scaler.step(optimizer)
                scaler.update()
            if scheduler is not None:
                scheduler.step()
            done += 1
            shown = on_step(Step(epoch, index, done, inputs, target, output, loss, time.perf_counter() - t0)) \
                if on_step is not None else None
            if bar is not None:
                if shown:
                    bar.set_postfix(**shown)
                bar.update()
            index += 1
        if bar is not None:
            bar.close()
        if index == 0 and steps_per_epoch != 0:
            raise ValueError(f"fit: epoch {epoch} yielded no batch (an empty data set, or fewer images than "
                             "one batch)")
        if on_epoch is not None:
            on_epoch(epoch, index, time.perf_counter() - t0)
    return done


def _limited(batches: Iterable, *limits: int | None) -> Iterator:
    """The first min(`limits`) items of `batches` (None: no limit), fetching none beyond them."""
    bound = min((n for n in limits if n is not None), default=None)
    if bound is not None and bound <= 0:
        return
    for i, item in enumerate(batches):
        yield item
        if bound is not None and i + 1 >= bound:
            return


def _bar(total: int | None, desc: str) -> tqdm:
    return tqdm(total=total, desc=desc, leave=False, dynamic_ncols=True)
