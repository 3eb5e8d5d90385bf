"""Issue 34's first parts: the embedded segmentation set, mIoU and pixel accuracy, and the
per-pixel KD loss, each checked where the answer is known."""
from __future__ import annotations

import math

import pytest
import torch

from dfkd_bench.inversion import kd_loss
from dfkd_bench.segmentation import (IGNORE_INDEX, SHAPE_CLASSES, confusion_matrix, dense_kd_loss, make_shapes,
                                     miou, pixel_accuracy)


def test_shapes_are_deterministic_labelled_and_varied():
    images, masks = make_shapes(40, size=32, seed=3)
    again, masks_again = make_shapes(40, size=32, seed=3)
    assert torch.equal(images, again) and torch.equal(masks, masks_again)
    assert not torch.equal(images, make_shapes(40, size=32, seed=4)[0])
    assert images.shape == (40, 3, 32, 32) and images.dtype == torch.uint8 and masks.shape == (40, 32, 32)
    assert set(masks.unique().tolist()) == set(range(len(SHAPE_CLASSES)))  # every class occurs
    # a labelled shape's pixels take its class's hue: red dominates discs, green squares, blue triangles
    pixels = images.permute(0, 2, 3, 1).float()
    for cls, channel in ((1, 0), (2, 1), (3, 2)):
        mean = pixels[masks == cls].mean(0)
        assert int(mean.argmax()) == channel, (cls, mean)
    assert 0.3 < (masks == 0).float().mean() < 0.95  # background, but not only background


def test_confusion_matrix_miou_and_pixel_accuracy_on_a_known_case():
    target = torch.tensor([[0, 0, 1, 1], [2, 2, IGNORE_INDEX, 1]])
    pred = torch.tensor([[0, 1, 1, 1], [2, 0, 2, 1]])
    cm = confusion_matrix(pred, target, 3)
    assert cm.tolist() == [[1, 1, 0], [0, 3, 0], [1, 0, 1]]  # the ignored pixel counts nowhere
    # IoU: class 0 1/(2+2-1)=1/3, class 1 3/(3+4-3)=3/4, class 2 1/(2+1-1)=1/2
    assert miou(cm) == pytest.approx(100 * (1 / 3 + 3 / 4 + 1 / 2) / 3)
    assert pixel_accuracy(cm) == pytest.approx(100 * 5 / 7)
    # a class absent from target and prediction alike is left out of the mean
    assert miou(confusion_matrix(pred, target, 4)) == pytest.approx(miou(cm))
    assert math.isnan(miou(torch.zeros(3, 3, dtype=torch.long)))
    with pytest.raises(ValueError, match=r"target classes must be in \[0, 3\) or 255"):
        confusion_matrix(pred, torch.full_like(target, 7), 3)


def test_dense_kd_is_classification_kd_read_per_pixel():
    g = torch.Generator().manual_seed(0)
    s, t = torch.randn(6, 5, 4, 3, generator=g), torch.randn(6, 5, 4, 3, generator=g)
    # each pixel is a sample: the same as kd_loss over the N*H*W rows of logits
    rows = lambda x: x.permute(0, 2, 3, 1).reshape(-1, 5)  # noqa: E731
    assert dense_kd_loss(s, t, 4.0) == pytest.approx(float(kd_loss(rows(s), rows(t), 4.0)), rel=1e-6)
    per_image = dense_kd_loss(s, t, 4.0, reduction="none")
    assert per_image.shape == (6,) and per_image.mean() == pytest.approx(float(dense_kd_loss(s, t, 4.0)), rel=1e-6)
    assert float(dense_kd_loss(t, t, 4.0)) == pytest.approx(0.0, abs=1e-6)
