"""Scoring candidates: how good is a sub-network, with no training of its own.

A scorer is any callable ``config -> float`` where higher is better: top-1 accuracy for
classification, or e.g. ``-RMSE`` / δ1 for depth estimation. MCD does not care what it
measures. `SupernetScorer` is NetAdaptV2's: slice the candidate out of the trained
super-network (`supernet.subnet(config)`), recalibrate its BatchNorm statistics on a few
training batches (the super-network's running statistics belong to the mixture of widths OD
trained, not to this one network), and evaluate it on the held-out split of the training
data (never the validation split, which stays untouched for the final report).

`score_all` spreads the candidates of an iteration over `torch.distributed` ranks (when a
process group is initialised, e.g. under torchrun; `search.distributed`) and gathers the
scores, so every rank holds the same list and takes the same decision.
"""
from __future__ import annotations

from collections.abc import Callable, Sequence

import torch

from search import distributed
from search.evaluate import evaluate, recalibrate_bn
from search.spaces.space import SubnetConfig
from search.tasks import Task

Scorer = Callable[[SubnetConfig], float]


class SupernetScorer:
    """The score of a candidate with super-network weights (sliced, BN recalibrated).

    Higher is better; what it is comes from `evaluate_fn` (the task's): top-1 accuracy in
    [0, 1] by default (classification), -RMSE in m or δ1 for depth. MCD stores it as
    ``score`` in the history and as ``accuracy`` in ``final.json`` whatever the task.
    """

    def __init__(self, supernet, holdout_loader, calib_loader, calib_batches: int = 10,
                 evaluate_fn: Callable | None = None, metrics_fn: Callable | None = None,
                 channels_last: bool = True, proportion: bool | None = None) -> None:
        self.supernet = supernet
        # Whether the score is a share of held-out images (top-1: the default evaluate_fn), so that
        # its standard error is binomial; None: only when the default top-1 is used.
        self.proportion = evaluate_fn is None if proportion is None else proportion
        # NHWC for the sliced candidate: same scores, ~1.8x faster depthwise convs on CPU
        # (benchmarks/bench_search.py measures both layouts side by side).
        self.channels_last = channels_last
        self.holdout_loader = holdout_loader
        self.calib_loader = calib_loader
        self.calib_batches = calib_batches
        self._evaluate = evaluate_fn  # model, loader -> score (default: top-1 accuracy, `search.evaluate`)
        self._metrics = metrics_fn  # model, loader -> {metric: value} (reports; default {"score": score})

    @classmethod
    def for_task(cls, task: Task, supernet, holdout_loader, calib_loader, calib_batches: int = 10) -> SupernetScorer:
        """The scorer of `task`: score = ``task.score(task.evaluate(candidate, holdout))``
        (classification: top-1; depth: -RMSE or δ1); `metrics` gives every held-out metric of a
        task that records them (depth: RMSE, δ1, ...)."""
        def score(model, loader) -> float:
            return task.score(task.evaluate(model, loader))

        return cls(supernet, holdout_loader, calib_loader, calib_batches, evaluate_fn=score,
                   metrics_fn=task.evaluate if task.records_holdout_metrics else None,
                   proportion=task.score_is_proportion)

    def model(self, config: SubnetConfig):
        """The candidate as scored: sliced from the super-network, BN recalibrated, eval mode."""
        with torch.no_grad():
            model = self.supernet.subnet(config)
        if self.channels_last:
            model = model.to(memory_format=torch.channels_last)
        if self.calib_batches > 0:
            recalibrate_bn(model, self.calib_loader, self.calib_batches)
        return model.eval()

    def __call__(self, config: SubnetConfig) -> float:
        return float((self._evaluate or evaluate)(self.model(config), self.holdout_loader))

    def standard_error(self, score: float) -> float | None:
        """Standard error of `score` from the held-out split's size (sqrt(p(1-p)/n) for top-1;
        None for scores that are not a share of images, e.g. -RMSE). MCD records it with every
        candidate so that a gap between two candidates can be read against it."""
        if not self.proportion:
            return None
        p, n = min(max(score, 0.0), 1.0), len(self.holdout_loader.dataset)
        return (p * (1 - p) / max(n, 1)) ** 0.5

    def metrics(self, config: SubnetConfig) -> dict[str, float]:
        """Every held-out metric of the task for `config` (e.g. RMSE and δ1), for reports."""
        if self._metrics is None:
            return {"score": self(config)}
        return dict(self._metrics(self.model(config), self.holdout_loader))


def score_all(configs: Sequence[SubnetConfig], scorer: Scorer) -> list[float]:
    """Scores of `configs` in order; rank r scores configs r, r + world, ... and all ranks gather."""
    rank, size = distributed.rank(), distributed.world_size()
    if size == 1:
        return [float(scorer(cfg)) for cfg in configs]
    mine = {i: float(scorer(configs[i])) for i in range(rank, len(configs), size)}
    scores: dict[int, float] = {}
    for part in distributed.all_gather_objects(mine):
        scores.update(part)
    return [scores[i] for i in range(len(configs))]
