"""`nas-search report`: report.md + PNGs of a search, with baselines and a measured latency on request."""
from __future__ import annotations

from pathlib import Path

import click

from profiler.cli_types import COUNT
from search.mcd.files import is_multi_target
from search.mcd.measure import measure_exported
from search.mcd.report import check_task, write_report
from search.mcd.run_baselines import run_baselines
from search.mcd.targets import report_targets
from search.tasks import TASK_NAMES


@click.command()
@click.option("--search", "search_dir", type=click.Path(path_type=Path), required=True,
              help="Output folder of `nas-search search`.")
@click.option("--baselines", default="", help="Comma-separated baselines to compute first: "
                                              "uniform, random, netadapt-v1 (kept in baselines.json).")
@click.option("--v1-steps", type=COUNT, default=50, show_default=True,
              help="Fine-tune steps per NetAdapt V1 proposal (its scripts: 500 on ImageNet).")
@click.option("--task", type=click.Choice(TASK_NAMES), default=None,
              help="Fail unless the searched space is of this task [the space's].")
@click.option("--measure-device", default=None, help="Measure the exported files on 'local' or an ADB serial.")
def report(search_dir, baselines, v1_steps, task, measure_device) -> None:
    """Write report.md, trajectory.png and tradeoff.png into the search folder (held-out score and
    fine-tuned top-1 for classification; RMSE and δ1 for depth) vs latency or MACs. On the folder of a
    multi-target search (targets.json): every target's report, then pareto.md and pareto.png (measured
    latencies of every network with --measure-device)."""
    names = [n.strip() for n in baselines.split(",") if n.strip()]
    if is_multi_target(search_dir):
        report_targets(search_dir, names, v1_steps=v1_steps, task=task, measure_device=measure_device, log=click.echo)
        return
    check_task(search_dir, task)
    if names:
        run_baselines(search_dir, names, v1_steps=v1_steps, log=click.echo)
    if measure_device:
        measure_exported(search_dir, measure_device, log=click.echo)
    write_report(search_dir, log=click.echo)
