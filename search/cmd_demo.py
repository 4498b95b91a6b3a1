"""`nas-search demo`: the whole pipeline on the embedded default (see search/demo.py)."""
from pathlib import Path

import click

from profiler.cli_types import COUNT, FRACTION
from search.demo import DemoConfig, run_demo


@click.command()
@click.option("--out", type=click.Path(file_okay=False, path_type=Path), default=DemoConfig.out, show_default=True,
              help="Folder for the LUT, super-network, search, exported files and report (re-running resumes).")
@click.option("--epochs", type=COUNT, default=DemoConfig.epochs, show_default=True, help="Super-network epochs.")
@click.option("--target-fraction", type=FRACTION, default=DemoConfig.target_fraction, show_default=True,
              help="Latency target as a fraction of the max network's LUT latency.")
@click.option("--finetune-epochs", type=COUNT, default=DemoConfig.finetune_epochs, show_default=True)
@click.option("--plan", type=click.Choice(["full", "sparse"]), default=DemoConfig.plan, show_default=True,
              help="LUT sampling plan.")
@click.option("--seed", type=int, default=DemoConfig.seed, show_default=True)
def demo(out, epochs, target_fraction, finetune_epochs, plan, seed) -> None:
    """Build the mbv3-tiny LUT on this host, train the OD super-network on the built-in data,
    run MCD to a latency target, fine-tune, export, measure, and compare with the uniform
    width-multiplier baseline at the same latency."""
    run_demo(DemoConfig(out=out, epochs=epochs, target_fraction=target_fraction, finetune_epochs=finetune_epochs,
                        plan=plan, seed=seed))
