"""Tasks by name: what `nas-search` trains, scores, fine-tunes and reports for a kind of space.

A search space names its task (`SearchSpaceSpec.task`: ``classification`` or ``depth``);
`task_of(space)` returns the task object the commands use, so `train`, `search`,
`finetune` and `report` run one code path and ask the task (the `Task` protocol below) for
what differs. A task is a leaf: data, loss, metrics, its own fine-tuning loops and report
cells; what runs *over* a task takes it as an argument (super-network training
`search.train`, fine-tuning `search.finetune`, MCD scoring `search.mcd`), and the
super-network of a space comes from `search.supernet.build_supernet`.

`search.classification.task.ClassificationTask` and `search.depth.task.DepthTask` are the
tasks; `TASKS` is the registry every command lists (`TASK_NAMES`).
"""
from __future__ import annotations

from collections.abc import Callable
from typing import Protocol

import torch
from torch import nn
from torch.utils.data import DataLoader, Dataset

from search.classification.task import ClassificationTask
from search.depth.task import DepthTask
from search.errors import SearchError


class Task(Protocol):
    """What the rest of `search/` asks a task for."""

    name: str  # classification | depth
    score_metric: str  # what `score` returns: top1; depth rmse (score = -RMSE, m) or delta1
    default_data: str  # data spec when none is given (the task's built-in set)
    fixed_holdout: bool  # True: the data set has its own holdout split (`--holdout` is refused)
    headline: tuple[str, ...]  # metrics reported as val_<m>: finetune.json, train log val_<m>_max/_min
    train_defaults: dict  # TrainConfig fields the task fills when left None
    finetune_defaults: dict  # FinetuneConfig fields the task sets
    proposal_lr: float  # NetAdapt V1's per-proposal fine-tune LR
    records_holdout_metrics: bool  # final.json / baselines keep every held-out metric, not only the score
    score_is_proportion: bool  # the score is a share of held-out images (top-1): binomial standard error
    train_metric_name: str | None  # key of the per-batch training figure in the train log (None: none)
    report_holdout_headers: tuple[str, ...]
    report_finetune_headers: tuple[str, ...]
    plot_label: str

    # data
    def dataset(self, spec: str, split: str, image_hw, holdout: int | None = None) -> Dataset:
        """Split train / holdout / val of data `spec` at `image_hw`."""

    def check_data(self, train_set: Dataset, space, spec: str) -> None:
        """SearchError when the data set does not fit the space (e.g. more classes than outputs)."""

    # super-network training (search.train)
    def augment(self, x: torch.Tensor, g: torch.Generator) -> torch.Tensor:
        """The batch as trained on (randomness from `g` only)."""

    def loss(self, output: torch.Tensor, target: torch.Tensor, label_smoothing: float = 0.0) -> torch.Tensor: ...

    def train_metric(self, output: torch.Tensor, target: torch.Tensor) -> float | None:
        """A per-batch sum shown while training (divided by images), or None."""

    def epoch_summary(self, record: dict) -> str: ...

    def result_summary(self, record: dict) -> str | None: ...

    # evaluation
    def evaluate(self, model: nn.Module, loader: DataLoader, max_batches: int | None = None) -> dict[str, float]:
        """{metric: value} of `model` in eval mode (its `headline` metrics among them)."""

    def score(self, metrics: dict[str, float]) -> float:
        """Higher is better: what MCD maximises."""

    def describe(self, metrics: dict[str, float]) -> str: ...

    # fine-tuning
    def train_epochs(self, model: nn.Module, loader: DataLoader, per_epoch: int, cfg,
                     after_epoch: Callable[[int, float], None]) -> None:
        """The final fine-tune (`cfg`: `search.finetune.FinetuneConfig`); `after_epoch(epoch, mean loss)`."""

    def proposal_finetune(self, loader: DataLoader, steps: int, lr: float,
                          seed: int = 0) -> Callable[[nn.Module, int], None]:
        """NetAdapt V1's short fine-tune of one proposal: ``(model, iteration) -> None``."""

    # report
    def report_holdout(self, score: float, metrics: dict | None = None) -> list[str]: ...

    def report_finetune(self, finetune: dict | None) -> list[str]: ...

    def plot_value(self, score: float) -> float:
        """A score as the plots show it (e.g. RMSE = -score)."""


#: Task name -> task class; options (e.g. ``score_metric``) go to its constructor.
TASKS: dict[str, type] = {"classification": ClassificationTask, "depth": DepthTask}
TASK_NAMES = tuple(TASKS)


def get_task(name: str, **options) -> Task:
    """Task by name: ``classification`` or ``depth``; `options` e.g. ``score_metric="delta1"`` (None: default)."""
    if name not in TASKS:
        raise SearchError(f"unknown task {name!r}; known: {', '.join(sorted(TASKS))}")
    options = {k: v for k, v in options.items() if v is not None}
    try:
        return TASKS[name](**options)
    except ValueError as exc:
        raise SearchError(str(exc)) from None


def task_of(space, expected: str | None = None, **options) -> Task:
    """The task of `space`; SearchError (one line) when `expected` (``--task``) names another."""
    if expected is not None and expected != space.task:
        raise SearchError(f"--task {expected}: space {space.name} is a {space.task} space "
                          f"(drop --task or pass --task {space.task})")
    return get_task(space.task, **options)
