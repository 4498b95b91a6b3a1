"""Super-network training with Ordered Dropout: one loop a reader can hold in their head.

    for epoch:
        for x, y in loader:
            x = task.augment(x, g)                  # seeded per (seed, epoch, rank)
            od = supernet.sample_od(len(x), g)       # G groups of images, one sub-network each
            loss = task.loss(model(x, od), y, label_smoothing)   # BN statistics per group
            loss.backward(); optimizer.step(); scheduler.step()
        validate max + min sub-networks (sliced, BN recalibrated) ; checkpoint ; log

The task comes from the space (`search/tasks.py`): classification (cross-entropy, pad-crop
and flip per batch, top-1) or depth (masked L1, augmentation inside the data set, RMSE/δ1);
the super-network from `search.supernet.build_supernet`; the loop itself, the optimizer
and the warm-up + cosine schedule from `search/optim.py`. `train` reads as its jobs:
`_resolve` (settings, resume), `_set_up` (data, network, optimizer), `_fit_epochs` (the
loop above), `validate_extremes` and `_save_epoch` (checkpoint + log line) after each epoch.

Reproducibility: every random draw of epoch e comes from generators seeded with
(seed, e, rank), and the checkpoint written after each epoch holds model, optimizer and
scheduler state, so ``--resume`` continues bit-for-bit like an uninterrupted run
(tests/test_train.py). DDP when launched by torchrun (gloo on CPU, nccl on GPU); each
rank samples its own sub-networks and sees its own shard of every epoch.
"""
from __future__ import annotations

import dataclasses
import json
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import torch
from torch import nn
from torch.utils.data import DataLoader, Dataset

from search import distributed
from search.checkpoint import load_supernet, save_supernet
from search.data import make_loader, start_epoch
from search.errors import SearchError
from search.evaluate import RECALIBRATION_BATCHES, recalibrate_bn
from search.optim import EpochTally, NonFiniteLoss, Step, fit, make_optimizer, warmup_cosine_schedule
from search.spaces import SearchSpace, get_space
from search.supernet import ODPolicy, build_supernet
from search.supernet.distill import inplace_distillation_loss, share_images
from search.tasks import Task, task_of

CHECKPOINT_NAME = "supernet.pt"
LOG_NAME = "train_log.jsonl"
# Peak SGD learning rate per 128 images of global batch (grouped-OD super-networks). Chosen from
# measurements (docs/search.md, "Training the super-network"): on mbv3-tiny / builtin, 0.2 trains
# the max and min networks far further in the same epochs than 0.1 and ranks sub-networks as well.
SGD_LR_PER_128 = 0.2


