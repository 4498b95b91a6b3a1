"""Fine-tuning a searched sub-network, starting from its super-network weights.

NetAdaptV2 ends with a long-term fine-tune of the chosen network alone: the super-network
weights are a strong start (trained as part of every sub-network), so a few epochs of
ordinary training adapt them to this one architecture. `finetune_network` is that recipe
for any network (BN recalibration, val metrics before, the task's training loop with val
metrics after each epoch), used by `finetune` (the searched network of a search folder,
`nas-search finetune`) and the demo (searched network and baseline alike). The space's
task (`search/tasks.py`) picks data, loop and metrics: SGD + top-1 for classification
(`search/classification/train.py`), AdamW masked L1 + RMSE / δ1 for depth
(`search/depth/train.py`); both loops run on `search.optim.fit`.
`train_searched_from_scratch` (`nas-search finetune --from-scratch`) is the reference: the
same architecture trained alone from fresh weights with the super-network's recipe
(`search/scratch.py`).
"""
from __future__ import annotations

import json
import time
from collections.abc import Callable
from dataclasses import asdict, dataclass, field
from pathlib import Path

import torch
from torch import nn
from torch.utils.data import Dataset

from search.checkpoint import load_supernet
from search.data import make_loader
from search.errors import SearchError
from search.evaluate import recalibrate_bn
from search.scratch import train_from_scratch
from search.spaces.space import SubnetConfig
from search.tasks import Task, task_of

FINETUNED, FINETUNE_LOG = "finetuned.pt", "finetune.json"
SCRATCH, SCRATCH_LOG = "scratch.pt", "scratch.json"  # `nas-search finetune --from-scratch`


@dataclass(frozen=True)
class FinetuneConfig:
    """Fine-tuning settings; every default says why."""

    epochs: int = 5  # from super-network weights a few epochs recover most of the gain on the built-in set
    batch_size: int = 128  # same as super-network training: same BN statistics regime
    lr: float = 0.02  # 1/5 of the training LR: the weights are already trained, only adapting them
    # (classification, SGD; `for_task` gives depth's 5e-4, AdamW)
    momentum: float = 0.9  # SGD + Nesterov, as training (classification)
    weight_decay: float = 4e-5  # MobileNetV3's (depth: 1e-4); never on BN / biases
    label_smoothing: float = 0.1  # as training (classification)
    seed: int = 0  # data order and augmentation
    steps_per_epoch: int | None = None  # cap (smoke tests); None: whole epoch
    bn_batches: int = 20  # BN recalibration before the "before" accuracy (search.evaluate's default)
    val_batches: int | None = None  # cap on validation batches; None: whole val split

    @classmethod
    def for_task(cls, task, **given) -> FinetuneConfig:
        """The task's defaults (`task.finetune_defaults`), then the `given` fields that are not None."""
        return cls(**{**task.finetune_defaults, **{k: v for k, v in given.items() if v is not None}})


@dataclass(frozen=True)
class FinetuneResult:
    """Validation metrics of one fine-tune (the task's: top-1 ``acc``; depth ``rmse`` in m, ``delta1``...)."""

    before: dict[str, float]  # super-network weights, BN recalibrated
    after: dict[str, float]  # after the last epoch (= `before` for 0 epochs)
    history: list[dict] = field(default_factory=list)  # per epoch {"epoch", "loss", "val_<headline metric>"}
    seconds: float = 0.0  # wall time, BN recalibration and evaluations included


