"""Super-network training with Ordered Dropout: one loop a reader can hold in their head.

    for epoch:
        for x, y in loader:
            x = task.augment(x, g)                  # seeded per (seed, epoch, rank)
            od = supernet.sample_od(len(x), g)       # one sub-network per image
            loss = task.loss(model(x, od), y, label_smoothing)
            loss.backward(); optimizer.step(); scheduler.step()
        validate max + min sub-networks (sliced, BN recalibrated) ; checkpoint ; log

The task comes from the space (`search/tasks.py`): classification (cross-entropy, pad-crop
and flip per batch, top-1) or depth (masked L1, augmentation inside the data set, RMSE/δ1).

Reproducibility: every random draw of epoch e comes from generators seeded with
(seed, e, rank), and the checkpoint written after each epoch holds model, optimizer and
scheduler state, so ``--resume`` continues bit-for-bit like an uninterrupted run
(tests/test_train.py). DDP when launched by torchrun (gloo on CPU, nccl on GPU); each
rank samples its own sub-networks and sees its own shard of every epoch.
"""
from __future__ import annotations

import dataclasses
import json
import math
import time
from dataclasses import dataclass
from pathlib import Path

import torch
from torch import nn

from search import distributed
from search.checkpoint import load_supernet, save_supernet
from search.data import make_loader
from search.errors import SearchError
from search.evaluate import RECALIBRATION_BATCHES, evaluate, recalibrate_bn
from search.spaces import get_space
from search.supernet import ODPolicy, SuperNet
from search.tasks import task_of

CHECKPOINT_NAME = "supernet.pt"
LOG_NAME = "train_log.jsonl"


@dataclass
class TrainConfig:
    """Super-network training settings; every default says why."""

    space: str = "mbv3-tiny"  # the demo space; `nas-search spaces` lists the others
    task: str | None = None  # None: the space's task; otherwise it must agree with the space
    data: str | None = None  # None: the task's built-in set (builtin / builtin-depth), needs no download
    epochs: int = 15  # built-in set: max subnet val ~0.64 (H200: 65 s; 2-core CPU: ~1 s/step x 70 steps/epoch)
    batch_size: int = 128  # per process; large enough for BN statistics over mixed sub-networks
    optimizer: str | None = None  # None: the task's ("sgd": Nesterov, MobileNet/OFA practice; depth "adamw")
    lr: float | None = None  # None: 0.1 x global batch / 128 for SGD (linear scaling), 2e-3 for AdamW
    momentum: float = 0.9  # standard SGD momentum
    nesterov: bool = True  # slightly faster convergence at no cost
    weight_decay: float | None = None  # None: the task's, else 4e-5 for SGD (MobileNetV3), 0.05 for AdamW
    warmup_epochs: float = 1.0  # linear warmup avoids early divergence with fresh BN + large LR
    label_smoothing: float = 0.1  # MobileNetV3 / OFA value; also softens targets of tiny sub-networks (classification)
    od_max_share: float = 0.25  # sandwich rule: share of each batch at the max network (see supernet/od.py)
    od_min_share: float = 0.25  # ... and at the min network
    per_image_kernels: bool = True  # kernel size sampled per image (False: per batch)
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
        return 0.1 * self.batch_size * world_size / 128 if self.optimizer == "sgd" else 2e-3

    def resolved_weight_decay(self) -> float:
        if self.weight_decay is not None:
            return self.weight_decay
        return 4e-5 if self.optimizer == "sgd" else 0.05


    def resolved(self, task) -> "TrainConfig":
        """This config with the fields left None filled from `task.train_defaults` (and `task` set)."""
        fills = {k: v for k, v in task.train_defaults.items() if getattr(self, k) is None}
        return dataclasses.replace(self, task=task.name, **fills)


@dataclass(frozen=True)
class TrainResult:
    checkpoint: Path
    epochs: int
    metrics: dict  # the last epoch's log record
    task: str = "classification"


