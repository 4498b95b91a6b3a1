"""`nas-search finetune`: train the searched network alone, from its super-network weights."""
from __future__ import annotations

from pathlib import Path

import click

from profiler.cli_types import COUNT, POSITIVE
from search.finetune import FinetuneConfig, finetune as run, load_search
from search.spaces import get_space
from search.tasks import TASK_NAMES, task_of


@click.command()
@click.option("--search", "search_dir", type=click.Path(path_type=Path), required=True,
              help="Output folder of `nas-search search` (holds final.json).")
@click.option("--epochs", type=COUNT, default=5, show_default=True)
@click.option("--lr", type=POSITIVE, default=None,
              help="Peak LR (cosine decay to 0) [classification: 0.02, SGD; depth: 5e-4, AdamW].")
@click.option("--batch-size", type=COUNT, default=128, show_default=True)
@click.option("--seed", type=int, default=0, show_default=True)
@click.option("--supernet", type=click.Path(path_type=Path), default=None,
              help="Super-network checkpoint [the one the search used].")
@click.option("--data", default=None, help="Dataset [the one the search used].")
@click.option("--task", type=click.Choice(TASK_NAMES), default=None,
              help="Fail unless the searched space is of this task [the space's].")
@click.option("--steps-per-epoch", type=COUNT, default=None, help="Cap on steps per epoch (quick runs).")
@click.option("--val-batches", type=COUNT, default=None, help="Cap on validation batches (quick runs).")
def finetune(search_dir, epochs, lr, batch_size, seed, supernet, data, task, steps_per_epoch, val_batches) -> None:
    """Fine-tune the searched network; writes finetuned.pt (state_dict) and finetune.json
    (top-1 for classification, RMSE / δ1 for depth)."""
    space_task = task_of(get_space(load_search(search_dir)["space"]), task)
    cfg = FinetuneConfig.for_task(space_task, epochs=epochs, lr=lr, batch_size=batch_size, seed=seed,
                                  steps_per_epoch=steps_per_epoch, val_batches=val_batches)
    run(search_dir, cfg, supernet_path=supernet, data=data, log=click.echo, task=task)
