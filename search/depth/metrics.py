"""Depth metrics as the literature (and FastDepth's evaluation) computes them.

Per image, over the valid pixels ``target > 0`` (FastDepth's code uses ``target > 0 OR
output > 0``, which lets holes in the ground truth enter the error as if their depth were
0 m; we use ``target > 0`` only, the common convention, and say so in reports):

- RMSE  = sqrt(mean((p - g)^2))                       metres
- MAE   = mean(|p - g|)                                metres
- REL   = mean(|p - g| / g)                            (absolute relative error)
- δk    = share of pixels with max(p / g, g / p) < 1.25**k, k = 1, 2, 3

Predictions are clamped at 0 before the ratios (a negative prediction would otherwise give
a negative ratio below 1.25 and count as accurate); FastDepth's ReLU head never outputs
negative depth, so this only matters for other models.

Every metric is computed per image and then averaged over images: FastDepth evaluates at
batch size 1 and averages the per-image values, so RMSE here is the mean of per-image RMSEs
(not the RMSE of all pixels pooled), whatever batch size the loader uses. Images without a
valid pixel are skipped.
"""
from __future__ import annotations

from dataclasses import dataclass, field

import torch

METRICS = ("rmse", "mae", "rel", "delta1", "delta2", "delta3")


def per_image(pred: torch.Tensor, target: torch.Tensor) -> dict[str, torch.Tensor]:
    """{metric: (M,) tensor} for the M images of the batch that have valid pixels. Shapes (N, 1, H, W)."""
    if pred.shape != target.shape:
        raise ValueError(f"depth metrics: prediction {tuple(pred.shape)} and target {tuple(target.shape)} differ")
    n = pred.shape[0]
    p = pred.detach().reshape(n, -1).double().clamp(min=0)
    g = target.detach().reshape(n, -1).double()
    valid = g > 0
    count = valid.sum(1)
    keep = count > 0
    p, g, valid, count = p[keep], g[keep], valid[keep], count[keep].double()
    g_safe = torch.where(valid, g, torch.ones_like(g))
    diff = torch.where(valid, p - g, torch.zeros_like(g))
    out = {
        "rmse": (diff.pow(2).sum(1) / count).sqrt(),
        "mae": diff.abs().sum(1) / count,
        "rel": (diff.abs() / g_safe).sum(1) / count,
    }
    with torch.no_grad():
        ratio = torch.maximum(p / g_safe, g_safe / p.clamp(min=1e-12))  # p = 0 -> huge ratio, never accurate
    for k in (1, 2, 3):
        out[f"delta{k}"] = ((ratio < 1.25 ** k) & valid).sum(1).double() / count
    return out


@dataclass
class DepthMeter:
    """Accumulates per-image metrics; `result()` gives their means (and the image count)."""

    sums: dict[str, float] = field(default_factory=lambda: {k: 0.0 for k in METRICS})
    count: int = 0

    def update(self, pred: torch.Tensor, target: torch.Tensor) -> None:
        values = per_image(pred, target)
        for k in METRICS:
            self.sums[k] += float(values[k].sum())
        self.count += int(values["rmse"].numel())

    def result(self) -> dict[str, float]:
        if self.count == 0:
            raise ValueError("depth metrics: no image with valid depth was evaluated")
        out = {k: self.sums[k] / self.count for k in METRICS}
        out["images"] = self.count
        return out


def compute(pred: torch.Tensor, target: torch.Tensor) -> dict[str, float]:
    """Per-image-averaged metrics of one batch (convenience for tests and reports)."""
    meter = DepthMeter()
    meter.update(pred, target)
    return meter.result()
