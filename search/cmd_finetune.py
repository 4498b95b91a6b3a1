"""`nas-search finetune`: train the searched network alone, from its super-network weights
(or, with `--from-scratch`, from fresh weights: the reference it must beat)."""
from __future__ import annotations

from pathlib import Path

import click

from profiler.cli_types import COUNT, POSITIVE
from search.errors import SearchError
from search.finetune import FinetuneConfig, finetune as run, load_search, train_searched_from_scratch
from search.spaces import get_space
from search.tasks import TASK_NAMES, task_of


@click.command()
@click.option("--search", "search_dir", type=click.Path(path_type=Path), required=True,
              help="Output folder of `nas-search search` (holds final.json).")
@click.option("--epochs", type=COUNT, default=None,
              help="Epochs [5; --from-scratch: the super-network's].")
@click.option("--lr", type=POSITIVE, default=None,
              help="Peak LR (cosine decay to 0) [classification: 0.02, SGD; depth: 5e-4, AdamW].")
@click.option("--batch-size", type=COUNT, default=None,
              help="Images per step [128; --from-scratch: the super-network's (classification 128, depth 8)].")
@click.option("--seed", type=int, default=0, show_default=True)
@click.option("--supernet", type=click.Path(path_type=Path), default=None,
              help="Super-network checkpoint [the one the search used].")
@click.option("--data", default=None, help="Dataset [the one the search used].")
@click.option("--task", type=click.Choice(TASK_NAMES), default=None,
              help="Fail unless the searched space is of this task [the space's].")
@click.option("--steps-per-epoch", type=COUNT, default=None, help="Cap on steps per epoch (quick runs).")
@click.option("--val-batches", type=COUNT, default=None, help="Cap on validation batches (quick runs).")
@click.option("--from-scratch", is_flag=True,
              help="Train the architecture alone with fresh weights instead (the super-network's recipe); "
                   "writes scratch.pt + scratch.json.")
def finetune(search_dir, epochs, lr, batch_size, seed, supernet, data, task, steps_per_epoch, val_batches,
             from_scratch) -> None:
    """Fine-tune the searched network; writes finetuned.pt (state_dict) and finetune.json
    (top-1 for classification, RMSE / δ1 for depth)."""
    if from_scratch and lr is not None:
        raise SearchError("--lr: --from-scratch trains with the super-network's recipe and learning rate; "
                          "drop --lr")
    space_task = task_of(get_space(load_search(search_dir)["space"]), task)
    if from_scratch:
        train_searched_from_scratch(search_dir, epochs, seed, batch_size, steps_per_epoch, val_batches,
                                    supernet_path=supernet, data=data, log=click.echo, task=task)
        return
    cfg = FinetuneConfig.for_task(space_task, epochs=epochs, lr=lr, batch_size=batch_size, seed=seed,
                                  steps_per_epoch=steps_per_epoch, val_batches=val_batches)
    run(search_dir, cfg, supernet_path=supernet, data=data, log=click.echo, task=task)
