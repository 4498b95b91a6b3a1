"""Datasets by spec: ``builtin``, an ImageFolder directory, or a CIFAR-10 python directory.

Every dataset yields ``(image, label)`` with image a float32 CHW tensor at `image_size`,
normalised per channel (mean 0.5, std 0.25: the sets differ, and BN after the stem absorbs
the rest). Training augmentation (pad-and-crop, flip) is applied per batch in the training
loop with its own seeded generator (`augment_batch`), so datasets are deterministic and
resume/DDP runs see the same pixels.

Splits: ``train``, ``val`` and ``holdout``. ``holdout`` is carved out of the training set
(MCD scores candidates on it, so the search never sees the val images): a fixed
permutation (seed 0, independent of the training seed) puts its last `holdout` indices in
``holdout`` and the rest in ``train``. Default size: 10% of the training set, at most
10,000 images (NetAdapt's ImageNet holdout) — 1,000 images for ``builtin``.
"""
from __future__ import annotations

import io
import pickle
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
from PIL import Image, UnidentifiedImageError
from torch.utils.data import Dataset

from search.errors import SearchError

from . import builtin

SPLITS = ("train", "val", "holdout")
MEAN, STD = 0.5, 0.25
IMAGE_EXTENSIONS = (".png", ".jpg", ".jpeg", ".bmp", ".webp")
HOLDOUT_SEED = 0  # fixed so every run (and every MCD search) holds out the same images
CIFAR_CLASSES = 10  # labels of a CIFAR-10 python batch are checked against it


