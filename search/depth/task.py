"""The depth task: what `--task depth` plugs into training, MCD scoring and reports.

`DepthTask` bundles the data sets (`builtin-depth` or a NYU h5 root), the loss (masked
L1), evaluation (RMSE, MAE, REL, δ1-3 per image averaged, `metrics.py`) and the score MCD
maximises: ``-RMSE`` by default (metres; higher is better), or ``delta1``.
`scorer(...)` returns MCD's `SupernetScorer` wired with this task's evaluation, so a depth
search is `run_mcd(space, constraints, task.scorer(supernet, holdout, calib), out)`.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Callable

import torch
from torch import nn
from torch.utils.data import DataLoader, Dataset

from .data import BUILTIN, get_depth_dataset
from .losses import masked_l1
from .metrics import DepthMeter

SCORES = ("rmse", "delta1")


@dataclass(frozen=True)
class DepthTask:
    """Dense depth estimation. `score_metric`: ``rmse`` (score = -RMSE) or ``delta1`` (score = δ1)."""

    name: str = "depth"
    score_metric: str = "rmse"

    def __post_init__(self) -> None:
        if self.score_metric not in SCORES:
            raise ValueError(f"depth task: score metric {self.score_metric!r} is not one of {SCORES}")

    # ----------------------------------------------------------------- data
    default_data: str = BUILTIN

    def dataset(self, spec: str, split: str, image_hw, seed: int = 0, size: int | None = None) -> Dataset:
        """`spec`: ``builtin-depth`` or a NYU Depth v2 h5 root; split train / holdout / val."""
        return get_depth_dataset(spec, split, image_hw, seed, size)

    # ----------------------------------------------------------------- training
    def loss(self, pred: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
        return masked_l1(pred, target)

    # ----------------------------------------------------------------- evaluation
    @torch.no_grad()
    def evaluate(self, model: nn.Module, loader: DataLoader, max_batches: int | None = None,
                 forward: Callable | None = None) -> dict[str, float]:
        """Metrics dict (rmse, mae, rel, delta1-3 per image averaged; images) of `model` in eval mode."""
        was_training = model.training
        model.eval()
        meter = DepthMeter()
        device = next(model.parameters()).device
        for i, (rgb, depth) in enumerate(loader):
            if max_batches is not None and i >= max_batches:
                break
            pred = (forward or model)(rgb.to(device))
            meter.update(pred.cpu(), depth)
        model.train(was_training)
        return meter.result()

    def score(self, metrics: dict[str, float]) -> float:
        """Higher is better: -RMSE (m) or δ1."""
        return -metrics["rmse"] if self.score_metric == "rmse" else metrics["delta1"]

    def evaluate_fn(self, max_batches: int | None = None) -> Callable[[nn.Module, DataLoader], float]:
        """``(model, loader) -> score`` for `search.mcd.scoring.SupernetScorer`."""
        return lambda model, loader: self.score(self.evaluate(model, loader, max_batches))

    def scorer(self, supernet, holdout_loader: DataLoader, calib_loader: DataLoader, calib_batches: int = 10,
               max_batches: int | None = None):
        """MCD scorer: slice the candidate, recalibrate BN on `calib_loader`, score on `holdout_loader`."""
        from search.mcd.scoring import SupernetScorer
        return SupernetScorer(supernet, holdout_loader, calib_loader, calib_batches, self.evaluate_fn(max_batches))


TASKS = {"depth": DepthTask}


def get_task(name: str, **options) -> DepthTask:
    """Task by name (``depth``); classification lives in the default code path."""
    if name not in TASKS:
        raise ValueError(f"unknown task {name!r}; known: {', '.join(sorted(TASKS))}")
    return TASKS[name](**options)
