"""The depth task: what `--task depth` plugs into training, MCD scoring and reports.

`DepthTask` bundles the data sets (`builtin-depth` or a NYU h5 root), the loss (masked
L1), evaluation (RMSE, MAE, REL, δ1-3 per image averaged, `metrics.py`) and the score MCD
maximises: ``-RMSE`` by default (metres; higher is better), or ``delta1``, and its
fine-tuning loops (`train.py`). The methods are the `search.tasks.Task` interface
`nas-search` uses (`search.classification.task.ClassificationTask` has the same ones).
"""
from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

import torch
from torch import nn
from torch.utils.data import DataLoader, Dataset

from .data import BUILTIN, get_depth_dataset
from .losses import masked_l1
from .metrics import DepthMeter
from .train import DepthTrainConfig, finetune

SCORES = ("rmse", "delta1")
#: Images per forward pass when evaluating (eval mode: per-image results do not depend on it). A
#: loader batch of 256 at 224 px held ~5 GB of activations of the max fastdepth network on CPU.
EVAL_CHUNK = 16


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
    fixed_holdout = True  # NYU: files named *00001.h5 / *00201.h5; builtin-depth: its own seed stream
    headline = ("rmse", "delta1")  # finetune.json val_rmse(_before), val_delta1(_before); train log val_rmse_max...
    # TrainConfig fields left None: AdamW and light decay, as DepthTrainConfig (converges in few steps)
    # Per-image OD (od_groups 0): DepthSuperNet has no per-group BatchNorm yet (docs/depth.md).
    # batch_size 8: FastDepth's own; a fastdepth (224 px) step then peaks ~1.5 GB above the process on CPU
    # (batch 128, the classification default, ~16 GB: docs/depth.md "Memory", search/depth/memory.py)
    train_defaults = {"data": BUILTIN, "optimizer": "adamw", "weight_decay": 1e-4, "od_groups": 0,
                      "od_warmup_epochs": 0, "batch_size": 8}
    finetune_defaults = {"lr": 5e-4, "weight_decay": 1e-4}  # AdamW from trained weights: small steps
    proposal_lr = 5e-4  # NetAdapt V1's per-proposal fine-tune (AdamW)
    records_holdout_metrics = True  # final.json / baselines keep RMSE, MAE, REL, δ1-3 of the held-out split
    score_is_proportion = False  # -RMSE (or pixel δ1): no per-image binomial error; none recorded

    def dataset(self, spec: str, split: str, image_hw, holdout: int | None = None, seed: int = 0,
                size: int | None = None) -> Dataset:
        """`spec`: ``builtin-depth`` or a NYU Depth v2 h5 root; split train / holdout / val.

        The holdout split is fixed (never part of train); `holdout` (as `size`) takes its
        first n images, for scoring on fewer. It does not change the train split.
        """
        if split == "holdout" and holdout is not None:
            size = holdout if size is None else min(size, holdout)
        return get_depth_dataset(spec, split, image_hw, seed, size)

    def check_data(self, train_set: Dataset, space, spec: str) -> None:
        """Nothing to check: every depth data set has one output channel."""

    # ----------------------------------------------------------------- training
    def augment(self, x: torch.Tensor, g: torch.Generator) -> torch.Tensor:
        """Identity: depth augmentation (NYU) happens in the data set, on rgb and depth together."""
        return x

    def loss(self, pred: torch.Tensor, target: torch.Tensor, label_smoothing: float = 0.0) -> torch.Tensor:
        """Masked L1 (metres); `label_smoothing` is a classification setting and is ignored."""
        return masked_l1(pred, target)

    train_metric_name = None  # the loss (L1, m) is the training figure

    def train_metric(self, pred: torch.Tensor, target: torch.Tensor) -> None:
        return None

    def epoch_summary(self, record: dict) -> str:
        return (f"L1 {record['train_loss']:.3f} m  val RMSE max {record['val_rmse_max']:.3f} m "
                f"min {record['val_rmse_min']:.3f} m  δ1 max {record['val_delta1_max']:.3f} "
                f"min {record['val_delta1_min']:.3f}  {record['images_per_s']:.0f} img/s")

    def result_summary(self, record: dict) -> str | None:
        if record.get("val_rmse_max") is None:
            return None
        return (f"val RMSE max {record['val_rmse_max']:.3f} m, min {record['val_rmse_min']:.3f} m; "
                f"δ1 max {record['val_delta1_max']:.3f}, min {record['val_delta1_min']:.3f}")

    # ----------------------------------------------------------------- evaluation
    @torch.no_grad()
    def evaluate(self, model: nn.Module, loader: DataLoader, max_batches: int | None = None) -> dict[str, float]:
        """Metrics dict (rmse, mae, rel, delta1-3 per image averaged; images) of `model` in eval mode."""
        was_training = model.training
        model.eval()
        meter = DepthMeter()
        device = next(model.parameters()).device
        for i, (rgb, depth) in enumerate(loader):
            if max_batches is not None and i >= max_batches:
                break
            for rgb_part, depth_part in zip(rgb.split(EVAL_CHUNK), depth.split(EVAL_CHUNK)):
                meter.update(model(rgb_part.to(device)).cpu(), depth_part)
        model.train(was_training)
        return meter.result()

    def score(self, metrics: dict[str, float]) -> float:
        """Higher is better: -RMSE (m) or δ1."""
        return -metrics["rmse"] if self.score_metric == "rmse" else metrics["delta1"]

    def describe(self, metrics: dict[str, float]) -> str:
        return f"val RMSE {metrics['rmse']:.4f} m, δ1 {metrics['delta1']:.4f}"

    # ----------------------------------------------------------------- fine-tuning
    def train_epochs(self, model: nn.Module, loader: DataLoader, per_epoch: int, cfg,
                     after_epoch: Callable[[int, float], None]) -> None:
        """One AdamW run of `cfg.epochs` x `per_epoch` steps (warmup, cosine over all of them),
        with `after_epoch(epoch, mean L1)` at each epoch's end (`cfg`: `search.finetune.FinetuneConfig`)."""
        steps = per_epoch * cfg.epochs
        if steps == 0:
            return
        losses: list[float] = []

        def on_step(step: int, loss: float) -> None:
            losses.append(loss)
            if (step + 1) % per_epoch == 0:
                after_epoch(step // per_epoch, sum(losses[-per_epoch:]) / per_epoch)

        train_cfg = DepthTrainConfig(steps=steps, lr=cfg.lr, weight_decay=cfg.weight_decay,
                                     warmup_steps=min(5, steps), seed=cfg.seed, log_every=10 ** 9)
        finetune(model, loader, train_cfg, on_step=on_step)
        model.eval()

    def proposal_finetune(self, loader: DataLoader, steps: int, lr: float,
                          seed: int = 0) -> Callable[[nn.Module, int], None]:
        """NetAdapt V1's short fine-tune of one proposal (AdamW, 1 warmup step): ``(model, iteration)``."""

        def run(model: nn.Module, iteration: int) -> None:
            finetune(model, loader, DepthTrainConfig(steps=steps, warmup_steps=1, lr=lr, seed=seed + iteration,
                                                     log_every=10 ** 9))
            model.eval()
        return run

    # ----------------------------------------------------------------- report
    report_holdout_headers = ("held-out RMSE (m)", "held-out δ1")
    report_finetune_headers = ("val RMSE (m, fine-tuned)", "val δ1 (fine-tuned)")

    @property
    def plot_label(self) -> str:
        return "held-out RMSE (m)" if self.score_metric == "rmse" else "held-out δ1"

    def report_holdout(self, score: float, metrics: dict | None = None) -> list[str]:
        """RMSE and δ1 from `metrics` (full held-out metrics) or, lacking them, the score."""
        metrics = dict(metrics or {})
        metrics.setdefault(self.score_metric, -score if self.score_metric == "rmse" else score)
        return [f"{metrics[k]:.4f}" if k in metrics else "-" for k in ("rmse", "delta1")]

    def report_finetune(self, finetune: dict | None) -> list[str]:
        return [f"{finetune[k]:.4f}" if finetune else "-" for k in ("val_rmse", "val_delta1")]

    def plot_value(self, score: float) -> float:
        return -score if self.score_metric == "rmse" else score
