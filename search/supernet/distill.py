"""In-place distillation for grouped OD (slimmable networks / BigNAS / OFA).

With grouped OD and shared images (`share_images`), every group of the batch runs the same
images through a different sub-network, group 0 being the max network. The max network
learns from the labels; every other group learns from the max network's soft predictions
on the same images (soft cross-entropy, teacher detached, so its gradient reaches only the
student's path). Loss = mean over all images of their per-image loss, as without it.
"""
from __future__ import annotations

import torch
import torch.nn.functional as F


def share_images(x: torch.Tensor, y: torch.Tensor, groups: int) -> tuple[torch.Tensor, torch.Tensor]:
    """The first N / G images (and labels) repeated G times: group g sees the images of group 0."""
    k = x.shape[0] // groups
    return x[:k].repeat(groups, *([1] * (x.dim() - 1))), y[:k].repeat(groups)


def inplace_distillation_loss(logits: torch.Tensor, y: torch.Tensor, groups: int,
                              label_smoothing: float = 0.0) -> torch.Tensor:
    """CE(max group, labels) and soft CE(other groups, detached softmax of the max group)."""
    k = logits.shape[0] // groups
    teacher = logits[:k].detach().softmax(1).repeat(groups - 1, 1)
    soft = -(teacher * logits[k:].log_softmax(1)).sum(1)
    hard = F.cross_entropy(logits[:k], y[:k], label_smoothing=label_smoothing, reduction="none")
    return torch.cat([hard, soft]).mean()
