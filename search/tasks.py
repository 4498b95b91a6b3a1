"""Tasks by name: what `nas-search` trains, scores, fine-tunes and reports for a kind of space.

A search space names its task (`SearchSpaceSpec.task`: ``classification`` or ``depth``);
`task_of(space)` returns the task object the commands use, so `train`, `search`,
`finetune` and `report` run one code path and ask the task for what differs:

- data: ``dataset(spec, split, image_hw, holdout)`` (splits train / holdout / val);
- the super-network: ``build_supernet(space, policy, dropout)``;
- training: ``augment(x, g)`` per batch, ``loss(output, target, label_smoothing)``,
  ``train_metric(output, target)`` (a per-batch sum shown while training, or None),
  ``validate_extremes(...)`` after each epoch, ``epoch_summary(record)``;
- evaluation: ``evaluate(model, loader) -> {metric: value}``, ``score(metrics)`` (higher is
  better; what MCD maximises), ``scorer(...)`` (MCD's `SupernetScorer`), ``headline`` (the
  metrics written to finetune.json as ``val_<metric>``), ``describe(metrics)``;
- fine-tuning: ``train_epochs(...)`` (the final fine-tune) and ``proposal_finetune(...)``
  (NetAdapt V1's short fine-tune of every proposal);
- report: column labels and cells (``report_*``).

`ClassificationTask` is the classification path as it was before tasks existed (same
numbers); `search.depth.task.DepthTask` is the depth task.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Callable

import torch
from torch import nn
from torch.utils.data import DataLoader, Dataset

from search.errors import SearchError

TASK_NAMES = ("classification", "depth")


@dataclass(frozen=True)
class ClassificationTask:
    """Image classification (MobileNetV3 spaces): cross-entropy, top-1, score = top-1 in [0, 1]."""

    name: str = "classification"
    score_metric: str = "top1"

    default_data = "builtin"
    fixed_holdout = False  # the holdout split is carved out of train (`--holdout` images)
    headline = ("acc",)  # finetune.json: val_acc_before, val_acc
    train_defaults = {"data": "builtin", "optimizer": "sgd"}  # TrainConfig fields left None
    finetune_defaults = {"lr": 0.02, "weight_decay": 4e-5}  # FinetuneConfig fields left None
    proposal_lr = 0.01  # NetAdapt V1's per-proposal fine-tune (SGD)
    records_holdout_metrics = False  # the score is the one held-out metric (top-1)

    def __post_init__(self) -> None:
        if self.score_metric != "top1":
            raise ValueError(f"classification task: score metric {self.score_metric!r} is not 'top1'")

    # ----------------------------------------------------------------- data
    def dataset(self, spec: str, split: str, image_hw, holdout: int | None = None) -> Dataset:
        """`holdout`: training images set aside as the holdout split (None: 10 %, at most 10 k)."""
        from search.data import get_dataset
        return get_dataset(spec, split, _side(image_hw), holdout=holdout)

    def check_data(self, train_set: Dataset, space, spec: str) -> None:
        classes = train_set.info.num_classes
        if classes > space.spec.num_classes:
            raise SearchError(f"data {spec} has {classes} classes but space {space.name} has "
                              f"{space.spec.num_classes} outputs")

    # ----------------------------------------------------------------- training
    def build_supernet(self, space, policy=None, dropout: float = 0.0) -> nn.Module:
        from search.supernet import ODPolicy, SuperNet
        return SuperNet(space, dropout=dropout, policy=policy or ODPolicy())

    def augment(self, x: torch.Tensor, g: torch.Generator) -> torch.Tensor:
        from search.data import augment_batch
        return augment_batch(x, g)

    def loss(self, output: torch.Tensor, target: torch.Tensor, label_smoothing: float = 0.0) -> torch.Tensor:
        return nn.functional.cross_entropy(output, target, label_smoothing=label_smoothing)

    def train_metric(self, output: torch.Tensor, target: torch.Tensor) -> float:
        """Correct predictions in the batch (train_acc_od = sum / images)."""
        return float((output.argmax(1) == target).sum())

    train_metric_name = "train_acc_od"

    def validate_extremes(self, supernet, bn_loader, val_loader, bn_batches: int,
                          val_batches: int | None = None) -> dict[str, float]:
        from search.train import validate_extremes
        return validate_extremes(supernet, bn_loader, val_loader, bn_batches, val_batches)

    def epoch_summary(self, record: dict) -> str:
        return (f"loss {record['train_loss']:.3f}  OD acc {record['train_acc_od']:.3f}  "
                f"val max {record['val_acc_max']:.3f}  val min {record['val_acc_min']:.3f}  "
                f"{record['images_per_s']:.0f} img/s")

    def result_summary(self, record: dict) -> str | None:
        """The last epoch in a few words (None when the record lacks validation)."""
        if record.get("val_acc_max") is None:
            return None
        return f"val acc max {record['val_acc_max']:.3f}, min {record['val_acc_min']:.3f}"

    # ----------------------------------------------------------------- evaluation
    def evaluate(self, model: nn.Module, loader: DataLoader, max_batches: int | None = None) -> dict[str, float]:
        from search.evaluate import evaluate
        return {"acc": evaluate(model, loader, max_batches=max_batches)}

    def score(self, metrics: dict[str, float]) -> float:
        return metrics["acc"]

    def describe(self, metrics: dict[str, float]) -> str:
        return f"val top-1 {metrics['acc']:.4f}"

    def scorer(self, supernet, holdout_loader: DataLoader, calib_loader: DataLoader, calib_batches: int = 10):
        from search.mcd.scoring import SupernetScorer
        return SupernetScorer(supernet, holdout_loader, calib_loader, calib_batches)

    # ----------------------------------------------------------------- fine-tuning
    def train_epochs(self, model: nn.Module, loader: DataLoader, per_epoch: int, cfg,
                     after_epoch: Callable[[int, float], None]) -> None:
        """`cfg.epochs` epochs of `per_epoch` SGD steps, cosine over all; `after_epoch(epoch, mean loss)`."""
        from search.finetune import train_steps
        total = per_epoch * cfg.epochs
        for epoch in range(cfg.epochs):
            loss = train_steps(model, loader, per_epoch, cfg.lr, cfg.seed, cfg.momentum, cfg.weight_decay,
                               cfg.label_smoothing, epoch_offset=epoch, total_steps=total,
                               step_offset=epoch * per_epoch)
            after_epoch(epoch, loss)

    def proposal_finetune(self, loader: DataLoader, steps: int, lr: float,
                          seed: int = 0) -> Callable[[nn.Module, int], None]:
        """NetAdapt V1's short fine-tune of one proposal: ``(model, iteration) -> None``."""
        from search.finetune import train_steps
        return lambda model, iteration: train_steps(model, loader, steps, lr, seed=seed + iteration,
                                                    epoch_offset=iteration)

    # ----------------------------------------------------------------- report
    report_holdout_headers = ("held-out score",)
    report_finetune_headers = ("val top-1 (fine-tuned)",)
    plot_label = "held-out score (super-network weights)"

    def report_holdout(self, score: float, metrics: dict | None = None) -> list[str]:
        return [f"{score:.4f}"]

    def report_finetune(self, finetune: dict | None) -> list[str]:
        return [f"{finetune['val_acc']:.4f}" if finetune else "-"]

    def plot_value(self, score: float) -> float:
        return score


def _side(image_hw) -> int:
    return image_hw if isinstance(image_hw, int) else int(image_hw[0])


def get_task(name: str, **options):
    """Task by name: ``classification`` or ``depth``; `options` e.g. ``score_metric="delta1"``."""
    from search.depth.task import DepthTask
    tasks = {"classification": ClassificationTask, "depth": DepthTask}
    if name not in tasks:
        raise SearchError(f"unknown task {name!r}; known: {', '.join(sorted(tasks))}")
    options = {k: v for k, v in options.items() if v is not None}
    try:
        return tasks[name](**options)
    except ValueError as exc:
        raise SearchError(str(exc)) from None


def task_of(space, expected: str | None = None, **options):
    """The task of `space`; SearchError (one line) when `expected` (``--task``) names another."""
    if expected is not None and expected != space.task:
        raise SearchError(f"--task {expected}: space {space.name} is a {space.task} space "
                          f"(drop --task or pass --task {space.task})")
    return get_task(space.task, **options)
