"""Semantic segmentation's own parts (issue 34): the embedded ``shapes`` data set, its
metric and the per-pixel reading of knowledge distillation.

- ``make_shapes``: a deterministic, procedurally generated segmentation set, the task's
  ``digits``: images of 1 to 3 filled shapes (disc, square, triangle, ring) over a smooth
  textured background, each shape's pixels labelled with its class (0 is the background),
  later shapes over earlier ones. A shape's colour is its class's hue jittered per shape,
  and texture and noise are added, so colour, form and context all carry the label.
  Generated in seconds, no download (1,000 64 x 64 images: 8 s on a Zen 4 core shared
  with two other runs).
- ``confusion_matrix`` / ``miou`` / ``pixel_accuracy``: the metric of the papers' Table 3
  (mean intersection over union over the classes present in prediction or target, pixels
  labelled ``IGNORE_INDEX`` left out, as NYUv2's unlabelled pixels are).
- ``dense_kd_loss``: KL(teacher || student) at temperature T over the class dimension of
  every pixel, averaged over pixels and images; per image with ``reduction='none'`` (the
  mean over its pixels, what priority replay weights). It is ``inversion.kd_loss`` read per
  pixel: on 1 x 1 maps the two are the same number.
"""
from __future__ import annotations

import math

import torch

from .inversion import kd_loss, per_image

IGNORE_INDEX = 255
SHAPE_CLASSES = ("background", "disc", "square", "triangle", "ring")
# A base hue (RGB in [0, 1]) per shape class; a shape's colour is this jittered by +-0.15.
_HUES = torch.tensor([[0.85, 0.25, 0.2], [0.2, 0.7, 0.3], [0.25, 0.35, 0.9], [0.9, 0.8, 0.2]])


def _shape_mask(kind: int, ys: torch.Tensor, xs: torch.Tensor, cy: float, cx: float, r: float) -> torch.Tensor:
    """Pixels of shape ``kind`` (1 disc, 2 square, 3 triangle, 4 ring) centred at (cy, cx), size r."""
    dy, dx = ys - cy, xs - cx
    if kind == 1:
        return dy ** 2 + dx ** 2 <= r ** 2
    if kind == 2:
        return (dy.abs() <= r) & (dx.abs() <= r)
    if kind == 3:  # apex up, base 2r wide at cy + r
        return (dy >= -r) & (dy <= r) & (dx.abs() <= (dy + r) / 2)
    d2 = dy ** 2 + dx ** 2
    return (d2 <= r ** 2) & (d2 >= (0.55 * r) ** 2)


def _background(g: torch.Generator, size: int) -> torch.Tensor:
    """A smooth random colour field (a 4 x 4 grid upsampled) with fine noise, in [0.15, 0.65]."""
    coarse = torch.rand(1, 3, 4, 4, generator=g)
    field = torch.nn.functional.interpolate(coarse, size=(size, size), mode="bilinear", align_corners=False)[0]
    return 0.15 + 0.4 * field + 0.05 * torch.rand(3, size, size, generator=g)


def make_shapes(n: int, size: int = 64, seed: int = 0) -> tuple[torch.Tensor, torch.Tensor]:
    """``n`` images (uint8, N x 3 x size x size) and their label maps (uint8, N x size x
    size, classes ``SHAPE_CLASSES``), the same for the same (n, size, seed)."""
    g = torch.Generator().manual_seed(seed)
    ys, xs = torch.meshgrid(torch.arange(size, dtype=torch.float32), torch.arange(size, dtype=torch.float32),
                            indexing="ij")
    images = torch.empty(n, 3, size, size, dtype=torch.uint8)
    masks = torch.zeros(n, size, size, dtype=torch.uint8)
    for i in range(n):
        image = _background(g, size)
        for _ in range(int(torch.randint(1, 4, (1,), generator=g))):
            kind = int(torch.randint(1, len(SHAPE_CLASSES), (1,), generator=g))
            r = float(size * (0.1 + 0.15 * torch.rand(1, generator=g)))
            cy, cx = (float(v) for v in r + (size - 2 * r) * torch.rand(2, generator=g))
            inside = _shape_mask(kind, ys, xs, cy, cx, r)
            colour = (_HUES[kind - 1] + 0.3 * (torch.rand(3, generator=g) - 0.5)).clamp(0, 1)
            shade = colour[:, None, None] * (0.85 + 0.15 * torch.rand(1, size, size, generator=g))
            image = torch.where(inside, shade, image)
            masks[i][inside] = kind
        images[i] = (image.clamp(0, 1) * 255).round().to(torch.uint8)
    return images, masks


def confusion_matrix(pred: torch.Tensor, target: torch.Tensor, num_classes: int,
                     ignore_index: int = IGNORE_INDEX) -> torch.Tensor:
    """``cm[t, p]``: pixels of target class t predicted as p (int64, C x C), pixels whose
    target is ``ignore_index`` left out. A target outside [0, C) that is not the ignore
    index is an error: it would silently drop or misplace pixels."""
    target, pred = target.reshape(-1).long(), pred.reshape(-1).long()
    keep = target != ignore_index
    target, pred = target[keep], pred[keep]
    if len(target) and (int(target.min()) < 0 or int(target.max()) >= num_classes):
        raise ValueError(f"target classes must be in [0, {num_classes}) or {ignore_index} (ignored); "
                         f"found {int(target.min())}..{int(target.max())}")
    return torch.bincount(target * num_classes + pred, minlength=num_classes ** 2).reshape(num_classes, num_classes)


def miou(cm: torch.Tensor) -> float:
    """Mean IoU in percent over the classes present in target or prediction (a class absent
    from both has no union and is left out, as the reference code's nanmean does)."""
    cm = cm.double()
    inter = cm.diag()
    union = cm.sum(0) + cm.sum(1) - inter
    present = union > 0
    return float(100 * (inter[present] / union[present]).mean()) if bool(present.any()) else math.nan


def pixel_accuracy(cm: torch.Tensor) -> float:
    """Correct pixels over labelled pixels, in percent."""
    total = cm.sum()
    return float(100 * cm.diag().sum() / total) if int(total) else math.nan


def dense_kd_loss(student_logits: torch.Tensor, teacher_logits: torch.Tensor, T: float,
                  reduction: str = "batchmean") -> torch.Tensor:
    """Per-pixel KD (N x C x H x W logits): the mean over pixels and images, or with
    ``reduction='none'`` one value per image (the mean over its pixels)."""
    per_pixel = kd_loss(student_logits, teacher_logits, T, reduction="none")  # N x H x W
    return per_pixel.mean() if reduction == "batchmean" else per_image(per_pixel)