def finetune_network(model: nn.Module, task: Task, train_set: Dataset, val_set: Dataset, cfg: FinetuneConfig,
                     label: str = "network", log: Callable[[str], None] = print) -> FinetuneResult:
    """Fine-tune `model` (in place) from its super-network weights with the task's loop.

    BN statistics are recalibrated first (seeded: `cfg.seed`), so "before" is the network
    as MCD scored it; the validation metrics are logged before, after each epoch and
    returned. `label` names the network in the first log line.
    """
    loader = make_loader(train_set, cfg.batch_size, shuffle=True, seed=cfg.seed, drop_last=True)
    val_loader = make_loader(val_set, 256)
    bn_loader = make_loader(train_set, cfg.batch_size, shuffle=True, seed=12_345)
    t0 = time.perf_counter()
    torch.manual_seed(cfg.seed)
    recalibrate_bn(model, bn_loader, cfg.bn_batches)
    before = task.evaluate(model, val_loader, cfg.val_batches)
    log(f"{label}: {task.describe(before)} with super-network weights (BN recalibrated)")
    per_epoch = len(loader) if cfg.steps_per_epoch is None else min(len(loader), cfg.steps_per_epoch)
    history, last = [], [before]

    def after_epoch(epoch: int, loss: float) -> None:
        metrics = task.evaluate(model, val_loader, cfg.val_batches)
        history.append({"epoch": epoch + 1, "loss": round(loss, 5), **{f"val_{k}": metrics[k] for k in task.headline}})
        last[0] = metrics
        log(f"epoch {epoch + 1}/{cfg.epochs}: loss {loss:.4f} {task.describe(metrics)} "
            f"({time.perf_counter() - t0:.0f}s)")

    task.train_epochs(model, loader, per_epoch, cfg, after_epoch)
    return FinetuneResult(before, last[0], history, time.perf_counter() - t0)


def load_search(search_dir: str | Path) -> dict:
    """``final.json`` of a finished search (SearchError if the search has not finished)."""
    path = Path(search_dir) / "final.json"
    if not path.is_file():
        raise SearchError(f"{search_dir}: no final.json; run `nas-search search --out {search_dir}` "
                          "(or --resume it) until it finishes")
    return json.loads(path.read_text(encoding="utf-8"))


def searched_model(search_dir: str | Path, supernet_path: str | Path | None = None):
    """(space, config, model with super-network weights, checkpoint meta, final.json) of the searched network."""
    final = load_search(search_dir)
    path = supernet_path or (final.get("meta") or {}).get("supernet")
    if not path:
        raise SearchError(f"{search_dir}: final.json names no super-network; pass --supernet")
    space, supernet, meta = load_supernet(path)
    if space.name != final["space"]:
        raise SearchError(f"--supernet {path} is a super-network of space {space.name!r}, "
                          f"the search was over {final['space']!r}")
    config = SubnetConfig.from_dict(final["config"])
    with torch.no_grad():
        model = supernet.subnet(config)
    return space, config, model, dict(meta or {}), final


def finetune(search_dir: str | Path, cfg: FinetuneConfig | None = None, supernet_path=None,
             data: str | None = None, log: Callable[[str], None] = print, task: str | None = None) -> dict:
    """Fine-tune the searched network; writes ``finetuned.pt`` (state_dict) and ``finetune.json``.

    finetune.json holds ``val_<m>_before`` and ``val_<m>`` for the task's headline metrics
    (classification: ``acc``, top-1; depth: ``rmse`` in metres and ``delta1``) and per-epoch
    ``{"epoch", "loss", "val_<m>"}``. `task`, when given, must be the searched space's task.
    `cfg` None: `FinetuneConfig.for_task` of the searched space's task.
    """
    out = Path(search_dir)
    space, config, model, meta, final = searched_model(out, supernet_path)
    task_ = task_of(space, task)
    cfg = cfg or FinetuneConfig.for_task(task_)
    if cfg.epochs < 0:
        raise SearchError(f"--epochs must be >= 0, got {cfg.epochs}")
    train_cfg = dict(meta.get("train_config") or {})
    data = data or (final.get("meta") or {}).get("data") or train_cfg.get("data") or task_.default_data
    image_hw = space.spec.input_hw
    train_set = task_.dataset(data, "train", image_hw, holdout=train_cfg.get("holdout"))
    val_set = task_.dataset(data, "val", image_hw)
    result = finetune_network(model, task_, train_set, val_set, cfg, f"{space.name} searched network", log)
    before, after = result.before, result.after
    torch.save({k: v.detach().cpu() for k, v in model.state_dict().items()}, out / FINETUNED)
    record = {"config": asdict(cfg), "data": data, **{f"val_{k}_before": before[k] for k in task_.headline},
              **{f"val_{k}": after[k] for k in task_.headline},
              "epochs": result.history, "time_s": round(result.seconds, 2), "weights": FINETUNED}
    (out / FINETUNE_LOG).write_text(json.dumps(record, indent=1) + "\n", encoding="utf-8")
    log("val " + ", ".join(f"{k} {before[k]:.4f} -> {after[k]:.4f}" for k in task_.headline)
        + f"; weights in {out / FINETUNED}")
    return record