def _optimizer(model: nn.Module, cfg: TrainConfig, world_size: int) -> torch.optim.Optimizer:
    decay = [p for p in model.parameters() if p.dim() > 1]
    no_decay = [p for p in model.parameters() if p.dim() <= 1]
    groups = [{"params": decay, "weight_decay": cfg.resolved_weight_decay()},
              {"params": no_decay, "weight_decay": 0.0}]
    lr = cfg.resolved_lr(world_size)
    if cfg.optimizer == "sgd":
        return torch.optim.SGD(groups, lr=lr, momentum=cfg.momentum, nesterov=cfg.nesterov)
    if cfg.optimizer == "adamw":
        return torch.optim.AdamW(groups, lr=lr)
    raise SearchError(f"unknown optimizer {cfg.optimizer!r}; expected 'sgd' or 'adamw'")


def _schedule(optimizer, warmup_steps: int, total_steps: int):
    """Linear warmup to the base LR, then cosine decay to 0 (per step)."""
    def factor(step: int) -> float:
        if step < warmup_steps:
            return (step + 1) / warmup_steps
        progress = (step - warmup_steps) / max(1, total_steps - warmup_steps)
        return 0.5 * (1 + math.cos(math.pi * min(1.0, progress)))
    return torch.optim.lr_scheduler.LambdaLR(optimizer, factor)


def _epoch_generator(seed: int, epoch: int, rank: int) -> torch.Generator:
    return torch.Generator().manual_seed(seed * 1_000_003 + epoch * 1_009 + rank)


def _autocast(device: torch.device, enabled: bool):
    if device.type == "cuda" and enabled:
        dtype = torch.bfloat16 if torch.cuda.is_bf16_supported() else torch.float16
        return torch.autocast("cuda", dtype=dtype)
    return torch.autocast("cpu", enabled=False)


def validate_extremes(supernet: SuperNet, bn_loader, val_loader, bn_batches: int,
                      val_batches: int | None = None) -> dict[str, float]:
    """Val accuracy of the max and min sub-networks (sliced, BN recalibrated)."""
    out = {}
    for name, config in (("max", supernet.max_config()), ("min", supernet.min_config())):
        sub = supernet.subnet(config)
        recalibrate_bn(sub, bn_loader, bn_batches)
        out[f"val_acc_{name}"] = evaluate(sub, val_loader, max_batches=val_batches)
    return out


