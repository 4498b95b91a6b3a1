"""`nas-search search` as a library call: check every input, build metrics and scorer, run MCD.

`prepare(request)` does every check a user's input can fail *before* any heavy work
(output folder, super-network checkpoint and its space, LUT slice, LUT coverage of the
space, reachability of each target), each failing with a one-line `SearchError` /
`LutError`. `search(request)` then loads the data, builds the scorer and runs `run_mcd`.
The task of the checkpoint's space (`search/tasks.py`) decides the data splits and the score
(classification: top-1; depth: -RMSE or δ1 on the fixed holdout split).
"""
from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

from lut_db import DEFAULT_RUNTIME_OPTIONS, LatencyTable
from profiler.agents import open_agent
from search import distributed
from search.checkpoint import load_supernet
from search.data import make_loader
from search.errors import SearchError
from search.spaces.space import SearchSpace
from search.tasks import Task, task_of

from .files import SearchFiles
from .metrics import Constraint, LutLatencyMetric, MacsMetric, MeasuredLatencyMetric, Metric
from .request import SearchRequest
from .scoring import SupernetScorer
from .search import SearchResult, run_mcd

METRICS = ("lut", "macs", "measured")

__all__ = ["METRICS", "Prepared", "SearchRequest", "build_scorer", "prepare", "search"]


@dataclass
class Prepared:
    """A checked request, loaded: the space, its super-network, the constraints and metrics."""

    space: SearchSpace
    supernet: object  # the trained super-network (eval mode), of `space`'s family
    checkpoint_meta: dict  # the checkpoint's meta (e.g. ``train_config``)
    constraints: list[Constraint]
    report_metrics: list[Metric]
    meta: dict  # stored in state.json / final.json; `build_scorer` adds data and holdout_size
    task: Task


def prepare(request: SearchRequest, log: Callable[[str], None] = print, check_out: bool = True) -> Prepared:
    """All fail-fast checks; returns the loaded super-network, constraints and metrics.

    `check_out=False` leaves the output folder to the caller (a multi-target search checks
    its own folder, `targets.py`)."""
    if request.metric not in METRICS:
        raise SearchError(f"--metric: unknown metric {request.metric!r}, expected one of {', '.join(METRICS)}")
    if request.target_latency_ms is None and request.target_macs is None:
        raise SearchError("no target: pass --target-latency-ms and/or --target-macs")
    if request.metric == "macs" and request.target_latency_ms is not None:
        raise SearchError("--metric macs constrains MACs only: pass --target-macs, or --metric lut|measured "
                          "for --target-latency-ms")
    for name, value in (("--target-latency-ms", request.target_latency_ms), ("--target-macs", request.target_macs)):
        if value is not None and not value > 0:
            raise SearchError(f"{name} must be > 0, got {value}")
    if check_out:
        SearchFiles(request.out).check(request.resume)
    space, supernet, ckpt_meta = _load_supernet(request)
    task = task_of(space, request.task, score_metric=request.score)

    table = None
    needs_lut = request.target_latency_ms is not None and request.metric == "lut"
    if needs_lut or request.db is not None:
        table = _load_table(request, space)
        note = table.fallback_note(space.all_layer_configs(), f"the LUT latency of space {space.name}")
        if note:  # a GPU slice whose rows partly ran on the CPU: say so once, search on
            log(note)
    constraints: list[Constraint] = []
    report: list[Metric] = []
    lut_metric = LutLatencyMetric(space, table) if table is not None else None
    if request.target_latency_ms is not None:
        if request.metric == "measured":
            metric: Metric = MeasuredLatencyMetric(space, open_agent(request.measure_device), request.runtime,
                                                   workdir=Path(request.out) / "measured")
        else:
            metric = lut_metric
        constraints.append(Constraint(metric, float(request.target_latency_ms)))
    macs = MacsMetric(space)
    if request.target_macs is not None:
        constraints.append(Constraint(macs, float(request.target_macs)))
    else:
        report.append(macs)
    if lut_metric is not None and all(c.metric is not lut_metric for c in constraints):
        report.append(lut_metric)  # predicted latency of a MAC- or measurement-guided search
    _check_reachable(space, constraints)
    meta = {"supernet": str(request.supernet), "db": str(request.db) if request.db else None,
            "device": request.device, "runtime": request.runtime,
            "runtime_options": table.runtime_options if table is not None else None,
            "metric": request.metric, "data": request.data, "task": task.name, "score": task.score_metric,
            "constraints": {c.name: {"limit": c.limit, "metric": c.metric.describe()} for c in constraints}}
    return Prepared(space, supernet, ckpt_meta, constraints, report, meta, task)


