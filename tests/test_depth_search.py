"""A tiny depth search end to end: OD super-network training, MCD scored by -RMSE, final network."""
import json

import torch

from search.data.loader import make_loader
from search.depth.task import DepthTask
from search.depth.train import DepthTrainConfig, finetune, train_supernet
from search.mcd.metrics import Constraint, MacsMetric
from search.mcd.scoring import SupernetScorer
from search.mcd.search import MCDConfig, run_mcd
from search.spaces import get_space
from search.supernet import DepthSuperNet
from search.tasks import get_task

torch.set_num_threads(1)


def test_tiny_depth_search_end_to_end(tmp_path):
    torch.manual_seed(0)
    space = get_space("fastdepth-tiny")
    task = get_task("depth")
    train = task.dataset("builtin-depth", "train", space.spec.input_hw, size=48)
    holdout = task.dataset("builtin-depth", "holdout", space.spec.input_hw, size=8)
    loader = make_loader(train, 8, shuffle=True, seed=0)
    supernet = DepthSuperNet(space)
    losses = train_supernet(supernet, loader, DepthTrainConfig(steps=24, warmup_steps=4, log_every=1000))
    assert sum(losses[-6:]) / 6 < sum(losses[:6]) / 6  # it learns

    scorer = SupernetScorer.for_task(task, supernet, make_loader(holdout, 8), make_loader(train, 8, seed=1),
                                      calib_batches=2)
    start_score = scorer(space.max_config())
    assert start_score < 0  # -RMSE in metres
    limit = 0.7 * space.macs(space.max_config())
    result = run_mcd(space, [Constraint(MacsMetric(space), limit)], scorer, tmp_path / "search",
                     MCDConfig(candidates=3, layers=2, seed=0), log=lambda line: None)
    assert result.done and result.values["macs"] <= limit * (1 + 1e-9)
    final = json.loads((tmp_path / "search" / "final.json").read_text())
    assert final["config"]["widths"] == dict(result.config.widths)

    # the searched network trains standalone from super-network weights (fine-tune)
    model = supernet.subnet(result.config)
    finetune(model, loader, DepthTrainConfig(steps=3, warmup_steps=1, log_every=1000))
    metrics = task.evaluate(model, make_loader(holdout, 8))
    assert set(metrics) >= {"rmse", "rel", "delta1", "delta2", "delta3"} and metrics["images"] == 8
    assert isinstance(space.build_subnet(result.config), torch.nn.Module)


def test_score_is_higher_is_better():
    m = {"rmse": 0.6, "delta1": 0.77}
    assert DepthTask().score(m) == -0.6 and DepthTask(score_metric="delta1").score(m) == 0.77
