"""Scoring candidates: how good is a sub-network, with no training of its own.

A scorer is any callable ``config -> float`` where higher is better: top-1 accuracy for
classification, or e.g. ``-RMSE`` / δ1 for depth estimation. MCD does not care what it
measures. `SupernetScorer` is NetAdaptV2's: slice the candidate out of the trained
super-network (`supernet.subnet(config)`), recalibrate its BatchNorm statistics on a few
training batches (the super-network's running statistics belong to the mixture of widths OD
trained, not to this one network), and evaluate it on the held-out split of the training
data (never the validation split, which stays untouched for the final report).

`score_all` spreads the candidates of an iteration over `torch.distributed` ranks (when a
process group is initialised, e.g. under torchrun) and gathers the scores, so every rank
holds the same list and takes the same decision.
"""
from __future__ import annotations

from typing import Callable, Sequence

from search.spaces.space import SubnetConfig

Scorer = Callable[[SubnetConfig], float]


class SupernetScorer:
    """Accuracy of a candidate with super-network weights (sliced, BN recalibrated), in [0, 1]."""

    def __init__(self, supernet, holdout_loader, calib_loader, calib_batches: int = 10,
                 evaluate_fn: Callable | None = None, metrics_fn: Callable | None = None,
                 channels_last: bool = True) -> None:
        self.supernet = supernet
        # NHWC for the sliced candidate: same scores, ~1.8x faster depthwise convs on CPU
        # (benchmarks/bench_search.py measures both layouts side by side).
        self.channels_last = channels_last
        self.holdout_loader = holdout_loader
        self.calib_loader = calib_loader
        self.calib_batches = calib_batches
        self._evaluate = evaluate_fn  # model, loader -> score (defaults to top-1 accuracy)
        self._metrics = metrics_fn  # model, loader -> {metric: value} (reports; default {"score": score})

    def model(self, config: SubnetConfig):
        """The candidate as scored: sliced from the super-network, BN recalibrated, eval mode."""
        import torch

        from search.evaluate import recalibrate_bn
        with torch.no_grad():
            model = self.supernet.subnet(config)
        if self.channels_last:
            model = model.to(memory_format=torch.channels_last)
        if self.calib_batches > 0:
            recalibrate_bn(model, self.calib_loader, self.calib_batches)
        return model.eval()

    def __call__(self, config: SubnetConfig) -> float:
        from search.evaluate import evaluate
        return float((self._evaluate or evaluate)(self.model(config), self.holdout_loader))

    def metrics(self, config: SubnetConfig) -> dict[str, float]:
        """Every held-out metric of the task for `config` (e.g. RMSE and δ1), for reports."""
        if self._metrics is None:
            return {"score": self(config)}
        return dict(self._metrics(self.model(config), self.holdout_loader))


def world() -> tuple[int, int]:
    """(rank, world size) of the default process group; (0, 1) without one."""
    try:
        import torch.distributed as dist
    except ImportError:  # pragma: no cover - torch always ships it
        return 0, 1
    if dist.is_available() and dist.is_initialized():
        return dist.get_rank(), dist.get_world_size()
    return 0, 1


def broadcast(obj, src: int = 0):
    """`obj` of rank `src` on every rank (identity without a process group)."""
    rank, size = world()
    if size == 1:
        return obj
    import torch.distributed as dist
    box = [obj if rank == src else None]
    dist.broadcast_object_list(box, src=src)
    return box[0]


def score_all(configs: Sequence[SubnetConfig], scorer: Scorer) -> list[float]:
    """Scores of `configs` in order; rank r scores configs r, r + world, ... and all ranks gather."""
    rank, size = world()
    if size == 1:
        return [float(scorer(cfg)) for cfg in configs]
    import torch.distributed as dist
    mine = {i: float(scorer(configs[i])) for i in range(rank, len(configs), size)}
    gathered: list = [None] * size
    dist.all_gather_object(gathered, mine)
    scores: dict[int, float] = {}
    for part in gathered:
        scores.update(part)
    return [scores[i] for i in range(len(configs))]
