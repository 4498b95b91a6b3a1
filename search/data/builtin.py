"""`builtin`: a procedurally generated 10-class image set (no download, deterministic).

Why generated: the demo must train on a 2-core CPU in minutes without fetching anything,
and it must still separate wide/deep sub-networks from narrow/shallow ones (CIFAR-10 is
too slow to train here; a trivial synthetic set makes every sub-network look the same).

Each 32x32 RGB image has:
- a background: random base colour, an oriented sinusoidal grating (random angle,
  period and phase) and Gaussian pixel noise;
- one main object (radius 7-11 px, random position and rotation) of one of five kinds
  (circle, square, triangle, cross, ring), filled with stripes of two random colours;
- one or two small distractor blobs with stripes at a random angle.

The class is ``kind * 2 + orientation``, where orientation is whether the main object's
stripes run horizontally or vertically (±20° jitter). A shape alone or a texture alone
gives at most 50%: the network has to bind the texture to the object (not to the
background grating or the distractors), which needs receptive field and capacity, so
width and depth both change accuracy (measured in `benchmarks/bench_supernet.py`).

Splits are drawn from disjoint seeds: `train` from ``seed``, `val` from ``seed + 1``.
"""
from __future__ import annotations

import numpy as np

CLASSES = tuple(f"{kind}-{orient}" for kind in ("circle", "square", "triangle", "cross", "ring")
                for orient in ("horizontal", "vertical"))
TRAIN_SIZE = 10_000  # large enough for the max subnet to pull clearly ahead, small enough for CPU epochs of seconds
VAL_SIZE = 2_000  # ±1% standard error on accuracy near 80%


def _shape_mask(kind: int, u: np.ndarray, v: np.ndarray, r: float) -> np.ndarray:
    if kind == 0:  # circle
        return u * u + v * v <= r * r
    if kind == 1:  # square
        return np.maximum(np.abs(u), np.abs(v)) <= 0.8 * r
    if kind == 2:  # triangle (apex at -r before rotation)
        s3 = np.sqrt(3.0)
        return (v <= 0.5 * r) & (s3 * u - v <= r) & (-s3 * u - v <= r)
    if kind == 3:  # cross
        a, b = np.abs(u), np.abs(v)
        return ((a <= r / 3) & (b <= r)) | ((b <= r / 3) & (a <= r))
    d2 = u * u + v * v  # ring
    return (d2 <= r * r) & (d2 >= (0.55 * r) ** 2)


def _stripes(x: np.ndarray, y: np.ndarray, angle: float, period: float, phase: float) -> np.ndarray:
    """1 where sin(.) > 0 for stripes whose *lines* run at `angle` (0 = horizontal lines)."""
    return np.sin(2 * np.pi * (-x * np.sin(angle) + y * np.cos(angle)) / period + phase) > 0


def generate(n: int, seed: int, size: int = 32) -> tuple[np.ndarray, np.ndarray]:
    """`n` images (uint8, N x size x size x 3) and labels (int64), a pure function of `seed`."""
    rng = np.random.default_rng(seed)
    y, x = np.mgrid[0:size, 0:size].astype(np.float32)
    images = np.empty((n, size, size, 3), np.uint8)
    labels = rng.integers(0, len(CLASSES), n)
    scale = size / 32.0
    for i in range(n):
        kind, orient = divmod(int(labels[i]), 2)
        base = rng.uniform(0.1, 0.9, 3)
        grating = _stripes(x, y, rng.uniform(0, np.pi), rng.uniform(3, 8) * scale, rng.uniform(0, 6.3))
        img = base + (grating[..., None] - 0.5) * rng.uniform(0.1, 0.35) * rng.choice([-1, 1], 3)
        # distractors first, so the main object is drawn over them
        for _ in range(rng.integers(1, 3)):
            cx, cy = rng.uniform(3, 29, 2) * scale
            rr = rng.uniform(2.5, 4.5) * scale
            blob = (x - cx) ** 2 + (y - cy) ** 2 <= rr * rr
            tex = _stripes(x, y, rng.uniform(0, np.pi), rng.uniform(2.5, 4.5) * scale, rng.uniform(0, 6.3))
            c1, c2 = rng.uniform(0, 1, 3), rng.uniform(0, 1, 3)
            img[blob] = np.where(tex[blob][:, None], c1, c2)
        r = rng.uniform(7, 11) * scale
        cx, cy = rng.uniform(r * 0.8, size - r * 0.8, 2)
        theta = rng.uniform(0, 2 * np.pi)
        u = (x - cx) * np.cos(theta) + (y - cy) * np.sin(theta)
        v = -(x - cx) * np.sin(theta) + (y - cy) * np.cos(theta)
        mask = _shape_mask(kind, u, v, r)
        angle = (0.0 if orient == 0 else np.pi / 2) + np.deg2rad(rng.uniform(-20, 20))
        tex = _stripes(x, y, angle, rng.uniform(2.5, 4.5) * scale, rng.uniform(0, 6.3))
        c1 = rng.uniform(0, 1, 3)
        c2 = np.clip(c1 + rng.choice([-1, 1], 3) * rng.uniform(0.3, 0.6, 3), 0, 1)
        img[mask] = np.where(tex[mask][:, None], c1, c2)
        img = img + rng.normal(0, rng.uniform(0.03, 0.12), img.shape)
        images[i] = np.clip(img * 255 + 0.5, 0, 255).astype(np.uint8)
    return images, labels.astype(np.int64)