@dataclass
class TrainConfig:
    """Super-network training settings; every default says why."""

    space: str = "mbv3-tiny"  # the demo space; `nas-search spaces` lists the others
    task: str | None = None  # None: the space's task; otherwise it must agree with the space
    data: str | None = None  # None: the task's built-in set (builtin / builtin-depth), needs no download
    epochs: int = 15  # built-in set: the max network keeps improving up to ~12-15 (docs/search.md)
    batch_size: int | None = None  # per process; None: the task's (classification 128: 4 OD groups of 32
    # images each for per-group BN statistics; depth 8, FastDepth's own, to fit a laptop's memory at 224 px)
    optimizer: str | None = None  # None: the task's ("sgd": Nesterov, MobileNet/OFA practice; depth "adamw")
    lr: float | None = None  # None: SGD_LR_PER_128 x global batch / 128 for SGD (linear scaling), 2e-3 for AdamW
    momentum: float = 0.9  # standard SGD momentum
    nesterov: bool = True  # slightly faster convergence at no cost
    weight_decay: float | None = None  # None: the task's, else 4e-5 for SGD (MobileNetV3), 0.05 for AdamW
    warmup_epochs: float = 1.0  # linear warmup avoids early divergence with fresh BN + large LR
    label_smoothing: float = 0.1  # MobileNetV3 / OFA value; also softens targets of tiny sub-networks (classification)
    od_max_share: float = 0.25  # sandwich rule: share of each batch at the max network (see supernet/od.py)
    od_min_share: float = 0.25  # ... and at the min network
    per_image_kernels: bool = True  # per-image OD (od_groups=0) only: kernel per image (False: per batch)
    # Grouped OD (issue 16, docs/search.md "Training the super-network"): the batch is cut into G groups,
    # one sub-network per group (group 0 max, group 1 min, the rest uniform draws), and every BatchNorm
    # normalises each group with its own statistics, as the sliced sub-network is normalised when MCD
    # scores it. Per-image OD (0) mixes wide and narrow images in one BN and leaves sub-networks untrained.
    od_groups: int | None = None  # None: the task's (classification 4; depth 0 = per image, no grouped BN yet)
    od_warmup_epochs: int | None = None  # None: the task's (classification 2): max network alone first (OFA)
    distill: bool = False  # grouped OD only: groups share images, the max group teaches the others (measured:
    # no gain at CPU scale, so off; docs/search.md)
    granularity: int | None = None  # None: the space's own channel step
    holdout: int | None = None  # None: `default_holdout` (10% of train, <= 10k), excluded from training;
    # depth data sets have a fixed holdout split, so it must stay None there
    seed: int = 0  # model init, data order, augmentation and OD draws all derive from it
    workers: int = 0  # DataLoader workers; 0 keeps the 2-core demo fastest (data is in memory)
    amp: bool = True  # bf16/fp16 autocast, only when training on a GPU
    channels_last: bool = True  # NHWC: ~3x faster depthwise backward on CPU, tensor-core friendly on GPU
    steps_per_epoch: int | None = None  # cap on steps per epoch (smoke tests); None: whole epoch
    val_batches: int | None = None  # cap on validation batches; None: the whole val split
    bn_batches: int = RECALIBRATION_BATCHES  # BN recalibration batches before validating a subnet
    progress: bool = True  # tqdm bar on rank 0

    def resolved_lr(self, world_size: int) -> float:
        if self.lr is not None:
            return self.lr
        return SGD_LR_PER_128 * self.batch_size * world_size / 128 if self.optimizer == "sgd" else 2e-3

    def resolved_weight_decay(self) -> float:
        if self.weight_decay is not None:
            return self.weight_decay
        return 4e-5 if self.optimizer == "sgd" else 0.05

    def resolved(self, task) -> TrainConfig:
        """This config with the fields left None filled from `task.train_defaults` (and `task` set)."""
        fills = {k: v for k, v in task.train_defaults.items() if getattr(self, k) is None}
        return dataclasses.replace(self, task=task.name, **fills)


@dataclass(frozen=True)
class TrainResult:
    checkpoint: Path
    epochs: int
    metrics: dict  # the last epoch's log record
    task: str = "classification"


def train(cfg: TrainConfig, out_dir: str | Path, resume: bool = False, device: str | None = None,
          stop_after: int | None = None) -> TrainResult:
    """Train the OD super-network of `cfg.space` on `cfg.data`; write `out_dir/supernet.pt` + a JSONL log.

    The space's task (`search/tasks.py`) supplies data, loss and validation metrics;
    `cfg.task`, when set, must agree with it (SearchError otherwise).

    `resume` continues from `out_dir/supernet.pt` with its saved settings (`cfg.epochs` may
    extend the run; the cosine schedule then stretches to the new total). `stop_after`
    returns after that many epochs of this call, as if interrupted (tests, time-sliced jobs).
    """
    out = Path(out_dir)
    info = distributed.init_from_env(device)
    cfg, resumed = _resolve(cfg, out / CHECKPOINT_NAME, resume)
    start_epoch = 0 if resumed is None else resumed.epoch + 1
    run = _set_up(cfg, info, resumed)
    if info.is_main:
        out.mkdir(parents=True, exist_ok=True)
        _truncate_log(out / LOG_NAME, start_epoch)
    end_epoch = cfg.epochs if stop_after is None else min(cfg.epochs, start_epoch + stop_after)
    try:
        record = _fit_epochs(run, range(start_epoch, end_epoch), out)
    except NonFiniteLoss as exc:  # raised before its step: the checkpoint on disk is the last good one
        raise SearchError(f"{exc}; {_last_good(out / CHECKPOINT_NAME, exc.epoch)}") from None
    if resumed is not None and not record:
        record = resumed.meta.get("metrics", {})
    return TrainResult(out / CHECKPOINT_NAME, cfg.epochs, record, run.task.name)


