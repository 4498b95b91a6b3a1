"""Depth data sets: NYU Depth v2 in FastDepth's h5 layout, and the generated ``builtin-depth``.

Every data set yields ``(rgb, depth)``: rgb float32 (3, H, W) in [0, 1] (FastDepth feeds
[0, 1] without normalisation; BN after the stem absorbs the offset), depth float32
(1, H, W) in metres, 0 where the sensor has no value.

NYU Depth v2 (`NYUDepthH5`), the files of FastDepth's (sparse-to-dense's) preprocessing:
``<root>/{train,val}/<scene>/*.h5``, each with ``rgb`` (3 x 480 x 640 uint8) and ``depth``
(480 x 640 float, metres). `<root>` is the ``nyudepthv2`` folder (or its parent).
Splits, as FastDepth's loader:
- ``train``: train/ files whose names contain neither ``00001.h5`` nor ``00201.h5``;
- ``holdout``: train/ files whose names contain ``00001.h5`` or ``00201.h5`` (kept out of
  training; MCD scores candidates on it, never on val);
- ``val``: every val/ file (FastDepth's 654 test images).
Validation transform (FastDepth's `val_transform`): resize by 250/480 (480x640 -> 250x333),
centre-crop 228x304, resize to the output size (224x224). RGB is resized bilinearly
(antialiased), depth with nearest neighbour (so holes stay holes and edges stay sharp).
Training transform (FastDepth's `train_transform`, drawn per sample from a generator seeded
by (seed, epoch, index) so runs are reproducible): scale s ~ U(1, 1.5) with depth divided by
s (a closer camera sees a bigger image), rotation ~ U(-5, 5) degrees (nearest, no reshape),
horizontal flip with p = 0.5, and colour jitter (brightness, contrast, saturation, each a
factor ~ U(0.6, 1.4)); order: resize 250/480, rotate, resize s, centre-crop 228x304, flip,
resize to the output size.

``builtin-depth`` (`BuiltinDepth`): rendered rooms (`scenes.py`), generated once per
process and cached; splits are disjoint seed streams (train 2000, holdout 200, val 200
images by default) at the requested size (the space's input size).
"""
from __future__ import annotations

import math
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F
from torch.utils.data import Dataset

from search.errors import SearchError

from . import scenes

SPLITS = ("train", "holdout", "val")
NYU_HW = (480, 640)
HOLDOUT_MARKERS = ("00001.h5", "00201.h5")
BUILTIN = "builtin-depth"
BUILTIN_SIZES = {"train": 2000, "holdout": 200, "val": 200}  # images per split
_BUILTIN_SEEDS = {"train": 0, "holdout": 1, "val": 2}  # disjoint streams; the data seed shifts all


def split_of(filename: str, folder: str) -> str:
    """Split of one NYU file: ``val`` for val/, else ``holdout`` (FastDepth's marker names) or ``train``."""
    if folder == "val":
        return "val"
    return "holdout" if any(m in filename for m in HOLDOUT_MARKERS) else "train"


@dataclass(frozen=True)
class DepthDatasetInfo:
    spec: str
    kind: str  # nyu-h5, builtin-depth
    split: str
    size: int
    image_hw: tuple[int, int]


# ----------------------------------------------------------------------------- transforms
def _resize(t: torch.Tensor, size: tuple[int, int], nearest: bool) -> torch.Tensor:
    """(C, H, W) float -> (C, *size)."""
    if nearest:
        return F.interpolate(t[None], size=size, mode="nearest")[0]
    return F.interpolate(t[None], size=size, mode="bilinear", align_corners=False, antialias=True)[0]


def _centre_crop(t: torch.Tensor, size: tuple[int, int]) -> torch.Tensor:
    h, w = t.shape[-2:]
    top, left = int(round((h - size[0]) / 2)), int(round((w - size[1]) / 2))
    return t[..., top:top + size[0], left:left + size[1]]


def _scaled(hw: tuple[int, int], factor: float) -> tuple[int, int]:
    return int(hw[0] * factor), int(hw[1] * factor)


