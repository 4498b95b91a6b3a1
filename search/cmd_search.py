"""`nas-search search`: MCD over the OD super-network under latency and/or MAC targets.

One target writes one search folder (`search.mcd.session`); a comma-separated list of
descending targets (``--target-latency-ms 0.4,0.3,0.2``) searches each from the same
super-network, continuing from the previous target's network, one folder per target plus
the Pareto files (`search.mcd.targets`).
"""
from __future__ import annotations

import math
import re
from pathlib import Path

import click

from profiler.cli_types import COUNT, FRACTION, NON_NEGATIVE, POSITIVE, FiniteFloat
from search.errors import SearchError
from search.mcd.schedule import ReductionSchedule
from search.mcd.search import MCDConfig
from search.mcd.session import METRICS, SearchRequest
from search.mcd.session import search as run_search
from search.mcd.targets import PARETO_BASELINES, search_targets
from search.tasks import TASK_NAMES

_SUFFIX = {"": 1, "k": 1e3, "m": 1e6, "g": 1e9}


def parse_count(text: str) -> float:
    """'300M', '2.5e8', '1.2G' -> a finite number > 0 (MACs)."""
    match = re.fullmatch(r"\s*([0-9.eE+-]+)\s*([kKmMgG]?)\s*", text or "")
    try:
        value = float(match.group(1)) * _SUFFIX[match.group(2).lower()]
    except (AttributeError, ValueError):
        raise click.BadParameter(f"expected a number with an optional K/M/G suffix, got {text!r}") from None
    if not (math.isfinite(value) and value > 0):
        raise click.BadParameter(f"expected a finite number > 0, got {text!r}")
    return value


class TargetList(click.ParamType):
    """Comma-separated targets, each finite and > 0: ``0.4,0.3,0.2`` (ms) or ``5M,4M`` (MACs)."""

    def __init__(self, macs: bool) -> None:
        self.macs = macs
        self.name = "MACS[,MACS...]" if macs else "MS[,MS...]"

    def convert(self, value, param, ctx):
        if isinstance(value, tuple):
            return value
        items = [t.strip() for t in str(value).split(",")]
        if not all(items):
            self.fail(f"expected comma-separated targets, got {value!r}", param, ctx)
        try:
            return tuple(parse_count(t) if self.macs else POSITIVE.convert(t, None, None) for t in items)
        except click.BadParameter as exc:
            self.fail(exc.message, param, ctx)


@click.command()
@click.option("--supernet", type=click.Path(path_type=Path), required=True,
              help="Super-network checkpoint from `nas-search train` (its space is searched).")
@click.option("--db", type=click.Path(path_type=Path), help="LUT (SQLite) from `lutbuild build`.")
@click.option("--device", help="device_id of the LUT slice (`lutbuild show` lists them).")
@click.option("--runtime", default="tflite", show_default=True, help="Runtime of the LUT slice: tflite or onnx.")
@click.option("--runtime-options", default=None, help="Options string of the slice [threads=1;delegate=xnnpack].")
@click.option("--target-latency-ms", type=TargetList(macs=False),
              help="Latency constraint in ms; a descending list (0.4,0.3,0.2) searches each target from the "
                   "same super-network into out/t<ms>ms/ plus pareto.md and pareto.png.")
@click.option("--target-macs", type=TargetList(macs=True),
              help="MAC constraint, e.g. 5M or 3e8; a descending list (5M,4M) as for --target-latency-ms.")
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
@click.option("--resume", is_flag=True, help="Continue the search checkpointed in --out (per target for a list).")
@click.option("--candidates", "-J", type=COUNT, default=16, show_default=True, help="Candidates per iteration.")
@click.option("--layers", "-L", type=COUNT, default=3, show_default=True, help="Dimensions each candidate shrinks.")
@click.option("--initial-reduction", type=FRACTION, default=0.05, show_default=True,
              help="First iteration's reduction, as a fraction of the start network's resource.")
@click.option("--decay", type=FRACTION, default=0.96, show_default=True, help="Reduction decay per iteration.")
@click.option("--min-reduction", type=FiniteFloat(min=0.0, max=1.0), default=0.005, show_default=True,
              help="Floor of the per-iteration reduction (fraction of the start).")
@click.option("--max-iterations", type=COUNT, default=200, show_default=True)
@click.option("--land/--no-land", default=True, show_default=True,
              help="After the constraints first hold, grow the network back into the unused budget (landing).")
@click.option("--land-budget", type=NON_NEGATIVE, default=64, show_default=True,
              help="Candidates the landing may score in all (at most -J per step).")
@click.option("--pareto-baselines", default=",".join(PARETO_BASELINES), show_default=True,
              help="Baselines computed at every target of a target list for pareto.md/png "
                   "(uniform, random; '' for none; random scores as many networks as MCD did).")
@click.option("--seed", type=int, default=0, show_default=True)
@click.option("--data", default=None, help="Dataset: builtin, ImageFolder or CIFAR-10 dir; builtin-depth or a NYU "
                                           "folder for depth [the super-network's].")
@click.option("--holdout-size", type=COUNT, default=None,
              help="Held-out training images that score candidates [the super-network's holdout].")
@click.option("--calib-batches", type=NON_NEGATIVE, default=10, show_default=True,
              help="BN recalibration batches per candidate.")
@click.option("--batch-size", type=COUNT, default=128, show_default=True)
@click.option("--stop-after", type=COUNT, default=None, hidden=True,
              help="Stop after this many iterations (as if killed); continue with --resume.")
def search(supernet, db, device, runtime, runtime_options, target_latency_ms, target_macs, metric, measure_device,
           interpolate, space, task, score, out, resume, candidates, layers, initial_reduction, decay, min_reduction,
           max_iterations, land, land_budget, pareto_baselines, seed, data, holdout_size, calib_batches, batch_size,
           stop_after) -> None:
    """Run Multi-layer Coordinate Descent to the targets, then land on them; writes history.jsonl,
    state.json, final.json (one folder per target for a list, plus pareto.md and pareto.png)."""
    try:
        schedule = ReductionSchedule(initial_reduction, decay, min_reduction)
    except ValueError as exc:
        raise SearchError(str(exc)) from None
    latency, macs = target_latency_ms or (), target_macs or ()
    names = [n.strip() for n in pareto_baselines.split(",") if n.strip()]
    unknown = [n for n in names if n not in PARETO_BASELINES]
    if unknown:
        raise SearchError(f"--pareto-baselines: unknown {', '.join(unknown)}; expected some of "
                          f"{', '.join(PARETO_BASELINES)}")
    request = SearchRequest(
        supernet=supernet, out=out, db=db, device=device, runtime=runtime, runtime_options=runtime_options,
        target_latency_ms=latency[0] if len(latency) == 1 else None, target_macs=macs[0] if len(macs) == 1 else None,
        metric=metric, measure_device=measure_device, interpolate=interpolate, space=space, task=task, score=score,
        data=data, holdout_size=holdout_size, calib_batches=calib_batches, batch_size=batch_size, resume=resume,
        mcd=MCDConfig(candidates, layers, schedule, seed, max_iterations, stop_after, land, land_budget))
    log = lambda line: click.echo(line, err=False)  # noqa: E731
    if len(latency) > 1 or len(macs) > 1:
        search_targets(request, latency, macs, log=log, baselines=names)
    else:
        run_search(request, log=log)