@dataclass(frozen=True)
class _Resumed:
    """The checkpoint a resumed run continues from."""

    epoch: int  # the last finished epoch
    state_dict: dict  # super-network weights
    meta: dict  # optimizer and scheduler state, last metrics (`_save_epoch`)


def _resolve(cfg: TrainConfig, ckpt_path: Path, resume: bool) -> tuple[TrainConfig, _Resumed | None]:
    """(settings of the run, its checkpoint when resuming); checks `--task` and `--resume`.

    A resumed run takes the saved settings: only how far (`epochs`) and how it is shown
    (`workers`, `progress`) may change."""
    requested = get_space(cfg.space, granularity=cfg.granularity)
    task_of(requested, cfg.task)  # --task must agree with --space
    if not resume:
        return cfg, None
    if not ckpt_path.is_file():
        raise SearchError(f"--resume: no checkpoint {ckpt_path} to resume from")
    _, loaded, meta = load_supernet(ckpt_path, space=requested)
    fields = {f.name for f in dataclasses.fields(TrainConfig)}
    settings, epoch = meta.get("train_config"), meta.get("epoch")
    if not isinstance(settings, dict) or set(settings) - fields or isinstance(epoch, bool) \
            or not isinstance(epoch, int):
        raise SearchError(f"--resume: {ckpt_path} holds no training settings of this version (meta "
                          "'train_config' / 'epoch'); train into a new --out folder")
    # A checkpoint from before grouped OD existed was trained per image: resume it the same way.
    saved = TrainConfig(**{"od_groups": 0, "od_warmup_epochs": 0, **settings})
    cfg = dataclasses.replace(saved, epochs=cfg.epochs, workers=cfg.workers, progress=cfg.progress)
    return cfg, _Resumed(epoch, loaded.state_dict(), meta)


@dataclass
class _Run:
    """What one training run holds between its jobs (`_set_up` builds it)."""

    cfg: TrainConfig  # resolved: every None filled from the task
    info: distributed.DistInfo
    space: SearchSpace
    task: Task
    train_set: Dataset
    supernet: nn.Module
    model: nn.Module  # `supernet`, or its DDP wrapper
    loader: DataLoader
    steps: int  # per epoch
    optimizer: torch.optim.Optimizer
    scheduler: torch.optim.lr_scheduler.LambdaLR
    scaler: torch.amp.GradScaler
    use_amp: bool
    memory_format: torch.memory_format
    bn_loader: DataLoader  # fixed order: deterministic BN statistics for validation
    val_loader: DataLoader


