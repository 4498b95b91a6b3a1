"""Baselines for a finished search, scored like its candidates (``baselines.json``).

`rebuild` turns the search folder back into the search's constraints and scorer, from the
request the search ran with (``request.json``): every baseline then meets the same
constraints and is scored on the same held-out images with the same BN recalibration as
the MCD candidates. `run_baselines` runs the named baselines (`baselines.py`: uniform width
multiplier, random search with MCD's budget, NetAdapt V1 with its own short fine-tunes)
and merges their results into ``baselines.json``, which the report reads.
"""
from __future__ import annotations

import json
from collections.abc import Callable, Sequence
from pathlib import Path

from search import distributed
from search.data import make_loader
from search.errors import SearchError
from search.tasks import task_of

from .baselines import BASELINES, BaselineResult, netadapt_v1, random_baseline, uniform_baseline
from .files import SearchFiles, read_json
from .request import SearchRequest
from .scoring import SupernetScorer
from .session import Prepared, build_scorer, prepare

BASELINES_FILE = "baselines.json"
V1_BATCH = 128  # NetAdapt V1's fine-tune batch (smaller on tiny data sets, so every batch is whole)
V1_HOLDOUT_BATCH = 256  # evaluation only: larger is faster


def rebuild(search_dir: Path, log: Callable[[str], None] = print
            ) -> tuple[Prepared, SupernetScorer, SearchRequest]:
    """(prepared search, scorer, request) of the finished search in `search_dir`.

    The request is the stored one (``request.json``) with its output moved to
    ``<search_dir>/.baselines`` (a fresh folder: `prepare` checks it holds no search).
    """
    files = SearchFiles(search_dir)
    files.finished()
    stored = SearchRequest.from_dict(files.request())
    request = SearchRequest.from_dict({**stored.to_dict(), "out": str(Path(search_dir) / ".baselines"),
                                       "resume": False})
    prepared = prepare(request, log)
    return prepared, build_scorer(request, prepared), request


def run_baselines(search_dir: str | Path, names: Sequence[str], v1_steps: int = 50, v1_lr: float | None = None,
                  log: Callable[[str], None] = print, task: str | None = None, budget: int | None = None) -> dict:
    """Compute the named baselines for a finished search; merged into ``baselines.json``.

    `v1_lr`: NetAdapt V1's per-proposal fine-tune LR (None: the task's). For a depth search
    each baseline also keeps every held-out metric (``detail["holdout_metrics"]``: RMSE, δ1...).
    `task` (``--task``; None: any) must be the searched space's task. `budget`: networks the
    random search scores (None: the candidates the search scored, `scored_budget`).
    """
    search_dir = Path(search_dir)
    check_names(names)
    prepared, scorer, _ = rebuild(search_dir, log)
    task_of(prepared.space, task)  # --task must agree with the searched space
    return compute_baselines(search_dir, prepared, scorer, names, budget or scored_budget(search_dir), v1_steps,
                             v1_lr, log)


def check_names(names: Sequence[str]) -> None:
    unknown = [n for n in names if n not in BASELINES]
    if unknown:
        raise SearchError(f"--baselines: unknown {', '.join(unknown)}; expected some of {', '.join(BASELINES)}")


def scored_budget(search_dir: Path) -> int:
    """Candidates the search in `search_dir` scored (MCD iterations and landing steps), at least 1."""
    return sum(len(r.get("candidates", [])) for r in SearchFiles(search_dir).history()) or 1


def compute_baselines(search_dir: Path, prepared: Prepared, scorer, names: Sequence[str], budget: int,
                      v1_steps: int = 50, v1_lr: float | None = None, log: Callable[[str], None] = print,
                      keep_done: bool = False) -> dict:
    """The named baselines under `prepared`'s constraints, merged into ``<search_dir>/baselines.json``
    (written on rank 0); `keep_done`: skip those the file holds already (a resumed run)."""
    space, constraints, extra = prepared.space, prepared.constraints, prepared.report_metrics
    results = read_json(search_dir / BASELINES_FILE) or {}
    for name in names:
        if keep_done and name in results:
            continue
        if name == "uniform":
            result = uniform_baseline(space, constraints, scorer, extra)
        elif name == "random":
            result = random_baseline(space, constraints, scorer, budget, report_metrics=extra)
        else:
            result = _netadapt_v1(prepared, v1_steps, v1_lr, log)
        if prepared.task.records_holdout_metrics and "holdout_metrics" not in result.detail:
            result.detail["holdout_metrics"] = scorer.metrics(result.config)
        results[name] = result.to_dict()
        log(f"baseline {name}: score {result.score:.4f} "
            + " ".join(f"{k}={v:.4g}" for k, v in result.values.items()) + f" ({result.time_s:.0f}s)")
        if distributed.rank() == 0:  # after each baseline: a killed run keeps what it computed
            (search_dir / BASELINES_FILE).write_text(json.dumps(results, indent=1) + "\n", encoding="utf-8")
    return results


def _netadapt_v1(prepared: Prepared, steps: int, lr: float | None, log: Callable[[str], None]) -> BaselineResult:
    """NetAdapt V1 from the sliced max network, fine-tuned on the super-network's training
    split and scored on the search's held-out split (its own fine-tuned weights)."""
    space, task = prepared.space, prepared.task
    train_cfg = dict(prepared.checkpoint_meta.get("train_config") or {})
    data = prepared.meta.get("data") or task.default_data
    hw = space.spec.input_hw
    train = task.dataset(data, "train", hw, holdout=train_cfg.get("holdout"))
    hold = task.dataset(data, "holdout", hw, holdout=prepared.meta.get("holdout_size"))
    start = prepared.supernet.subnet(space.max_config())
    hold_loader = make_loader(hold, V1_HOLDOUT_BATCH)
    batch = min(V1_BATCH, len(train))
    result = netadapt_v1(space, prepared.constraints, start,
                         make_loader(train, batch, shuffle=True, drop_last=True), hold_loader,
                         finetune_steps=steps, lr=lr, report_metrics=prepared.report_metrics, log=log)
    model = result.detail.pop("model", None)
    if task.records_holdout_metrics:  # its own fine-tuned weights, as it was scored
        result.detail["holdout_metrics"] = task.evaluate(model, hold_loader)
    return result
