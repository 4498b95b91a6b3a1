"""`search.scratch.train_from_scratch`: one sub-network trained alone from a fresh, seeded init.

Real spaces, real built-in data sets, real optimizer steps (one or two tiny ones)."""
import json

import pytest
import torch

import search.depth.data as depth_data
from search.errors import SearchError
from search.scratch import ScratchResult, train_from_scratch
from search.spaces import get_space
from search.cli import main as nas_search_main
from search.spaces.space import SubnetConfig
from search.supernet import build_supernet
from test_mcd_fixtures import DEVICE, run_nas_search, untrained_supernet_and_lut

STEPS = {"epochs": 1, "steps_per_epoch": 2, "batch_size": 16, "evaluate": False}


@pytest.fixture(autouse=True)
def one_thread():
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)


def _weights(model: torch.nn.Module) -> dict[str, torch.Tensor]:
    """Conv / linear kernels (what the optimizer moves; BN buffers left out)."""
    return {k: v.detach().clone() for k, v in model.state_dict().items() if v.is_floating_point() and v.dim() > 1}


def _distance(a: dict, b: dict) -> float:
    assert a.keys() == b.keys()
    return sum(float((a[k] - b[k]).norm()) ** 2 for k in a) ** 0.5


def _fresh(space, config, seed: int) -> dict:
    torch.manual_seed(seed)
    return _weights(space.build_subnet(config))


def test_trains_a_fresh_seeded_network_not_super_network_weights(space):
    config = space.uniform_config(0.5)
    result = train_from_scratch(space, config, seed=3, **STEPS)
    assert isinstance(result, ScratchResult)
    assert not result.model.training
    trained = _weights(result.model)
    fresh = _fresh(space, config, 3)
    torch.manual_seed(3)
    with torch.no_grad():
        sliced = _weights(build_supernet(space).subnet(config))
    moved = _distance(trained, fresh)
    assert moved > 0  # the steps changed the weights
    # ... by a small step from the seeded fresh init: far closer to it than to another seed's init or to
    # the super-network's weights sliced at `config`
    assert moved < 0.05 * _distance(fresh, _fresh(space, config, 4))
    assert moved < 0.05 * _distance(fresh, sliced)
    assert result.time["wall_s"] > 0 and result.time["cpu_s"] > 0
    history = result.train_metrics["history"]
    assert [h["steps"] for h in history] == [2]
    assert result.train_metrics["train_images"] == 9000  # builtin's 10k train minus its 1k holdout, as `train`


def test_deterministic_for_a_seed(space):
    config = space.uniform_config(0.5)
    a, b = (train_from_scratch(space, config, seed=1, **STEPS) for _ in range(2))
    c = train_from_scratch(space, config, seed=2, **STEPS)
    wa, wb, wc = _weights(a.model), _weights(b.model), _weights(c.model)
    assert all(torch.equal(wa[k], wb[k]) for k in wa)
    assert a.train_metrics["train_loss"] == b.train_metrics["train_loss"]
    assert _distance(wa, wc) > 1.0


def test_uses_the_super_network_recipe(space):
    """SGD at SGD_LR_PER_128 x batch / 128, MobileNetV3 weight decay, one warm-up epoch: `train`'s recipe."""
    result = train_from_scratch(space, space.max_config(), seed=0, **{**STEPS, "batch_size": 32})
    m = result.train_metrics
    assert (m["optimizer"], m["lr"], m["weight_decay"], m["warmup_epochs"]) == ("sgd", 0.2 * 32 / 128, 4e-5, 1.0)
    assert m["history"][-1]["lr"] == pytest.approx(0.05)  # 2 warm-up steps of 2: at the peak