def val_transform(rgb: torch.Tensor, depth: torch.Tensor, out_hw: tuple[int, int]):
    """FastDepth's validation transform on (3, 480, 640) rgb in [0, 1] and (1, 480, 640) depth."""
    hw = _scaled(tuple(rgb.shape[-2:]), 250.0 / NYU_HW[0])
    rgb, depth = _resize(rgb, hw, False), _resize(depth, hw, True)
    rgb, depth = _centre_crop(rgb, (228, 304)), _centre_crop(depth, (228, 304))
    return _resize(rgb, out_hw, False).clamp(0, 1), _resize(depth, out_hw, True)


def _rotate(t: torch.Tensor, degrees: float) -> torch.Tensor:
    """Rotate (C, H, W) about its centre, nearest neighbour, same size, zeros outside."""
    a = math.radians(degrees)
    theta = torch.tensor([[math.cos(a), -math.sin(a), 0.0], [math.sin(a), math.cos(a), 0.0]], dtype=t.dtype)
    grid = F.affine_grid(theta[None], [1, *t.shape], align_corners=False)
    return F.grid_sample(t[None], grid, mode="nearest", padding_mode="zeros", align_corners=False)[0]


def _jitter(rgb: torch.Tensor, g: torch.Generator, amount: float = 0.4) -> torch.Tensor:
    def factor() -> float:
        return float(1 + amount * (2 * torch.rand((), generator=g) - 1))
    rgb = rgb * factor()  # brightness
    mean = rgb.mean()
    rgb = (rgb - mean) * factor() + mean  # contrast
    grey = (0.299 * rgb[0] + 0.587 * rgb[1] + 0.114 * rgb[2])[None]
    rgb = (rgb - grey) * factor() + grey  # saturation
    return rgb.clamp(0, 1)


def train_transform(rgb: torch.Tensor, depth: torch.Tensor, out_hw: tuple[int, int], g: torch.Generator):
    """FastDepth's training augmentation (module docstring), randomness from `g`."""
    s = float(1 + 0.5 * torch.rand((), generator=g))
    angle = float(10 * torch.rand((), generator=g) - 5)
    flip = bool(torch.rand((), generator=g) < 0.5)
    depth = depth / s
    hw = _scaled(tuple(rgb.shape[-2:]), 250.0 / NYU_HW[0])
    rgb, depth = _resize(rgb, hw, False), _resize(depth, hw, True)
    rgb, depth = _rotate(rgb, angle), _rotate(depth, angle)
    hw = _scaled(hw, s)
    rgb, depth = _resize(rgb, hw, False), _resize(depth, hw, True)
    rgb, depth = _centre_crop(rgb, (228, 304)), _centre_crop(depth, (228, 304))
    if flip:
        rgb, depth = rgb.flip(-1), depth.flip(-1)
    rgb, depth = _resize(rgb, out_hw, False), _resize(depth, out_hw, True)
    return _jitter(rgb.clamp(0, 1), g), depth


# ----------------------------------------------------------------------------- NYU h5
def load_h5(path: Path) -> tuple[np.ndarray, np.ndarray]:
    """(rgb uint8 (3, H, W), depth float32 (H, W)) of one FastDepth h5 file."""
    import h5py  # why: heavy optional runtime, only NYU's h5 files need it
    try:
        with h5py.File(path, "r") as f:
            rgb, depth = np.asarray(f["rgb"]), np.asarray(f["depth"], np.float32)
    except (OSError, KeyError) as exc:
        raise SearchError(f"{path}: not a FastDepth NYU h5 file with 'rgb' and 'depth' ({exc})") from None
    if rgb.ndim != 3 or rgb.shape[0] != 3 or depth.shape != rgb.shape[1:]:
        raise SearchError(f"{path}: expected rgb (3, H, W) and depth (H, W), got {rgb.shape} and {depth.shape}")
    return rgb, depth


