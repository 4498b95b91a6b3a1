"""Training one sub-network alone, from freshly initialised weights: the "trained from scratch" baseline.

A searched network must beat what a user would train anyway: the same architecture (or the
uniform width multiplier at the same latency) trained on its own. For the comparison to be
fair, `train_from_scratch` trains with the super-network's own recipe (`search/train.py`):
`TrainConfig` resolved from the task's `train_defaults` (batch size, optimizer, peak learning
rate `SGD_LR_PER_128` x batch / 128 for SGD or AdamW's, weight decay, one warm-up epoch then
cosine to 0, label smoothing, channels-last), the task's augmentation and loss, the same
train split (its holdout excluded, so a network trained here never sees the images MCD
scores with) and the same seeded data order and augmentation stream (`epoch_generator`).
What it drops is what only a super-network needs: OD draws, grouped BN, max-network warm-up.

    model = space.build_subnet(config)         # fresh init, seeded: no super-network weight
    for epoch:
        for x, y in loader:                    # same split, order and augmentation as `train`
            loss = task.loss(model(task.augment(x, g)), y, label_smoothing)
            loss.backward(); optimizer.step(); scheduler.step()

Deterministic for a seed on CPU (tests/test_scratch.py). One process: no DDP (a tiny network
trains fastest on one core; under torchrun every rank would train the same network).
"""
from __future__ import annotations

import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass

import torch
from torch import nn

from search import distributed
from search.data import make_loader, start_epoch
from search.errors import SearchError
from search.optim import EpochTally, fit, make_optimizer, warmup_cosine_schedule
from search.spaces import SearchSpace, get_space
from search.spaces.space import SubnetConfig
from search.tasks import task_of
from search.train import TrainConfig, autocast_for, epoch_generator


@dataclass
class ScratchResult:
    """A sub-network trained alone, what it cost and how it trained."""

    model: nn.Module  # the trained network, in eval mode (on the device it trained on)
    time: dict  # {"wall_s": training wall time (s), "cpu_s": process CPU time of it (s), all threads}
    # The recipe (optimizer, lr, batch_size, ...), train_images, train_loss, epoch_s (mean wall s per epoch),
    # history (per epoch: train_loss, train_metric = the task's training figure, classification top-1 on the
    # augmented batches; seconds, steps, lr) and, when evaluated, val_<m> of the task's headline metrics.
    train_metrics: dict


