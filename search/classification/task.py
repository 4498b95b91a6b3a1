"""The classification task: what `--task classification` plugs into training, MCD scoring and reports.

`ClassificationTask` bundles the data sets (`builtin`, an ImageFolder root or a CIFAR-10
python directory, `search/data/`), the loss (cross-entropy with label smoothing), the
batch augmentation (pad-crop + flip), evaluation (top-1, `search/evaluate.py`), the score
MCD maximises (top-1, a fraction in [0, 1]), its fine-tuning loops (`train.py`) and the
report cells. It is the classification path as it was before tasks existed (same numbers);
`search.tasks.Task` lists the interface, `search.depth.task.DepthTask` is the other task.
"""
from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

import torch
from torch import nn
from torch.utils.data import DataLoader, Dataset

from search.data import augment_batch, get_dataset
from search.errors import SearchError
from search.evaluate import evaluate

from .train import train_epochs, train_steps


@dataclass(frozen=True)
class ClassificationTask:
    """Image classification (MobileNetV3 spaces): cross-entropy, top-1, score = top-1 in [0, 1]."""

    name: str = "classification"
    score_metric: str = "top1"

    default_data = "builtin"
    fixed_holdout = False  # the holdout split is carved out of train (`--holdout` images)
    headline = ("acc",)  # finetune.json: val_acc_before, val_acc; train log: val_acc_max, val_acc_min
    # TrainConfig fields left None. Grouped OD with 4 groups after 2 max-only epochs: the variant that
    # trains every sub-network (issue 16; docs/search.md "Training the super-network" has the table).
    train_defaults = {"data": "builtin", "optimizer": "sgd", "od_groups": 4, "od_warmup_epochs": 2, "batch_size": 128}
    finetune_defaults = {"lr": 0.02, "weight_decay": 4e-5}  # FinetuneConfig fields left None
    proposal_lr = 0.01  # NetAdapt V1's per-proposal fine-tune (SGD)
    records_holdout_metrics = False  # the score is the one held-out metric (top-1)
    score_is_proportion = True  # top-1 = share of held-out images right: its standard error is binomial

    def __post_init__(self) -> None:
        if self.score_metric != "top1":
            raise ValueError(f"classification task: score metric {self.score_metric!r} is not 'top1'")

    # ----------------------------------------------------------------- data
    def dataset(self, spec: str, split: str, image_hw, holdout: int | None = None) -> Dataset:
        """`holdout`: training images set aside as the holdout split (None: 10 %, at most 10 k)."""
        return get_dataset(spec, split, _side(image_hw), holdout=holdout)

    def check_data(self, train_set: Dataset, space, spec: str) -> None:
        classes = train_set.info.num_classes
        if classes > space.spec.num_classes:
            raise SearchError(f"data {spec} has {classes} classes but space {space.name} has "
                              f"{space.spec.num_classes} outputs")

    # ----------------------------------------------------------------- training
    def augment(self, x: torch.Tensor, g: torch.Generator) -> torch.Tensor:
        """Pad-crop + horizontal flip per image, randomness from `g`."""
        return augment_batch(x, g)

    def loss(self, output: torch.Tensor, target: torch.Tensor, label_smoothing: float = 0.0) -> torch.Tensor:
        return nn.functional.cross_entropy(output, target, label_smoothing=label_smoothing)

    def train_metric(self, output: torch.Tensor, target: torch.Tensor) -> float:
        """Correct predictions in the batch (train_acc_od = sum / images)."""
        return float((output.argmax(1) == target).sum())

    train_metric_name = "train_acc_od"

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
        """{"acc": top-1 (fraction in [0, 1])} of `model` in eval mode."""
        return {"acc": evaluate(model, loader, max_batches=max_batches)}

    def score(self, metrics: dict[str, float]) -> float:
        return metrics["acc"]

    def describe(self, metrics: dict[str, float]) -> str:
        return f"val top-1 {metrics['acc']:.4f}"

    # ----------------------------------------------------------------- fine-tuning
    def train_epochs(self, model: nn.Module, loader: DataLoader, per_epoch: int, cfg,
                     after_epoch: Callable[[int, float], None]) -> None:
        """One SGD run of `cfg.epochs` x `per_epoch` steps, cosine over all of them, with
        `after_epoch(epoch, mean loss)` at each epoch's end (`cfg`: `search.finetune.FinetuneConfig`)."""
        train_epochs(model, loader, per_epoch, cfg.epochs, cfg.lr, cfg.seed, cfg.momentum, cfg.weight_decay,
                     cfg.label_smoothing, after_epoch)

    def proposal_finetune(self, loader: DataLoader, steps: int, lr: float,
                          seed: int = 0) -> Callable[[nn.Module, int], None]:
        """NetAdapt V1's short fine-tune of one proposal: ``(model, iteration) -> None``."""
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