def _set_up(cfg: TrainConfig, info: distributed.DistInfo, resumed: _Resumed | None) -> _Run:
    """Data, super-network (seeded init, or the resumed weights), loaders, optimizer and schedule."""
    dev = info.device
    space = get_space(cfg.space, granularity=cfg.granularity)
    task = task_of(space)
    cfg = cfg.resolved(task)
    if task.fixed_holdout and cfg.holdout is not None:
        raise SearchError(f"--holdout: {task.name} data sets have a fixed holdout split (never trained on); "
                          "score on fewer of its images with `nas-search search --holdout-size`")
    image_hw = space.spec.input_hw
    train_set = task.dataset(cfg.data, "train", image_hw, holdout=cfg.holdout)
    val_set = task.dataset(cfg.data, "val", image_hw)
    task.check_data(train_set, space, cfg.data)

    torch.manual_seed(cfg.seed)
    if cfg.od_groups and task.name != "classification":
        raise SearchError(f"--od-groups: grouped OD (per-group BatchNorm) is implemented for classification "
                          f"super-networks only, not {task.name}; use --od-groups 0")
    if cfg.od_groups and cfg.batch_size % cfg.od_groups:
        raise SearchError(f"--od-groups {cfg.od_groups}: --batch-size {cfg.batch_size} must split into equal groups")
    if cfg.distill and cfg.od_groups < 2:
        raise SearchError("--distill needs grouped OD (--od-groups >= 2): the max group teaches the others")
    supernet = build_supernet(space, ODPolicy(cfg.od_max_share, cfg.od_min_share, cfg.per_image_kernels,
                                              cfg.od_groups))
    if resumed is not None:
        supernet.load_state_dict(resumed.state_dict)
    fmt = torch.channels_last if cfg.channels_last else torch.contiguous_format
    supernet.to(dev, memory_format=fmt)
    model: nn.Module = supernet
    if info.distributed:
        model = nn.parallel.DistributedDataParallel(supernet, device_ids=[dev.index] if dev.type == "cuda" else None)

    loader = make_loader(train_set, cfg.batch_size, shuffle=True, seed=cfg.seed, workers=cfg.workers,
                         rank=info.rank, world_size=info.world_size, drop_last=True)
    steps = len(loader) if cfg.steps_per_epoch is None else min(len(loader), cfg.steps_per_epoch)
    if steps == 0:
        raise SearchError(f"data {cfg.data}: {len(train_set)} training images is less than one batch of "
                          f"{cfg.batch_size} per process")
    try:
        optimizer = make_optimizer(supernet, cfg.optimizer, cfg.resolved_lr(info.world_size),
                                   cfg.resolved_weight_decay(), cfg.momentum, cfg.nesterov)
    except ValueError as exc:
        raise SearchError(str(exc)) from None
    scheduler = warmup_cosine_schedule(optimizer, round(cfg.warmup_epochs * steps), cfg.epochs * steps)
    if resumed is not None:
        optimizer.load_state_dict(resumed.meta["optimizer"])
        scheduler.load_state_dict(resumed.meta["scheduler"])
    use_amp = cfg.amp and dev.type == "cuda"
    scaler = torch.amp.GradScaler("cuda", enabled=use_amp and not torch.cuda.is_bf16_supported())
    bn_loader = make_loader(train_set, cfg.batch_size, shuffle=True, seed=12_345)
    return _Run(cfg, info, space, task, train_set, supernet, model, loader, steps, optimizer, scheduler, scaler,
                use_amp, fmt, bn_loader, make_loader(val_set, 256))