def train_searched_from_scratch(search_dir: str | Path, epochs: int | None = None, seed: int = 0,
                                batch_size: int | None = None, steps_per_epoch: int | None = None,
                                val_batches: int | None = None, supernet_path=None, data: str | None = None,
                                log: Callable[[str], None] = print, task: str | None = None) -> dict:
    """The searched architecture trained alone from fresh weights (`search.scratch.train_from_scratch`):
    the network a user would have trained anyway, the reference the fine-tuned one must beat.

    Same recipe, data, train split (``--holdout``) and, for `epochs` None, epochs as the
    super-network the search used (its checkpoint's ``train_config``). Writes ``scratch.pt``
    (state_dict) and ``scratch.json`` (``val_<m>`` of the task's headline metrics, per-epoch
    training loss, ``time_s`` / ``cpu_s`` of the training, the recipe); ``finetuned.pt`` is
    left alone.
    """
    out = Path(search_dir)
    space, config, _, meta, final = searched_model(out, supernet_path)
    task_ = task_of(space, task)
    train_cfg = dict(meta.get("train_config") or {})
    data = data or (final.get("meta") or {}).get("data") or train_cfg.get("data") or task_.default_data
    epochs = epochs if epochs is not None else train_cfg.get("epochs")
    if epochs is None:
        raise SearchError(f"{search_dir}: the super-network checkpoint records no training epochs; pass --epochs")
    result = train_from_scratch(space, config, epochs, seed, data, batch_size, steps_per_epoch,
                                lambda line: log(f"{space.name} searched network {line}"),
                                holdout=train_cfg.get("holdout"), val_batches=val_batches)
    torch.save({k: v.detach().cpu() for k, v in result.model.state_dict().items()}, out / SCRATCH)
    metrics = result.train_metrics
    record = {"init": "scratch", "data": data, "train_images": metrics["train_images"],
              **{f"val_{k}": metrics[f"val_{k}"] for k in task_.headline},
              "epochs": metrics["history"], "time_s": round(result.time["wall_s"], 2),
              "cpu_s": round(result.time["cpu_s"], 2), "weights": SCRATCH,
              "recipe": {k: metrics[k] for k in ("epochs", "steps_per_epoch", "batch_size", "optimizer", "lr",
                                                  "weight_decay", "warmup_epochs", "label_smoothing", "seed")}}
    (out / SCRATCH_LOG).write_text(json.dumps(record, indent=1) + "\n", encoding="utf-8")
    log("trained from scratch: val " + ", ".join(f"{k} {metrics[f'val_{k}']:.4f}" for k in task_.headline)
        + f"; weights in {out / SCRATCH}")
    return record


def load_finetuned(search_dir: str | Path, supernet_path=None):
    """(space, config, model) of the searched network with its fine-tuned weights (weights_only)."""
    out = Path(search_dir)
    space, config, model, _, _ = searched_model(out, supernet_path)
    path = out / FINETUNED
    if not path.is_file():
        raise SearchError(f"{search_dir}: no {FINETUNED}; run `nas-search finetune --search {search_dir}` first")
    model = space.build_subnet(config)
    model.load_state_dict(torch.load(path, map_location="cpu", weights_only=True))
    return space, config, model.eval()
