"""Training loop: resume == uninterrupted, checkpoints, CLI, and a 2-process torchrun (gloo) run."""
import json
import os
import pickle
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch

from search.checkpoint import load_supernet, save_supernet
from search.cli import main
from search.errors import SearchError
from search.spaces import get_space
from search.supernet import SuperNet
from search.train import TrainConfig, train

ROOT = Path(__file__).resolve().parents[1]


@pytest.fixture(scope="module")
def cifar(tmp_path_factory):
    """A 120 + 40 image CIFAR-10 python-format directory (fast: no generation)."""
    root = tmp_path_factory.mktemp("cifar")
    rng = np.random.default_rng(0)
    for name, n in (("data_batch_1", 120), ("test_batch", 40)):
        with open(root / name, "wb") as f:
            pickle.dump({b"data": rng.integers(0, 255, (n, 3072), dtype=np.uint8),
                         b"labels": [int(v) for v in rng.integers(0, 10, n)]}, f)
    return str(root)


def _cfg(data, **kw):
    base = dict(space="mbv3-tiny", data=data, epochs=2, batch_size=16, steps_per_epoch=3, holdout=8,
                bn_batches=1, progress=False)
    base.update(kw)
    return TrainConfig(**base)


def _strip(record):
    return {k: v for k, v in record.items() if k not in ("seconds", "images_per_s")}


def test_resume_equals_uninterrupted(cifar, tmp_path):
    full = train(_cfg(cifar), tmp_path / "full")
    train(_cfg(cifar), tmp_path / "cut", stop_after=1)
    resumed = train(_cfg(cifar), tmp_path / "cut", resume=True)
    _, a, meta_a = load_supernet(full.checkpoint)
    _, b, meta_b = load_supernet(resumed.checkpoint)
    for (name, x), (_, y) in zip(a.state_dict().items(), b.state_dict().items()):
        assert torch.allclose(x.float(), y.float(), atol=1e-6, rtol=0), name
    assert meta_a["epoch"] == meta_b["epoch"] == 1
    logs = [[_strip(json.loads(line)) for line in (tmp_path / d / "train_log.jsonl").read_text().splitlines()]
            for d in ("full", "cut")]
    assert len(logs[0]) == 2 and logs[0] == logs[1]


def test_checkpoint_roundtrip_and_space_mismatch(tmp_path):
    space = get_space("mbv3-tiny", granularity=16)
    net = SuperNet(space)
    path = save_supernet(tmp_path / "s.pt", net, {"epoch": 3, "note": "x"})
    assert not list(tmp_path.glob(".*tmp*"))  # atomic: no temporary left behind
    payload = torch.load(path, weights_only=True)
    assert payload["space"] == "mbv3-tiny" and payload["space_overrides"] == {"granularity": 16}
    loaded_space, loaded, meta = load_supernet(path, space=space)
    assert loaded_space.granularity == 16 and meta["epoch"] == 3
    for (n, x), (_, y) in zip(net.state_dict().items(), loaded.state_dict().items()):
        assert torch.equal(x, y), n
    with pytest.raises(SearchError, match="is for space mbv3-tiny"):
        load_supernet(path, space=get_space("mbv3-tiny"))
    with pytest.raises(SearchError, match="is for space"):
        load_supernet(path, space=get_space("mbv3-large"))
    (tmp_path / "bad.pt").write_bytes(b"not a checkpoint")
    with pytest.raises(SearchError, match="not a readable"):
        load_supernet(tmp_path / "bad.pt")
    with pytest.raises(SearchError, match="does not exist"):
        load_supernet(tmp_path / "missing.pt")


def test_cli_train_and_resume_of_other_space(cifar, tmp_path, capsys):
    out = tmp_path / "run"
    main(["train", "--data", cifar, "--epochs", "1", "--out", str(out), "--batch-size", "16",
          "--steps-per-epoch", "2", "--holdout", "8", "--no-progress"])
    assert (out / "supernet.pt").is_file()
    record = json.loads((out / "train_log.jsonl").read_text().splitlines()[0])
    assert {"train_loss", "train_acc_od", "val_acc_max", "val_acc_min", "images_per_s"} <= set(record)
    with pytest.raises(SystemExit) as exc:
        main(["train", "--space", "mbv3-tiny", "--granularity", "16", "--data", cifar, "--epochs", "2",
              "--out", str(out), "--resume", "--no-progress"])
    assert exc.value.code == 1
    assert "is for space mbv3-tiny" in capsys.readouterr().err


@pytest.mark.slow
def test_torchrun_two_process_gloo(cifar, tmp_path):
    out = tmp_path / "ddp"
    env = {**os.environ, "OMP_NUM_THREADS": "1", "CUDA_VISIBLE_DEVICES": ""}
    torchrun = Path(sys.executable).with_name("torchrun")
    cmd = [str(torchrun), "--standalone", "--nproc-per-node", "2", "-m", "search.cli", "train", "--data", cifar,
           "--epochs", "1", "--out", str(out), "--batch-size", "8", "--steps-per-epoch", "2", "--holdout", "8",
           "--no-progress", "--device", "cpu"]
    proc = subprocess.run(cmd, cwd=ROOT, env=env, capture_output=True, text=True, timeout=240)
    assert proc.returncode == 0, proc.stderr[-3000:]
    _, _, meta = load_supernet(out / "supernet.pt")
    assert meta["world_size"] == 2
    assert meta["metrics"]["train_acc_od"] >= 0


@pytest.mark.parametrize("distill", [False, True])
def test_grouped_od_training_runs_and_resumes(cifar, tmp_path, distill):
    """Grouped OD (BN per sub-network group) with and without in-place distillation, after one
    max-network warm-up epoch: trains, and a resumed run equals the uninterrupted one."""
    kw = dict(od_groups=4, distill=distill, epochs=2, od_warmup_epochs=1)  # the resume crosses the switch
    full = train(_cfg(cifar, **kw), tmp_path / "full")
    train(_cfg(cifar, **kw), tmp_path / "cut", stop_after=1)
    resumed = train(_cfg(cifar, **kw), tmp_path / "cut", resume=True)
    _, a, meta = load_supernet(full.checkpoint)
    _, b, _ = load_supernet(resumed.checkpoint)
    for (name, x), (_, y) in zip(a.state_dict().items(), b.state_dict().items()):
        assert torch.allclose(x.float(), y.float(), atol=1e-6, rtol=0), name
    assert meta["train_config"]["od_groups"] == 4 and meta["train_config"]["distill"] is distill
    assert np.isfinite(full.metrics["train_loss"])
