"""Depth data: NYU h5 loader (FastDepth layout, written here), holdout rule, builtin-depth."""
import h5py
import numpy as np
import pytest
import torch

from search.depth import scenes
from search.depth.data import NYUDepthH5, get_depth_dataset, split_of
from search.errors import SearchError


def _write(path, depth_value=None, seed=0):
    rng = np.random.default_rng(seed)
    path.parent.mkdir(parents=True, exist_ok=True)
    rgb = rng.integers(0, 256, (3, 480, 640), dtype=np.uint8)
    if depth_value is None:  # depth grows left to right: 1 m .. 5 m, a hole in the top-left corner
        depth = np.tile(np.linspace(1, 5, 640, dtype=np.float32), (480, 1))
        depth[:40, :40] = 0
    else:
        depth = np.full((480, 640), depth_value, np.float32)
    with h5py.File(path, "w") as f:
        f["rgb"], f["depth"] = rgb, depth


@pytest.fixture(scope="module")
def nyu(tmp_path_factory):
    root = tmp_path_factory.mktemp("data") / "nyudepthv2"
    _write(root / "train" / "kitchen_0001" / "00001.h5", 2.0)
    _write(root / "train" / "kitchen_0001" / "00002.h5")
    _write(root / "train" / "office_0003" / "00201.h5", 3.0)
    _write(root / "train" / "office_0003" / "00202.h5", seed=1)
    _write(root / "val" / "official" / "00001.h5")
    return root


def test_holdout_rule_is_fastdepths():
    assert split_of("00001.h5", "train") == "holdout" and split_of("00201.h5", "train") == "holdout"
    assert split_of("00002.h5", "train") == "train" and split_of("01201.h5", "train") == "train"
    assert split_of("00001.h5", "val") == "val"


def test_nyu_splits_and_shapes(nyu):
    train, hold, val = (NYUDepthH5(nyu, s) for s in ("train", "holdout", "val"))
    assert [p.name for p in train.files] == ["00002.h5", "00202.h5"]
    assert sorted(p.name for p in hold.files) == ["00001.h5", "00201.h5"]
    assert len(val) == 1
    rgb, depth = hold[0]
    assert rgb.shape == (3, 224, 224) and depth.shape == (1, 224, 224)
    assert rgb.dtype == torch.float32 and 0 <= float(rgb.min()) and float(rgb.max()) <= 1
    assert torch.all(depth == 2.0)  # nearest resize keeps values exactly
    # the parent folder works too
    assert len(get_depth_dataset(str(nyu.parent), "val")) == 1


def test_val_transform_crops_the_centre(nyu):
    _, depth = NYUDepthH5(nyu, "val")[0]
    # after resize 250/480 (333 wide) and centre crop 304 from column 14, depth spans ~1.17 .. 4.82 m
    assert float(depth[0, 100:, 0].min()) == pytest.approx(1 + 4 * (14.5 * 640 / 333) / 639, abs=0.05)
    assert float(depth[0, 100:, -1].max()) == pytest.approx(1 + 4 * ((14 + 304) * 640 / 333) / 639, abs=0.05)
    assert bool((depth[0, :2, :2] == 0).all())  # the hole survives (nearest neighbour)


def test_train_transform_is_seeded_and_scales_depth(nyu):
    a, b = NYUDepthH5(nyu, "train", seed=5), NYUDepthH5(nyu, "train", seed=5)
    ra, da = a[0]
    rb, db = b[0]
    assert torch.equal(ra, rb) and torch.equal(da, db)
    valid = da[da > 0]
    assert float(valid.max()) <= 5.0 and float(valid.min()) >= 1 / 1.5 - 1e-3
    a.set_epoch(1)
    assert not torch.equal(a[0][0], ra)


def test_bad_paths_are_one_line_errors(tmp_path):
    with pytest.raises(SearchError, match="does not exist"):
        get_depth_dataset(str(tmp_path / "nope"), "train")
    with pytest.raises(SearchError, match="missing train/"):
        get_depth_dataset(str(tmp_path), "train")
    bad = tmp_path / "bad" / "train" / "s" / "x.h5"
    bad.parent.mkdir(parents=True)
    bad.write_text("not hdf5")
    with pytest.raises(SearchError, match="not a FastDepth NYU h5"):
        get_depth_dataset(str(tmp_path / "bad"), "train")[0]


def test_builtin_depth_is_deterministic_and_in_range():
    a = get_depth_dataset("builtin-depth", "train", 32, size=6)
    b = get_depth_dataset("builtin-depth", "train", 32, size=6)
    assert torch.equal(a[3][0], b[3][0]) and torch.equal(a[3][1], b[3][1])
    assert np.array_equal(scenes.render(7, 0, 32, 32)[1], scenes.render(7, 0, 32, 32)[1])
    hold = get_depth_dataset("builtin-depth", "holdout", 32, size=6)
    assert not torch.equal(hold[0][1], a[0][1])  # disjoint streams
    for i in range(len(a)):
        rgb, depth = a[i]
        assert rgb.shape == (3, 32, 32) and depth.shape == (1, 32, 32)
        assert 0 <= float(rgb.min()) and float(rgb.max()) <= 1
        valid = depth[depth > 0]
        assert valid.numel() > 0.5 * depth.numel()
        assert 0.2 <= float(valid.min()) and float(valid.max()) <= scenes.MAX_DEPTH