class NYUDepthH5(Dataset):
    """NYU Depth v2, FastDepth's h5 files (module docstring: layout, splits, transforms)."""

    def __init__(self, root: str | Path, split: str, out_hw: tuple[int, int] = (224, 224), augment: bool | None = None,
                 seed: int = 0):
        if split not in SPLITS:
            raise SearchError(f"unknown split {split!r}; expected one of {', '.join(SPLITS)}")
        root = Path(root).expanduser()
        if (root / "nyudepthv2").is_dir():
            root = root / "nyudepthv2"
        folder = root / ("val" if split == "val" else "train")
        if not folder.is_dir():
            raise SearchError(f"NYU data path {root}: missing {folder.name}/ (expected nyudepthv2/{{train,val}}/"
                              f"<scene>/*.h5)")
        self.files = sorted(p for p in folder.glob("*/*.h5") if split_of(p.name, folder.name) == split)
        if not self.files:
            raise SearchError(f"NYU data path {root}: no {split} files in {folder} (expected <scene>/*.h5)")
        self.out_hw, self.seed, self.epoch = tuple(out_hw), seed, 0
        self.augment = (split == "train") if augment is None else augment
        self.info = DepthDatasetInfo(str(root), "nyu-h5", split, len(self.files), self.out_hw)

    def set_epoch(self, epoch: int) -> None:
        self.epoch = epoch

    def __len__(self) -> int:
        return len(self.files)

    def __getitem__(self, index: int):
        rgb, depth = load_h5(self.files[index])
        rgb_t = torch.from_numpy(rgb).float() / 255
        depth_t = torch.from_numpy(depth)[None]
        if self.augment:
            g = torch.Generator().manual_seed((self.seed * 1_000_003 + self.epoch) * 1_000_003 + index)
            return train_transform(rgb_t, depth_t, self.out_hw, g)
        return val_transform(rgb_t, depth_t, self.out_hw)


# ----------------------------------------------------------------------------- builtin
_CACHE: dict[tuple, tuple[np.ndarray, np.ndarray]] = {}


class BuiltinDepth(Dataset):
    """Rendered rooms (`scenes.py`); deterministic in (split, seed, size, n)."""

    def __init__(self, split: str, out_hw: tuple[int, int] = (64, 64), seed: int = 0, size: int | None = None):
        if split not in SPLITS:
            raise SearchError(f"unknown split {split!r}; expected one of {', '.join(SPLITS)}")
        n = BUILTIN_SIZES[split] if size is None else int(size)
        stream = seed * 10 + _BUILTIN_SEEDS[split]
        key = (stream, n, tuple(out_hw))
        if key not in _CACHE:
            _CACHE[key] = scenes.generate(n, stream, *out_hw)
        rgb, depth = _CACHE[key]
        self.rgb = torch.from_numpy(rgb)
        self.depth = torch.from_numpy(depth)
        self.info = DepthDatasetInfo(BUILTIN, BUILTIN, split, n, tuple(out_hw))

    def __len__(self) -> int:
        return len(self.rgb)

    def __getitem__(self, index: int):
        return self.rgb[index].float() / 255, self.depth[index].float()[None]


def resident_bytes(spec: str, split: str, image_hw: tuple[int, int] | int) -> int:
    """Bytes a split keeps in memory for its whole life: ``builtin-depth`` renders every image up
    front (rgb uint8 + depth float16: 5 bytes per pixel); a NYU folder reads one file per item (0)."""
    if spec != BUILTIN:
        return 0
    h, w = (image_hw, image_hw) if isinstance(image_hw, int) else image_hw
    return BUILTIN_SIZES[split] * h * w * (3 * np.dtype(np.uint8).itemsize + np.dtype(np.float16).itemsize)


def get_depth_dataset(spec: str, split: str, image_hw: tuple[int, int] | int = 224, seed: int = 0,
                      size: int | None = None) -> Dataset:
    """``builtin-depth`` or a NYU root by spec; SearchError (one line) on a bad path.

    `image_hw` is the network input size; `size` caps the number of images (builtin: how
    many to render; NYU: the first `size` files of the split, for quick runs).
    """
    hw = (image_hw, image_hw) if isinstance(image_hw, int) else tuple(image_hw)
    if spec == BUILTIN:
        return BuiltinDepth(split, hw, seed, size)
    path = Path(spec).expanduser()
    if not path.exists():
        raise SearchError(f"depth data path {path} does not exist; expected '{BUILTIN}' or a NYU Depth v2 folder "
                          f"in FastDepth's h5 layout (nyudepthv2/{{train,val}}/<scene>/*.h5)")
    dataset = NYUDepthH5(path, split, hw, seed=seed)
    if size is not None:
        dataset.files = dataset.files[:size]
    return dataset