def train(cfg: TrainConfig, out_dir: str | Path, resume: bool = False, device: str | None = None,
          stop_after: int | None = None) -> TrainResult:
    """Train the OD super-network of `cfg.space` on `cfg.data`; write `out_dir/supernet.pt` + a JSONL log.

    The space's task (`search/tasks.py`) supplies data, super-network, loss and validation;
    `cfg.task`, when set, must agree with it (SearchError otherwise).

    `resume` continues from `out_dir/supernet.pt` with its saved settings (`cfg.epochs` may
    extend the run; the cosine schedule then stretches to the new total). `stop_after`
    returns after that many epochs of this call, as if interrupted (tests, time-sliced jobs).
    """
    out = Path(out_dir)
    ckpt_path = out / CHECKPOINT_NAME
    info = distributed.init_from_env(device)
    dev = info.device
    start_epoch, resume_meta, state = 0, None, None
    requested = get_space(cfg.space, granularity=cfg.granularity)
    task_of(requested, cfg.task)  # --task must agree with --space
    if resume:
        if not ckpt_path.is_file():
            raise SearchError(f"--resume: no checkpoint {ckpt_path} to resume from")
        _, loaded, resume_meta = load_supernet(ckpt_path, space=requested)
        saved = TrainConfig(**resume_meta["train_config"])
        # the saved run defines the result; only how far and how it is displayed may change
        cfg = dataclasses.replace(saved, epochs=cfg.epochs, workers=cfg.workers, progress=cfg.progress)
        start_epoch = int(resume_meta["epoch"]) + 1
        state = loaded.state_dict()
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
    supernet = task.build_supernet(space, ODPolicy(cfg.od_max_share, cfg.od_min_share, cfg.per_image_kernels))
    if state is not None:
        supernet.load_state_dict(state)
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
    optimizer = _optimizer(supernet, cfg, info.world_size)
    scheduler = _schedule(optimizer, round(cfg.warmup_epochs * steps), cfg.epochs * steps)
    if resume_meta is not None:
        optimizer.load_state_dict(resume_meta["optimizer"])
        scheduler.load_state_dict(resume_meta["scheduler"])
    use_amp = cfg.amp and dev.type == "cuda"
    scaler = torch.amp.GradScaler("cuda", enabled=use_amp and not torch.cuda.is_bf16_supported())

    bn_loader = make_loader(train_set, cfg.batch_size, shuffle=True, seed=12_345)  # fixed: deterministic BN stats
    val_loader = make_loader(val_set, 256)
    log_path = out / LOG_NAME
    if info.is_main:
        out.mkdir(parents=True, exist_ok=True)
        _truncate_log(log_path, start_epoch)

    record: dict = {}
    end_epoch = cfg.epochs if stop_after is None else min(cfg.epochs, start_epoch + stop_after)
    for epoch in range(start_epoch, end_epoch):
        loader.sampler.set_epoch(epoch)
        if hasattr(train_set, "set_epoch"):  # data sets that augment per sample (NYU depth)
            train_set.set_epoch(epoch)
        g = _epoch_generator(cfg.seed, epoch, info.rank)
        model.train()
        loss_sum = correct = seen = 0.0
        t0 = time.perf_counter()
        bar = _progress(steps, f"epoch {epoch + 1}/{cfg.epochs}", cfg.progress and info.is_main)
        for step, (x, y) in enumerate(loader):
            if step >= steps:
                break
            x = task.augment(x, g).to(dev, non_blocking=True).contiguous(memory_format=fmt)
            y = y.to(dev, non_blocking=True)
            od = supernet.sample_od(len(x), g)
            with _autocast(dev, use_amp):
                output = model(x, od)
                loss = task.loss(output, y, cfg.label_smoothing)
            optimizer.zero_grad(set_to_none=True)
            scaler.scale(loss).backward()
            scaler.step(optimizer)
            scaler.update()
            scheduler.step()
            loss_sum += float(loss.detach()) * len(y)
            if task.train_metric_name:
                correct += task.train_metric(output, y)
            seen += len(y)
            if bar is not None:
                rate = seen * info.world_size / (time.perf_counter() - t0)
                shown = {"acc": f"{correct / seen:.3f}"} if task.train_metric_name else {}
                bar.set_postfix(loss=f"{loss_sum / seen:.3f}", **shown, img_s=f"{rate:.0f}")
                bar.update()
        if bar is not None:
            bar.close()
        seconds = time.perf_counter() - t0
        loss_sum, correct, seen = distributed.all_reduce_sum([loss_sum, correct, seen], dev)
        record = {"epoch": epoch, "train_loss": loss_sum / seen}
        if task.train_metric_name:
            record[task.train_metric_name] = correct / seen
        record.update(lr=optimizer.param_groups[0]["lr"], images_per_s=seen / seconds, seconds=seconds)
        if info.is_main:
            record.update(task.validate_extremes(supernet, bn_loader, val_loader, cfg.bn_batches, cfg.val_batches))
            record.update(depth_max=space.depth(space.max_config()), depth_min=space.depth(space.min_config()))
            meta = {"train_config": dataclasses.asdict(cfg), "epoch": epoch, "optimizer": optimizer.state_dict(),
                    "scheduler": scheduler.state_dict(), "rng": {"torch": torch.get_rng_state()},
                    "metrics": record, "data": train_set.info.spec, "world_size": info.world_size}
            save_supernet(ckpt_path, supernet, meta)
            with open(log_path, "a") as f:
                f.write(json.dumps(record) + "\n")
            if cfg.progress:
                print(f"epoch {epoch + 1}: {task.epoch_summary(record)}", flush=True)
        distributed.barrier()
    if resume_meta is not None and not record:
        record = resume_meta.get("metrics", {})
    return TrainResult(ckpt_path, cfg.epochs, record, task.name)


def _progress(total: int, desc: str, enabled: bool):
    if not enabled:
        return None
    from tqdm import tqdm
    return tqdm(total=total, desc=desc, leave=False, dynamic_ncols=True)


def _truncate_log(path: Path, start_epoch: int) -> None:
    """Keep log lines of epochs before `start_epoch` (a resumed run rewrites the rest)."""
    if not path.exists():
        return
    lines = [line for line in path.read_text().splitlines() if line.strip()]
    kept = [line for line in lines if json.loads(line).get("epoch", 0) < start_epoch]
    path.write_text("".join(line + "\n" for line in kept))
