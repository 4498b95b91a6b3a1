"""Depth metrics and loss against hand-computed values."""
import math

import pytest
import torch

from search.depth.losses import masked_l1
from search.depth.metrics import DepthMeter, compute, per_image


def _img(values):
    return torch.tensor(values, dtype=torch.float32).view(1, 1, 1, -1)


def test_metrics_of_one_image_by_hand():
    pred = _img([1.0, 2.0, 3.0, 9.0])
    target = _img([1.0, 2.5, 2.0, 0.0])  # last pixel is a hole: ignored
    m = compute(pred, target)
    # diffs 0, -0.5, 1.0 -> mse = (0 + 0.25 + 1) / 3
    assert m["rmse"] == pytest.approx(math.sqrt(1.25 / 3))
    assert m["mae"] == pytest.approx(1.5 / 3)
    assert m["rel"] == pytest.approx((0 + 0.5 / 2.5 + 1.0 / 2.0) / 3)
    # ratios 1, 1.25 (not < 1.25), 1.5
    assert m["delta1"] == pytest.approx(1 / 3)
    assert m["delta2"] == pytest.approx(3 / 3)  # 1.5 < 1.5625
    assert m["delta3"] == pytest.approx(1.0)


def test_rmse_is_averaged_per_image_not_pooled():
    pred = torch.cat([_img([1.0, 1.0]), _img([3.0, 1.0])])
    target = torch.ones(2, 1, 1, 2)
    # per image: 0 and sqrt(4 / 2); pooled would be sqrt(4 / 4) = 1
    assert compute(pred, target)["rmse"] == pytest.approx(math.sqrt(2) / 2)
    meter = DepthMeter()
    meter.update(pred[:1], target[:1])
    meter.update(pred[1:], target[1:])
    assert meter.result()["rmse"] == pytest.approx(math.sqrt(2) / 2)


def test_negative_and_zero_predictions_never_count_as_accurate():
    m = compute(_img([-1.0, 0.0]), _img([1.0, 1.0]))
    assert m["delta3"] == 0.0
    assert m["rmse"] == pytest.approx(1.0)  # clamped at 0


def test_images_without_valid_pixels_are_skipped():
    values = per_image(torch.ones(2, 1, 2, 2), torch.cat([torch.zeros(1, 1, 2, 2), torch.ones(1, 1, 2, 2)]))
    assert values["rmse"].tolist() == [0.0]
    with pytest.raises(ValueError):
        compute(torch.ones(1, 1, 2, 2), torch.zeros(1, 1, 2, 2))


def test_masked_l1():
    pred, target = _img([1.0, 2.0, 5.0]), _img([2.0, 2.0, 0.0])
    assert float(masked_l1(pred, target)) == pytest.approx(0.5)
    zero = masked_l1(pred.requires_grad_(), torch.zeros_like(target))
    assert float(zero.detach()) == 0.0
    zero.backward()
