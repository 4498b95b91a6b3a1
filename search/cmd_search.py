"""`nas-search search`: MCD over the OD super-network under latency and/or MAC targets."""
from __future__ import annotations

import re
from pathlib import Path

import click

from search.errors import SearchError
from search.mcd.schedule import ReductionSchedule
from search.mcd.search import MCDConfig
from search.mcd.session import METRICS, SearchRequest
from search.mcd.session import search as run_search
from search.tasks import TASK_NAMES

_SUFFIX = {"": 1, "k": 1e3, "m": 1e6, "g": 1e9}


def parse_count(text: str) -> float:
    """'300M', '2.5e8', '1.2G' -> a number (MACs)."""
    match = re.fullmatch(r"\s*([0-9.eE+-]+)\s*([kKmMgG]?)\s*", text or "")
    try:
        return float(match.group(1)) * _SUFFIX[match.group(2).lower()]
    except (AttributeError, ValueError):
        raise click.BadParameter(f"expected a number with an optional K/M/G suffix, got {text!r}") from None


@click.command()
@click.option("--supernet", type=click.Path(path_type=Path), required=True,
              help="Super-network checkpoint from `nas-search train` (its space is searched).")
@click.option("--db", type=click.Path(path_type=Path), help="LUT (SQLite) from `lutbuild build`.")
@click.option("--device", help="device_id of the LUT slice (`lutbuild show` lists them).")
@click.option("--runtime", default="tflite", show_default=True, help="Runtime of the LUT slice: tflite or onnx.")
@click.option("--runtime-options", default=None, help="Options string of the slice [threads=1;delegate=xnnpack].")
@click.option("--target-latency-ms", type=float, help="Latency constraint in ms.")
@click.option("--target-macs", help="MAC constraint, e.g. 5M or 3e8.")
@click.option("--metric", type=click.Choice(METRICS), default="lut", show_default=True,
              help="Where the latency comes from: LUT prediction, or measured for every candidate; "
                   "'macs' for a MAC-only search.")
@click.option("--measure-device", default="local", show_default=True,
              help="Agent for --metric measured: 'local' or an ADB serial.")
@click.option("--interpolate", is_flag=True, help="Estimate LUT keys missing from the slice instead of failing.")
@click.option("--space", default=None, help="Fail unless the checkpoint is a super-network of this space.")
@click.option("--task", type=click.Choice(TASK_NAMES), default=None,
              help="Fail unless the checkpoint's space is of this task [the space's].")
@click.option("--score", type=click.Choice(["top1", "rmse", "delta1"]), default=None,
              help="What candidates are scored by on the holdout split [classification: top1; depth: rmse "
                   "(score = -RMSE); depth may use delta1].")
@click.option("--out", type=click.Path(path_type=Path), required=True, help="Output folder of the search.")
@click.option("--resume", is_flag=True, help="Continue the search checkpointed in --out.")
@click.option("--candidates", "-J", type=int, default=16, show_default=True, help="Candidates per iteration.")
@click.option("--layers", "-L", type=int, default=3, show_default=True, help="Dimensions each candidate shrinks.")
@click.option("--initial-reduction", type=float, default=0.05, show_default=True,
              help="First iteration's reduction, as a fraction of the start network's resource.")
@click.option("--decay", type=float, default=0.96, show_default=True, help="Reduction decay per iteration.")
@click.option("--min-reduction", type=float, default=0.005, show_default=True,
              help="Floor of the per-iteration reduction (fraction of the start).")
@click.option("--max-iterations", type=int, default=200, show_default=True)
@click.option("--seed", type=int, default=0, show_default=True)
@click.option("--data", default=None, help="Dataset: builtin, ImageFolder or CIFAR-10 dir; builtin-depth or a NYU "
                                           "folder for depth [the super-network's].")
@click.option("--holdout-size", type=int, default=None,
              help="Held-out training images that score candidates [the super-network's holdout].")
@click.option("--calib-batches", type=int, default=10, show_default=True,
              help="BN recalibration batches per candidate.")
@click.option("--batch-size", type=int, default=128, show_default=True)
@click.option("--stop-after", type=int, default=None, hidden=True,
              help="Stop after this many iterations (as if killed); continue with --resume.")
def search(supernet, db, device, runtime, runtime_options, target_latency_ms, target_macs, metric, measure_device,
           interpolate, space, task, score, out, resume, candidates, layers, initial_reduction, decay, min_reduction,
           max_iterations, seed, data, holdout_size, calib_batches, batch_size, stop_after) -> None:
    """Run Multi-layer Coordinate Descent to the targets; writes history.jsonl, state.json, final.json."""
    try:
        schedule = ReductionSchedule(initial_reduction, decay, min_reduction)
    except ValueError as exc:
        raise SearchError(str(exc)) from None
    request = SearchRequest(
        supernet=supernet, out=out, db=db, device=device, runtime=runtime, runtime_options=runtime_options,
        target_latency_ms=target_latency_ms, target_macs=parse_count(target_macs) if target_macs else None,
        metric=metric, measure_device=measure_device, interpolate=interpolate, space=space, task=task, score=score,
        data=data, holdout_size=holdout_size, calib_batches=calib_batches, batch_size=batch_size, resume=resume,
        mcd=MCDConfig(candidates, layers, schedule, seed, max_iterations, stop_after))
    run_search(request, log=lambda line: click.echo(line, err=False))