def test_depth_space_trains_and_reports_depth_metrics(monkeypatch):
    monkeypatch.setattr(depth_data, "BUILTIN_SIZES", {"train": 64, "holdout": 16, "val": 16})  # as test_depth_cli
    depth = get_space("fastdepth-tiny")
    config = depth.min_config()
    result = train_from_scratch(depth, config, seed=0, epochs=1, steps_per_epoch=2, batch_size=4,
                                val_batches=1)
    m = result.train_metrics
    assert (m["task"], m["data"], m["optimizer"], m["train_images"]) == ("depth", "builtin-depth", "adamw", 64)
    assert 0 < m["val_rmse"] < 20 and 0 <= m["val_delta1"] <= 1
    assert _distance(_weights(result.model), _fresh(depth, config, 0)) > 0
    again = train_from_scratch(depth, config, seed=0, epochs=1, steps_per_epoch=2, batch_size=4, evaluate=False)
    assert all(torch.equal(v, _weights(again.model)[k]) for k, v in _weights(result.model).items())


@pytest.mark.parametrize("field, value", [("epochs", 0), ("batch_size", -1), ("steps_per_epoch", 1.5)])
def test_bad_counts_are_one_line_errors(space, field, value):
    args = {"epochs": 1, "seed": 0, field: value}
    with pytest.raises(SearchError, match=f"train_from_scratch {field}: expected an integer >= 1"):
        train_from_scratch(space, space.max_config(), **args)


def test_config_of_another_space_is_refused(space):
    depth = get_space("fastdepth-tiny")
    with pytest.raises(SearchError, match="subnet config"):
        train_from_scratch(space, depth.max_config(), epochs=1, seed=0)


@pytest.fixture(scope="module")
def searched(tmp_path_factory):
    """A finished search (`nas-search search`) over an untrained super-network and the synthetic LUT."""
    made = untrained_supernet_and_lut(tmp_path_factory.mktemp("scratch-cli"))
    out = made["root"] / "search"
    code = nas_search_main_code(["search", "--supernet", made["supernet"], "--db", made["lut"], "--device", DEVICE,
                                 "--target-latency-ms", "5.0", "--out", out, "-J", "2", "--holdout-size", "64",
                                 "--calib-batches", "1", "--batch-size", "32", "--no-land"])
    assert code == 0
    return out


def nas_search_main_code(argv) -> int:
    try:
        nas_search_main([str(a) for a in argv])
    except SystemExit as exc:
        return exc.code
    return 0


@pytest.mark.slow  # a search first: ~70 s on a loaded 2-core host
def test_finetune_from_scratch_writes_scratch_files_and_keeps_the_fine_tune(searched, capsys):
    quick = ["--steps-per-epoch", "2", "--batch-size", "16", "--val-batches", "1"]
    code, _, err = run_nas_search(["finetune", "--search", searched, "--from-scratch", *quick], capsys)
    assert code == 1 and "records no training epochs; pass --epochs" in err and len(err.strip().splitlines()) == 1
    code, _, err = run_nas_search(["finetune", "--search", searched, "--from-scratch", "--lr", "0.1", *quick], capsys)
    assert code == 1 and "--lr: --from-scratch" in err

    code, stdout, err = run_nas_search(["finetune", "--search", searched, "--from-scratch", "--epochs", "1", *quick],
                                       capsys)
    assert code == 0, err
    record = json.loads((searched / "scratch.json").read_text())
    assert record["init"] == "scratch" and 0 <= record["val_acc"] <= 1 and record["time_s"] > 0
    assert record["recipe"]["lr"] == pytest.approx(0.2 * 16 / 128) and record["recipe"]["epochs"] == 1
    assert [e["steps"] for e in record["epochs"]] == [2]
    assert record["train_images"] == 10_000 - 200  # the super-network's --holdout 200 stays out, as in training
    state = torch.load(searched / "scratch.pt", weights_only=True)
    config = SubnetConfig.from_dict(json.loads((searched / "final.json").read_text())["config"])
    model = get_space("mbv3-tiny").build_subnet(config)
    model.load_state_dict(state)  # the searched architecture, key for key
    assert not (searched / "finetuned.pt").exists()  # the fine-tune's files are not touched
    assert "trained from scratch: val acc" in stdout

    code, _, err = run_nas_search(["report", "--search", searched], capsys)
    assert code == 0, err
    row = next(line for line in (searched / "report.md").read_text().splitlines()
               if line.startswith("| searched, trained alone |"))
    assert f"{record['val_acc']:.4f}" in row  # the trained-alone figure beside the fine-tuned one