def default_holdout(train_size: int) -> int:
    """10% of the training images, at most 10,000 (NetAdapt's ImageNet holdout size)."""
    return min(10_000, train_size // 10)


@dataclass(frozen=True)
class DatasetInfo:
    """What a loaded dataset is, for logs and checkpoints."""

    spec: str
    kind: str  # builtin, imagefolder, cifar10
    split: str
    size: int
    num_classes: int
    classes: tuple[str, ...]


class ArrayDataset(Dataset):
    """uint8 NHWC images + int64 labels in memory (builtin, CIFAR-10)."""

    def __init__(self, images: np.ndarray, labels: np.ndarray, info: DatasetInfo):
        self.images = torch.from_numpy(np.ascontiguousarray(images))
        self.labels = torch.from_numpy(np.asarray(labels, np.int64))
        self.info = info

    def __len__(self) -> int:
        return len(self.labels)

    def __getitem__(self, index: int):
        return to_tensor(self.images[index]), self.labels[index]


class ImageFolderDataset(Dataset):
    """``<root>/<class>/*.png|jpg``: resized (shorter side) and centre-cropped to `image_size`."""

    def __init__(self, files: list[tuple[Path, int]], image_size: int, info: DatasetInfo):
        self.files = files
        self.image_size = image_size
        self.info = info
        self.labels = torch.tensor([label for _, label in files], dtype=torch.int64)

    def __len__(self) -> int:
        return len(self.files)

    def __getitem__(self, index: int):
        path, label = self.files[index]
        try:
            return self._load(path), torch.tensor(label)
        except (OSError, UnidentifiedImageError, ValueError, SyntaxError) as exc:  # PIL's ways to say "corrupt"
            why = " ".join(str(exc).split())[:160] or type(exc).__name__
            raise SearchError(f"image {path}: unreadable ({why}); remove or replace it") from None

    def _load(self, path: Path) -> torch.Tensor:
        with Image.open(path) as im:
            im = im.convert("RGB")
            w, h = im.size
            scale = self.image_size / min(w, h)
            im = im.resize((max(self.image_size, round(w * scale)), max(self.image_size, round(h * scale))),
                           Image.BILINEAR)
            w, h = im.size
            left, top = (w - self.image_size) // 2, (h - self.image_size) // 2
            im = im.crop((left, top, left + self.image_size, top + self.image_size))
            array = np.asarray(im, np.uint8)
        return to_tensor(torch.from_numpy(array.copy()))


class Subset(Dataset):
    """Rows `indices` of `base`, with its own info (holdout / train-minus-holdout)."""

    def __init__(self, base: Dataset, indices: np.ndarray, info: DatasetInfo):
        self.base, self.indices, self.info = base, indices, info
        self.labels = base.labels[torch.from_numpy(indices)]

    def __len__(self) -> int:
        return len(self.indices)

    def __getitem__(self, index: int):
        return self.base[int(self.indices[index])]


def to_tensor(image_hwc_uint8: torch.Tensor) -> torch.Tensor:
    """uint8 HWC -> normalised float32 CHW."""
    return (image_hwc_uint8.permute(2, 0, 1).float() / 255.0 - MEAN) / STD


def augment_batch(images: torch.Tensor, generator: torch.Generator, pad: int = 4) -> torch.Tensor:
    """Random translation by up to `pad` px (zero = mean fill) and horizontal flip, per image.

    Batch-level and driven by `generator` (CPU), so training is reproducible whatever the
    number of loader workers. Flip is label-safe for every built-in class.
    """
    n, _, h, w = images.shape
    padded = torch.nn.functional.pad(images, (pad, pad, pad, pad))
    dx = torch.randint(0, 2 * pad + 1, (n,), generator=generator).tolist()
    dy = torch.randint(0, 2 * pad + 1, (n,), generator=generator).tolist()
    flip = (torch.rand(n, generator=generator) < 0.5).tolist()
    out = torch.stack([padded[i, :, dy[i]:dy[i] + h, dx[i]:dx[i] + w] for i in range(n)])
    flipped = torch.tensor(flip, device=images.device)
    return torch.where(flipped[:, None, None, None], out.flip(3), out)


# ----------------------------------------------------------------------------- loading
def get_dataset(spec: str, split: str, image_size: int = 32, holdout: int | None = None,
                seed: int = 0) -> Dataset:
    """A dataset by spec: ``builtin``, an ImageFolder root, or a CIFAR-10 python directory.

    `holdout` is the number of training images set aside as the ``holdout`` split (None:
    `default_holdout`); ``train`` excludes them. `seed` only changes the built-in images.
    Raises SearchError (one line, naming the path and what was expected) on bad input.
    """
    if split not in SPLITS:
        raise SearchError(f"unknown split {split!r}; expected one of {', '.join(SPLITS)}")
    if spec == "builtin":
        base = _builtin(split, image_size, seed)
    else:
        path = Path(spec).expanduser()
        if not path.exists():
            raise SearchError(f"data path {path} does not exist; expected 'builtin', an ImageFolder directory "
                              f"(train/<class>/*.png|jpg, val/...) or a CIFAR-10 python directory "
                              f"(data_batch_1..5, test_batch)")
        if not path.is_dir():
            raise SearchError(f"data path {path} is a file; expected a directory (ImageFolder or CIFAR-10 python)")
        if (path / "data_batch_1").exists() or (path / "test_batch").exists():
            base = _cifar(path, split, image_size)
        elif (path / "train").is_dir():
            base = _image_folder(path, split, image_size)
        else:
            raise SearchError(f"data path {path}: neither an ImageFolder root (no train/ directory) nor a CIFAR-10 "
                              f"python directory (no data_batch_1 / test_batch)")
    if split == "val":
        return base
    n_hold = default_holdout(len(base)) if holdout is None else int(holdout)
    if not 0 <= n_hold < len(base):
        raise SearchError(f"holdout size {n_hold} must be in [0, {len(base)}) for {spec}")
    order = np.random.default_rng(HOLDOUT_SEED).permutation(len(base))
    indices = np.sort(order[len(base) - n_hold:] if split == "holdout" else order[:len(base) - n_hold])
    info = base.info
    return Subset(base, indices, DatasetInfo(info.spec, info.kind, split, len(indices), info.num_classes,
                                             info.classes))


def _builtin(split: str, image_size: int, seed: int) -> ArrayDataset:
    train = split != "val"
    n = builtin.TRAIN_SIZE if train else builtin.VAL_SIZE
    images, labels = _builtin_cached(n, seed * 2 + (0 if train else 1), image_size)
    return ArrayDataset(images, labels, DatasetInfo("builtin", "builtin", "train" if train else "val", n,
                                                    len(builtin.CLASSES), builtin.CLASSES))


_BUILTIN_CACHE: dict[tuple[int, int, int], tuple[np.ndarray, np.ndarray]] = {}


def _builtin_cached(n: int, seed: int, size: int):
    """Generation takes a few seconds; train, holdout and the BN loader share one copy per process."""
    key = (n, seed, size)
    if key not in _BUILTIN_CACHE:
        _BUILTIN_CACHE[key] = builtin.generate(n, seed, size)
    return _BUILTIN_CACHE[key]


def _image_folder(root: Path, split: str, image_size: int) -> ImageFolderDataset:
    folder = root / ("val" if split == "val" else "train")
    if not folder.is_dir():
        raise SearchError(f"data path {root}: missing {folder.name}/ directory (ImageFolder layout: "
                          f"train/<class>/*.png|jpg and val/<class>/...)")
    classes = sorted(d.name for d in folder.iterdir() if d.is_dir())
    if split == "val":
        train_classes = sorted(d.name for d in (root / "train").iterdir() if d.is_dir())
        if classes != train_classes:
            raise SearchError(f"data path {root}: val/ classes differ from train/ classes")
    files = [(f, label) for label, name in enumerate(classes) for f in sorted((folder / name).iterdir())
             if f.suffix.lower() in IMAGE_EXTENSIONS]
    if not files:
        raise SearchError(f"data path {folder}: no images found; expected <class>/*.png|jpg sub-directories")
    info = DatasetInfo(str(root), "imagefolder", "val" if split == "val" else "train", len(files), len(classes),
                       tuple(classes))
    return ImageFolderDataset(files, image_size, info)


class _CifarUnpickler(pickle.Unpickler):
    """CIFAR-10's python format *is* pickle: allow only the builtins and numpy array
    reconstruction it needs, never arbitrary classes (a pickle can run any code)."""

    ALLOWED = {("numpy.core.multiarray", "_reconstruct"), ("numpy._core.multiarray", "_reconstruct"),
               ("numpy", "ndarray"), ("numpy", "dtype"), ("numpy.core.multiarray", "scalar"),
               ("numpy._core.multiarray", "scalar"), ("builtins", "bytes"), ("_codecs", "encode")}

    def find_class(self, module: str, name: str):
        if (module, name) in self.ALLOWED:
            return super().find_class(module, name)
        raise pickle.UnpicklingError(f"forbidden global {module}.{name}")


def _load_cifar_batch(path: Path) -> tuple[np.ndarray, np.ndarray]:
    try:
        with open(path, "rb") as f:
            batch = _CifarUnpickler(io.BytesIO(f.read()), encoding="bytes").load()
        data = batch.get(b"data", batch.get("data"))
        labels = batch.get(b"labels", batch.get("labels"))
        images = np.asarray(data, np.uint8).reshape(-1, 3, 32, 32).transpose(0, 2, 3, 1)
        labels = np.asarray(labels, np.int64)
    except Exception as exc:  # any malformed batch is the user's file, not our bug
        raise SearchError(f"CIFAR-10 batch {path}: not a CIFAR-10 python pickle ({type(exc).__name__}: "
                          f"{str(exc).splitlines()[0] if str(exc) else 'unreadable'})") from None
    if len(images) != len(labels):
        raise SearchError(f"CIFAR-10 batch {path}: {len(images)} images but {len(labels)} labels")
    return images, labels


def _cifar(root: Path, split: str, image_size: int) -> ArrayDataset:
    names = ["test_batch"] if split == "val" else [f"data_batch_{i}" for i in range(1, 6)]
    present = [root / n for n in names if (root / n).exists()]
    if not present:
        raise SearchError(f"data path {root}: missing {' / '.join(names)} (CIFAR-10 python format)")
    parts = [_load_cifar_batch(p) for p in present]
    images = np.concatenate([p[0] for p in parts])
    labels = np.concatenate([p[1] for p in parts])
    if image_size != 32:
        images = np.stack([np.asarray(Image.fromarray(im).resize((image_size, image_size), Image.BILINEAR))
                           for im in images])
    bad = np.flatnonzero((labels < 0) | (labels >= CIFAR_CLASSES))
    if len(bad):
        raise SearchError(f"data path {root}: label {int(labels[bad[0]])} of image {int(bad[0])} (of {len(labels)} in "
                          f"{' + '.join(p.name for p in present)}) is outside 0..{CIFAR_CLASSES - 1}; CIFAR-10 has "
                          f"{CIFAR_CLASSES} classes")
    classes = tuple(str(i) for i in range(CIFAR_CLASSES))
    info = DatasetInfo(str(root), "cifar10", "val" if split == "val" else "train", len(labels), len(classes),
                       classes)
    return ArrayDataset(images, labels, info)
