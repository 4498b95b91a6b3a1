"""Datasets: built-in generator, ImageFolder and CIFAR-10 fixtures, splits, one-line errors."""
import pickle

import numpy as np
import pytest
import torch
from PIL import Image

from search.cli import main
from search.data import augment_batch, get_dataset, make_loader
from search.data import builtin
from search.errors import SearchError


def test_builtin_generation_is_deterministic_and_balanced():
    a_img, a_lab = builtin.generate(200, seed=3)
    b_img, b_lab = builtin.generate(200, seed=3)
    assert np.array_equal(a_img, b_img) and np.array_equal(a_lab, b_lab)
    c_img, _ = builtin.generate(200, seed=4)
    assert not np.array_equal(a_img, c_img)
    assert a_img.shape == (200, 32, 32, 3) and a_img.dtype == np.uint8
    assert set(a_lab.tolist()) == set(range(10))


def _write_image_folder(root, classes=("cat", "dog"), per_class=5, size=(40, 30)):
    rng = np.random.default_rng(0)
    for split in ("train", "val"):
        for c in classes:
            d = root / split / c
            d.mkdir(parents=True)
            for i in range(per_class):
                Image.fromarray(rng.integers(0, 255, (*size[::-1], 3), dtype=np.uint8)).save(d / f"{i}.png")
    return root


def test_image_folder_loads_resized_with_holdout(tmp_path):
    root = _write_image_folder(tmp_path / "imgs")
    train = get_dataset(str(root), "train", image_size=16, holdout=2)
    hold = get_dataset(str(root), "holdout", image_size=16, holdout=2)
    val = get_dataset(str(root), "val", image_size=16)
    assert (len(train), len(hold), len(val)) == (8, 2, 10)
    x, y = train[0]
    assert x.shape == (3, 16, 16) and x.dtype == torch.float32 and int(y) in (0, 1)
    assert train.info.classes == ("cat", "dog") and train.info.kind == "imagefolder"
    assert set(train.indices.tolist()).isdisjoint(hold.indices.tolist())
    # deterministic carving
    assert get_dataset(str(root), "holdout", 16, holdout=2).indices.tolist() == hold.indices.tolist()


def _write_cifar(root, n=20):
    root.mkdir()
    rng = np.random.default_rng(1)
    for name in ["data_batch_1", "data_batch_2", "test_batch"]:
        batch = {b"data": rng.integers(0, 255, (n, 3072), dtype=np.uint8), b"labels": list(rng.integers(0, 10, n))}
        batch[b"labels"] = [int(v) for v in batch[b"labels"]]
        with open(root / name, "wb") as f:
            pickle.dump(batch, f)
    return root


def test_cifar_python_format(tmp_path):
    root = _write_cifar(tmp_path / "cifar")
    train = get_dataset(str(root), "train", 32, holdout=4)
    val = get_dataset(str(root), "val", 32)
    assert len(train) == 36 and len(val) == 20 and train.info.kind == "cifar10"
    x, _ = val[0]
    assert x.shape == (3, 32, 32)
    with open(root / "test_batch", "rb") as f:
        raw = pickle.load(f)
    expected = raw[b"data"][0].reshape(3, 32, 32)
    assert torch.allclose(x, (torch.from_numpy(expected).float() / 255 - 0.5) / 0.25)


class _Evil:
    def __reduce__(self):
        return (print, ("pwned",))


def test_cifar_unpickler_refuses_arbitrary_classes(tmp_path):
    root = tmp_path / "evil"
    root.mkdir()
    with open(root / "test_batch", "wb") as f:
        pickle.dump({b"data": _Evil(), b"labels": [0]}, f)
    with pytest.raises(SearchError, match="forbidden global"):
        get_dataset(str(root), "val", 32)


def test_bad_paths_are_one_line_errors(tmp_path):
    with pytest.raises(SearchError, match="does not exist"):
        get_dataset(str(tmp_path / "nope"), "train")
    (tmp_path / "empty").mkdir()
    with pytest.raises(SearchError, match="neither an ImageFolder"):
        get_dataset(str(tmp_path / "empty"), "train")
    f = tmp_path / "file.txt"
    f.write_text("x")
    with pytest.raises(SearchError, match="is a file"):
        get_dataset(str(f), "train")
    with pytest.raises(SearchError, match="unknown split"):
        get_dataset("builtin", "test")


def test_cli_bad_data_path_exits_1_with_one_line(tmp_path, capsys):
    with pytest.raises(SystemExit) as exc:
        main(["train", "--data", str(tmp_path / "missing"), "--out", str(tmp_path / "run")])
    assert exc.value.code == 1
    err = capsys.readouterr().err.strip()
    assert err.startswith("nas-search: error: data path") and "\n" not in err


def test_seeded_loader_order_and_ranks():
    data = torch.utils.data.TensorDataset(torch.arange(10).float(), torch.arange(10))
    a = [y.tolist() for _, y in make_loader(data, 4, shuffle=True, seed=1)]
    b = [y.tolist() for _, y in make_loader(data, 4, shuffle=True, seed=1)]
    assert a == b
    r0 = make_loader(data, 2, shuffle=True, seed=1, rank=0, world_size=2)
    r1 = make_loader(data, 2, shuffle=True, seed=1, rank=1, world_size=2)
    seen = sum(([int(v) for v in y] for _, y in r0), []) + sum(([int(v) for v in y] for _, y in r1), [])
    assert sorted(seen) == list(range(10))


def test_augment_batch_is_seeded():
    x = torch.randn(4, 3, 8, 8)
    a = augment_batch(x, torch.Generator().manual_seed(0))
    b = augment_batch(x, torch.Generator().manual_seed(0))
    assert torch.equal(a, b) and a.shape == x.shape