def train_from_scratch(space: SearchSpace | str, config: SubnetConfig, epochs: int, seed: int,
                       data_spec: str | None = None, batch_size: int | None = None,
                       steps_per_epoch: int | None = None, log: Callable[[str], None] | None = None, *,
                       holdout: int | None = None, device: str | None = None, evaluate: bool = True,
                       val_batches: int | None = None) -> ScratchResult:
    """Train the sub-network `config` of `space` alone for `epochs` epochs from a fresh, `seed`-ed init.

    `data_spec` None: the task's built-in set (``builtin``; depth ``builtin-depth``).
    `batch_size` None: the task's (128; depth 8), the learning rate scaled with it as in
    `train`. `steps_per_epoch` caps each epoch (smoke runs). `holdout`: images set aside as
    the holdout split, as `TrainConfig.holdout` (None: the default split; a super-network
    trained with ``--holdout N`` pairs with N here). `device` None: CUDA when present,
    else CPU (bf16/fp16 autocast on CUDA, as `train`). `evaluate`: validation metrics of the
    trained network in ``train_metrics["val_<m>"]`` (not part of `time`), on at most
    `val_batches` batches of 256 (None: the whole val split).
    """
    if isinstance(space, str):
        space = get_space(space)
    _check_count("epochs", epochs)
    _check_count("batch_size", batch_size, optional=True)
    _check_count("steps_per_epoch", steps_per_epoch, optional=True)
    try:
        space.validate(config)
    except ValueError as exc:
        raise SearchError(str(exc)) from None
    task = task_of(space)
    if task.fixed_holdout and holdout is not None:
        raise SearchError(f"holdout: {task.name} data sets have a fixed holdout split (never trained on); "
                          "leave it None")
    cfg = TrainConfig(space=space.name, data=data_spec, epochs=epochs, batch_size=batch_size, seed=seed,
                      steps_per_epoch=steps_per_epoch, granularity=space.granularity, holdout=holdout).resolved(task)
    dev = distributed.init_from_env(device).device
    train_set = task.dataset(cfg.data, "train", space.spec.input_hw, holdout=cfg.holdout)  # as `train`
    task.check_data(train_set, space, cfg.data)
    loader = make_loader(train_set, cfg.batch_size, shuffle=True, seed=cfg.seed, workers=cfg.workers,
                         drop_last=True)
    steps = len(loader) if cfg.steps_per_epoch is None else min(len(loader), cfg.steps_per_epoch)
    if steps == 0:
        raise SearchError(f"data {cfg.data}: {len(train_set)} training images is less than one batch of "
                          f"{cfg.batch_size}")

    torch.manual_seed(cfg.seed)
    fmt = torch.channels_last if cfg.channels_last else torch.contiguous_format
    model = space.build_subnet(config).to(dev, memory_format=fmt)
    lr, weight_decay = cfg.resolved_lr(1), cfg.resolved_weight_decay()
    optimizer = make_optimizer(model, cfg.optimizer, lr, weight_decay, cfg.momentum, cfg.nesterov)
    scheduler = warmup_cosine_schedule(optimizer, round(cfg.warmup_epochs * steps), cfg.epochs * steps)
    use_amp = cfg.amp and dev.type == "cuda"
    scaler = torch.amp.GradScaler("cuda", enabled=use_amp and not torch.cuda.is_bf16_supported())
    history: list[dict] = []
    tally = EpochTally()
    train_metric = task.train_metric if task.train_metric_name else None

    def batches(epoch: int) -> Iterator:
        start_epoch(loader, epoch)
        g = epoch_generator(cfg.seed, epoch, 0)
        for x, y in loader:
            yield task.augment(x, g).to(dev, non_blocking=True).contiguous(memory_format=fmt), y.to(dev)

    def loss(output: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
        return task.loss(output, target, cfg.label_smoothing)

    def on_epoch(epoch: int, done: int, seconds: float) -> None:
        record = {"epoch": epoch, "train_loss": tally.loss_sum / tally.seen, "seconds": round(seconds, 3),
                  "steps": done, "lr": optimizer.param_groups[0]["lr"]}
        if task.train_metric_name:
            record["train_metric"] = tally.metric_sum / tally.seen
        history.append(record)
        if log is not None:
            log(f"from scratch epoch {epoch + 1}/{cfg.epochs}: loss {record['train_loss']:.4f} ({seconds:.1f}s)")

    wall0, cpu0 = time.perf_counter(), time.process_time()
    fit(model, loss, optimizer, batches, range(cfg.epochs), scheduler=scheduler, steps_per_epoch=steps,
        scaler=scaler if use_amp else None, autocast=lambda: autocast_for(dev, use_amp),
        on_step=lambda step: tally.add(step, train_metric),
        on_epoch=on_epoch)
    spent = {"wall_s": time.perf_counter() - wall0, "cpu_s": time.process_time() - cpu0}
    model.eval()
    metrics = {"space": space.name, "task": task.name, "data": cfg.data, "seed": cfg.seed, "epochs": cfg.epochs,
               "steps_per_epoch": steps, "batch_size": cfg.batch_size, "train_images": len(train_set),
               "optimizer": cfg.optimizer, "lr": lr, "weight_decay": weight_decay,
               "warmup_epochs": cfg.warmup_epochs, "label_smoothing": cfg.label_smoothing,
               "train_loss": history[-1]["train_loss"], "history": history,
               "epoch_s": spent["wall_s"] / cfg.epochs}
    if evaluate:
        t0 = time.perf_counter()
        val = task.evaluate(model, make_loader(task.dataset(cfg.data, "val", space.spec.input_hw), 256), val_batches)
        metrics.update({f"val_{k}": val[k] for k in task.headline}, eval_s=time.perf_counter() - t0)
        if log is not None:
            log(f"from scratch: {task.describe(val)} after {cfg.epochs} epochs ({spent['wall_s']:.0f}s)")
    return ScratchResult(model, spent, metrics)


def _check_count(name: str, value, optional: bool = False) -> None:
    """SearchError (one line) unless `value` is an integer >= 1 (or None when `optional`)."""
    if value is None and optional:
        return
    if isinstance(value, bool) or not isinstance(value, int) or value < 1:
        raise SearchError(f"train_from_scratch {name}: expected an integer >= 1, got {value!r}")
