"""`nas-search train`: train the OD super-network (thin layer over `search.train.train`)."""
from __future__ import annotations

import click
import torch

from profiler.cli_types import COUNT, NON_NEGATIVE, POSITIVE, TORCH_DEVICE
from search import distributed
from search.depth.memory import check_training_memory
from search.classification.task import ClassificationTask
from search.depth.task import DepthTask
from search.errors import SearchError
from search.spaces import get_space
from search.tasks import TASK_NAMES, get_task
from search.train import TrainConfig, train as train_supernet

_D = TrainConfig()


@click.command()
@click.option("--space", default=_D.space, show_default=True, help="Search space name (`nas-search spaces`).")
@click.option("--task", type=click.Choice(TASK_NAMES), default=None,
              help="Fail unless the space is of this task [the space's: fastdepth* are depth].")
@click.option("--data", default=None,
              help="Classification: 'builtin', an ImageFolder root (train/<class>/..., val/...) or a CIFAR-10 "
                   "python directory. Depth: 'builtin-depth' or a NYU Depth v2 folder (FastDepth's h5 files). "
                   "[the task's built-in set]")
@click.option("--epochs", default=_D.epochs, show_default=True, type=COUNT, help="Total epochs (also with --resume).")
@click.option("--out", "out_dir", required=True, type=click.Path(file_okay=False),
              help="Output directory: supernet.pt (checkpoint every epoch) and train_log.jsonl.")
@click.option("--resume", is_flag=True, help="Continue from OUT/supernet.pt with its saved settings.")
@click.option("--batch-size", default=None, type=COUNT,
              help=f"Images per process [default: the task's: classification "
                   f"{ClassificationTask.train_defaults['batch_size']}, depth "
                   f"{DepthTask.train_defaults['batch_size']}]. On CPU a batch whose estimated memory exceeds what "
                   "is available is refused before any work (depth).")
@click.option("--lr", default=None, type=POSITIVE,
              help="Peak learning rate [default: 0.2 x global batch / 128 (SGD), 2e-3 (AdamW)].")
@click.option("--optimizer", default=None, type=click.Choice(["sgd", "adamw"]),
              help="[classification: sgd; depth: adamw]")
@click.option("--seed", default=_D.seed, show_default=True, type=int, help="Seed of init, data order, OD draws.")
@click.option("--workers", default=_D.workers, show_default=True, type=NON_NEGATIVE,
              help="DataLoader worker processes.")
@click.option("--granularity", default=None, type=COUNT, help="Channel step of width choices [default: the space's].")
@click.option("--holdout", default=None, type=NON_NEGATIVE,
              help="Training images held out for MCD scoring [default: 10% of train, at most 10,000]. "
                   "Classification only: depth data sets have a fixed holdout split.")
@click.option("--steps-per-epoch", default=None, type=COUNT, help="Cap steps per epoch (smoke runs).")
@click.option("--device", default=None, type=TORCH_DEVICE,
              help="cpu, cuda, cuda:1 ... [default: cuda:<local rank> if available].")
@click.option("--od-groups", default=None, type=NON_NEGATIVE,
              help="Grouped OD: G sub-networks per batch, BatchNorm statistics per group; 0: per-image OD "
                   "[default: the task's: classification 4, depth 0].")
@click.option("--od-warmup-epochs", default=None, type=NON_NEGATIVE,
              help="First epochs train the max network alone [default: the task's: classification 2, depth 0].")
@click.option("--distill/--no-distill", default=False, show_default=True,
              help="In-place distillation: groups share images, the max group's soft predictions teach the others.")
@click.option("--no-progress", is_flag=True, help="No progress bar or per-epoch lines.")
def train(space, task, data, epochs, out_dir, resume, batch_size, lr, optimizer, seed, workers, granularity, holdout,
          steps_per_epoch, device, od_groups, od_warmup_epochs, distill, no_progress) -> None:
    """Train the OD super-network (CBC, super-kernels); torchrun for several processes.

    The space's task decides what is trained: classification (cross-entropy, top-1) or depth
    (masked L1, RMSE/δ1 for `fastdepth`, `fastdepth-tiny`)."""
    if granularity is not None:
        _check_granularity(space, granularity)
    batch_size = _batch_size(space, granularity, batch_size, data, resume, device)
    cfg = TrainConfig(space=space, task=task, data=data, epochs=epochs, batch_size=batch_size, lr=lr,
                      optimizer=optimizer, seed=seed, workers=workers, granularity=granularity, holdout=holdout,
                      steps_per_epoch=steps_per_epoch, od_groups=od_groups, od_warmup_epochs=od_warmup_epochs,
                      distill=distill, progress=not no_progress)
    try:
        result = train_supernet(cfg, out_dir, resume=resume, device=device)
    finally:
        distributed.cleanup()
    summary = get_task(result.task).result_summary(result.metrics)
    if summary and not no_progress:
        click.echo(f"wrote {result.checkpoint} ({summary})")


def _batch_size(space_name: str, granularity: int | None, batch_size: int | None, data: str | None,
                resume: bool, device: str | None) -> int:
    """`--batch-size`, or the task's default (`Task.train_defaults`, else TrainConfig's); on CPU, a depth
    batch that cannot fit in memory is refused here, before data is rendered (`search.depth.memory`)."""
    space = get_space(space_name, granularity=granularity)
    defaults = get_task(space.task).train_defaults
    default = defaults["batch_size"]
    chosen = default if batch_size is None else batch_size
    on_cpu = (device or ("cuda" if torch.cuda.is_available() else "cpu")).startswith("cpu")
    if space.task == "depth" and on_cpu and not resume:  # a resumed run keeps its saved batch size
        check_training_memory(space, chosen, data or defaults["data"], default)
    return chosen


def _check_granularity(space_name: str, granularity: int) -> None:
    """--granularity at most the space's narrowest layer: a larger step rounds every width up to a
    multiple of it (1000 would make a 16-channel layer 1000 channels wide and a step take minutes)."""
    narrowest = min(var.max for var in get_space(space_name).width_vars.values())
    if granularity > narrowest:
        raise SearchError(f"--granularity {granularity}: larger than the narrowest layer of {space_name} "
                          f"({narrowest} channels), which it would widen; expected 1..{narrowest}")