def _fit_epochs(run: _Run, epochs: range, out: Path) -> dict:
    """The OD training loop over `epochs` (through `search.optim.fit`); after each epoch, on rank 0,
    validation of the extremes, checkpoint and log line. Returns the last epoch's record ({} if none)."""
    cfg, info, task, supernet, dev = run.cfg, run.info, run.task, run.supernet, run.info.device
    tally = EpochTally()
    train_metric = task.train_metric if task.train_metric_name else None
    record: dict = {}

    distilling = {"now": False}  # whether this epoch's loss is in-place distillation (read by `loss`)

    def batches(epoch: int) -> Iterator:
        """The epoch's shard in its seeded order; per batch the task's augmentation, then the OD draw
        (none during the max-network warm-up epochs)."""
        start_epoch(run.loader, epoch)
        g = epoch_generator(cfg.seed, epoch, info.rank)
        warmup = epoch < cfg.od_warmup_epochs
        distilling["now"] = cfg.distill and not warmup
        for x, y in run.loader:
            x = task.augment(x, g).to(dev, non_blocking=True).contiguous(memory_format=run.memory_format)
            y = y.to(dev, non_blocking=True)
            if distilling["now"]:
                x, y = share_images(x, y, cfg.od_groups)
            yield (x, None if warmup else supernet.sample_od(len(x), g)), y

    def loss(output: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
        if distilling["now"]:
            return inplace_distillation_loss(output, y, cfg.od_groups, cfg.label_smoothing)
        return task.loss(output, y, cfg.label_smoothing)

    def on_step(step: Step) -> dict | None:
        tally.add(step, train_metric)
        if not show_progress:
            return None
        shown = {"acc": f"{tally.metric_sum / tally.seen:.3f}"} if task.train_metric_name else {}
        rate = tally.seen * info.world_size / step.seconds
        return {"loss": f"{tally.loss_sum / tally.seen:.3f}", **shown, "img_s": f"{rate:.0f}"}

    def on_epoch(epoch: int, steps: int, seconds: float) -> None:
        nonlocal record
        loss_sum, correct, seen = distributed.all_reduce_sum([tally.loss_sum, tally.metric_sum, tally.seen], dev)
        record = {"epoch": epoch, "train_loss": loss_sum / seen}
        if task.train_metric_name:
            record[task.train_metric_name] = correct / seen
        record.update(lr=run.optimizer.param_groups[0]["lr"], images_per_s=seen / seconds, seconds=seconds)
        if info.is_main:
            record.update(validate_extremes(task, supernet, run.bn_loader, run.val_loader, cfg.bn_batches,
                                            cfg.val_batches))
            record.update(depth_max=run.space.depth(run.space.max_config()),
                          depth_min=run.space.depth(run.space.min_config()))
            _save_epoch(run, epoch, record, out)
            if cfg.progress:
                print(f"epoch {epoch + 1}: {task.epoch_summary(record)}", flush=True)
        distributed.barrier()

    show_progress = cfg.progress and info.is_main
    fit(run.model, loss, run.optimizer, batches, epochs,
        forward=lambda inputs: run.model(*inputs), scheduler=run.scheduler, steps_per_epoch=run.steps,
        scaler=run.scaler, autocast=lambda: autocast_for(dev, run.use_amp), on_step=on_step, on_epoch=on_epoch,
        progress=(lambda epoch: f"epoch {epoch + 1}/{cfg.epochs}") if show_progress else None)
    return record


def validate_extremes(task: Task, supernet: nn.Module, bn_loader: DataLoader, val_loader: DataLoader,
                      bn_batches: int, val_batches: int | None = None) -> dict[str, float]:
    """``val_<m>_max`` / ``val_<m>_min`` for the task's headline metrics (top-1; depth RMSE in m and δ1)
    of the max and min sub-networks, each sliced and BN recalibrated on `bn_batches` batches."""
    out = {}
    device = next(supernet.parameters()).device
    space = supernet.space
    for name, config in (("max", space.max_config()), ("min", space.min_config())):
        sub = supernet.subnet(config).to(device)
        recalibrate_bn(sub, bn_loader, bn_batches)
        metrics = task.evaluate(sub, val_loader, val_batches)
        out.update({f"val_{k}_{name}": metrics[k] for k in task.headline})
    return out


def _save_epoch(run: _Run, epoch: int, record: dict, out: Path) -> None:
    """Checkpoint (weights + what resuming needs) and the epoch's log line; rank 0 only."""
    meta = {"train_config": dataclasses.asdict(run.cfg), "epoch": epoch, "optimizer": run.optimizer.state_dict(),
            "scheduler": run.scheduler.state_dict(), "rng": {"torch": torch.get_rng_state()},
            "metrics": record, "data": run.train_set.info.spec, "world_size": run.info.world_size}
    save_supernet(out / CHECKPOINT_NAME, run.supernet, meta)
    with open(out / LOG_NAME, "a") as f:
        f.write(json.dumps(record) + "\n")


def _last_good(checkpoint: Path, failed_epoch: int) -> str:
    """What a diverged run left: the checkpoint of the epoch before `failed_epoch` (0-based), if any."""
    if not checkpoint.is_file():
        return "no checkpoint was written"
    return f"kept the last good checkpoint {checkpoint} (after epoch {failed_epoch})"


def epoch_generator(seed: int, epoch: int, rank: int) -> torch.Generator:
    """The augmentation stream of one epoch on one rank (super-network and from-scratch training share it)."""
    return torch.Generator().manual_seed(seed * 1_000_003 + epoch * 1_009 + rank)


def autocast_for(device: torch.device, enabled: bool):
    """bf16 (fp16 where bf16 is missing) autocast on CUDA when `enabled`; a no-op context on CPU."""
    if device.type == "cuda" and enabled:
        dtype = torch.bfloat16 if torch.cuda.is_bf16_supported() else torch.float16
        return torch.autocast("cuda", dtype=dtype)
    return torch.autocast("cpu", enabled=False)


def _truncate_log(path: Path, start_epoch: int) -> None:
    """Keep log lines of epochs before `start_epoch` (a resumed run rewrites the rest)."""
    if not path.exists():
        return
    lines = [line for line in path.read_text().splitlines() if line.strip()]
    kept = [line for line in lines if json.loads(line).get("epoch", 0) < start_epoch]
    path.write_text("".join(line + "\n" for line in kept))