def search(request: SearchRequest, log: Callable[[str], None] = print, scorer=None) -> SearchResult:
    """Check, then run MCD; `scorer` replaces the super-network scorer (tests, other tasks).

    Under torchrun every rank calls this (gloo: candidates are scored on CPU); rank 0 writes
    the search folder, ``request.json`` (the request, for the report) included.
    """
    distributed.init_from_env("cpu")
    prepared = prepare(request, log)
    if scorer is None:
        scorer = build_scorer(request, prepared)
    holdout = prepared.meta.get("holdout_size")
    log(f"searching {prepared.space.name}: " + ", ".join(
        f"{c.name} <= {c.limit:g} ({c.metric.describe()})" for c in prepared.constraints)
        + f"; J={request.mcd.candidates} L={request.mcd.layers} seed={request.mcd.seed}"
        + (f", holdout {holdout} images" if holdout else ""))
    files = SearchFiles(request.out)
    files.write_request(request.to_dict())
    result = run_mcd(prepared.space, prepared.constraints, scorer, request.out, request.mcd, resume=request.resume,
                     report_metrics=prepared.report_metrics, log=log, meta=prepared.meta)
    if result.done and prepared.task.records_holdout_metrics and hasattr(scorer, "metrics") and files.writer:
        metrics = scorer.metrics(result.config)  # every held-out metric of the task (e.g. RMSE and δ1)
        files.add_to_final(holdout_metrics=metrics)
        log("held-out: " + " ".join(f"{k}={v:.4g}" for k, v in metrics.items()))
    return result


def build_scorer(request: SearchRequest, prepared: Prepared) -> SupernetScorer:
    """Super-network scorer on the held-out split (BN recalibrated on training batches).

    The held-out images must be ones the super-network never trained on: the ``holdout``
    split of size n is a fixed subset of the one of any size >= n (`search.data`; the depth
    data sets' holdout split is fixed and its first n images are used), so the search may
    use fewer held-out images than training set aside, never more.
    """
    space, task = prepared.space, prepared.task
    image_hw = space.spec.input_hw
    train_cfg = dict(prepared.checkpoint_meta.get("train_config") or {})
    data = request.data or train_cfg.get("data") or task.default_data
    trained_holdout = len(task.dataset(data, "holdout", image_hw, holdout=train_cfg.get("holdout")))
    holdout = trained_holdout if request.holdout_size is None else request.holdout_size
    if holdout > trained_holdout:
        raise SearchError(f"--holdout-size {holdout} exceeds the {trained_holdout} images the super-network "
                          "was trained without: candidates would be scored on training images")
    if holdout < 1:
        raise SearchError(f"--holdout-size must be >= 1, got {holdout}")
    holdout_set = task.dataset(data, "holdout", image_hw, holdout=holdout)
    train_set = task.dataset(data, "train", image_hw, holdout=trained_holdout)
    prepared.meta.update(holdout_size=len(holdout_set), data=data)
    holdout_loader = make_loader(holdout_set, request.batch_size, shuffle=False)
    calib_loader = make_loader(train_set, request.batch_size, shuffle=True, seed=0)  # same images every time
    return SupernetScorer.for_task(task, prepared.supernet, holdout_loader, calib_loader, request.calib_batches)


# ----------------------------------------------------------------------------- checks
def _load_supernet(request: SearchRequest):
    path = Path(request.supernet)
    if not path.is_file():
        raise SearchError(f"--supernet {path}: no such file (train one with `nas-search train`)")
    space, supernet, meta = load_supernet(path)
    if request.space is not None and request.space != space.name:
        raise SearchError(f"--supernet {path} is a super-network of space {space.name!r}, not {request.space!r}")
    supernet.eval()
    return space, supernet, dict(meta or {})


def _load_table(request: SearchRequest, space: SearchSpace) -> LatencyTable:
    if request.db is None or request.device is None:
        raise SearchError("a latency target read from the LUT needs --db and --device "
                          "(or --metric measured, or --metric macs with --target-macs)")
    db = Path(request.db)
    if not db.is_file():
        raise SearchError(f"--db {db}: no such file (build it with `lutbuild build --space {space.name} "
                          f"--db {db} ...`)")
    options = request.runtime_options or DEFAULT_RUNTIME_OPTIONS
    slices = LatencyTable.slices(db)
    if not any(s.device_id == request.device for s in slices):
        there = "; ".join(f"{s.device_id} {s.runtime} {s.runtime_options}" for s in slices) or "none"
        raise SearchError(f"--device {request.device!r} has no slice in {db}; slices: {there}")
    table = LatencyTable.load(db, request.device, request.runtime, options, interpolate=request.interpolate)
    if not request.interpolate:
        missing = table.missing(sorted(space.all_layer_configs(), key=lambda c: c.key))
        if missing:
            raise SearchError(
                f"{db} lacks {len(missing)} of the {len(space.all_layer_configs())} layer keys space {space.name} "
                f"needs on {request.device} / {request.runtime} (e.g. {missing[0].key}); fill them with "
                f"`lutbuild build --space {space.name} --db {db} --device {request.device} --runtime "
                f"{request.runtime}` or pass --interpolate")
    return table


def _check_reachable(space: SearchSpace, constraints: list[Constraint]) -> None:
    smallest = space.min_config()
    for c in constraints:
        floor = c.metric.value(smallest)
        if floor > c.limit:
            unit = c.metric.unit
            raise SearchError(f"target {c.name} <= {c.limit:g} {unit} is unreachable: the smallest network of "
                              f"{space.name} is at {floor:.4g} {unit} ({c.metric.describe()})")
