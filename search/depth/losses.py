"""Training loss of the depth task: L1 on valid pixels, as FastDepth trains with.

Valid = target > 0 (NYU's Kinect leaves holes at 0 m; the built-in set marks its sensor
holes the same way). The mean is over valid pixels of the whole batch; a batch without a
valid pixel gives 0 (and no gradient) rather than NaN.
"""
from __future__ import annotations

import torch


def masked_l1(pred: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
    """Mean |pred - target| (metres) over pixels with target > 0. Shapes (N, 1, H, W)."""
    if pred.shape != target.shape:
        raise ValueError(f"masked_l1: prediction {tuple(pred.shape)} and target {tuple(target.shape)} differ")
    valid = target > 0
    if not bool(valid.any()):
        return pred.sum() * 0.0
    return (pred - target).abs()[valid].mean()
