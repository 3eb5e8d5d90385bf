"""What a task (classification, segmentation) changes in the one harness: what a batch's
targets are, the supervised loss, the metric, label-moving augmentation and how a real
subset is drawn. The harness, the feeds, teacher training and the evaluator ask the
data set's task (``DataBundle.task``) and never branch on the task's name.

- ``Classification``: targets are class ids (int64, N); cross-entropy; top-1.
- ``Segmentation``: targets are label maps (uint8, N x H x W, ``IGNORE_INDEX`` for
  unlabelled pixels); per-pixel cross-entropy ignoring them; mIoU and pixel accuracy from
  a confusion matrix. Crop and flip move the label map with its image, and the pixels
  the padding brings in are unlabelled. A random one-hot target is a random class map
  (``random_targets``).

A metric is accumulated as a tensor of counts on the device (``batch_counts``, summed
over batches) and read once (``scores``), so no step waits for the host.
"""
from __future__ import annotations

from typing import ClassVar

import torch
import torch.nn.functional as F

from .data import random_crop_flip, random_crop_flip_with_labels
from .errors import UserError
from .inversion import random_targets
from .segmentation import IGNORE_INDEX, miou, pixel_accuracy


class Classification:
    """One class id per image."""

    name: ClassVar[str] = "classification"
    metric: ClassVar[str] = "top-1"  # how tables and figures name the main metric
    metric_key: ClassVar[str] = "top1"  # its key in ``scores``

    def loss(self, logits: torch.Tensor, labels: torch.Tensor, label_smoothing: float = 0.0) -> torch.Tensor:
        return F.cross_entropy(logits, labels, label_smoothing=label_smoothing)

    def crop_flip(self, images: torch.Tensor, labels: torch.Tensor, padding: int, flip: bool,
                  generator: torch.Generator | None = None) -> tuple[torch.Tensor, torch.Tensor]:
        """The images cropped and flipped; class ids do not move."""
        return random_crop_flip(images, padding, flip, generator), labels

    def batch_counts(self, logits: torch.Tensor, labels: torch.Tensor, num_classes: int) -> torch.Tensor:
        """(correct, seen), int64 on the logits' device."""
        correct = (logits.argmax(1) == labels).sum()
        return torch.stack([correct, torch.tensor(len(labels), device=correct.device)])

    def zero_counts(self, num_classes: int, device: torch.device | str) -> torch.Tensor:
        return torch.zeros(2, dtype=torch.int64, device=device)

    def scores(self, counts: torch.Tensor) -> dict[str, float]:
        correct, seen = (int(v) for v in counts.cpu())
        return {"top1": 100.0 * correct / max(1, seen)}

    def subset(self, labels: torch.Tensor, n: int, num_classes: int, seed: int) -> torch.Tensor:
        return balanced_subset(labels, n, num_classes, seed)

    def random_targets(self, n: int, num_classes: int, size: tuple[int, int], device: torch.device | str,
                       generator: torch.Generator | None = None) -> torch.Tensor:
        """A synthesis round's random one-hot targets (DeepInversion's, Fast's): one class
        per image, drawn on the CPU (the methods' random stream) and moved."""
        return random_targets(n, num_classes, device, generator)

    def teacher_classes(self, logits: torch.Tensor) -> torch.Tensor:
        """What a sample buffer records of each image's teacher class: its class id."""
        return logits.argmax(1)


TARGET_GRID = 2  # cells a side of a random class map (Segmentation.random_targets)


class Segmentation(Classification):
    """One class id per pixel; ``IGNORE_INDEX`` marks unlabelled pixels."""

    name: ClassVar[str] = "segmentation"
    metric: ClassVar[str] = "mIoU"
    metric_key: ClassVar[str] = "miou"

    def loss(self, logits: torch.Tensor, labels: torch.Tensor, label_smoothing: float = 0.0) -> torch.Tensor:
        return F.cross_entropy(logits, labels.long(), ignore_index=IGNORE_INDEX, label_smoothing=label_smoothing)

    def crop_flip(self, images, labels, padding, flip, generator=None):
        """The same crop and flip for an image and its label map; padded pixels are unlabelled."""
        return random_crop_flip_with_labels(images, labels, padding, flip, generator, fill=IGNORE_INDEX)

    def batch_counts(self, logits: torch.Tensor, labels: torch.Tensor, num_classes: int) -> torch.Tensor:
        """The batch's confusion matrix, flattened (``cm[t * C + p]``), ignored pixels in an
        extra last bin that is dropped: no boolean indexing, so no host round trip."""
        target, pred = labels.reshape(-1).long(), logits.argmax(1).reshape(-1)
        bins = torch.where(target == IGNORE_INDEX, num_classes ** 2, target * num_classes + pred)
        return torch.bincount(bins, minlength=num_classes ** 2 + 1)[:num_classes ** 2]

    def zero_counts(self, num_classes: int, device: torch.device | str) -> torch.Tensor:
        return torch.zeros(num_classes ** 2, dtype=torch.int64, device=device)

    def scores(self, counts: torch.Tensor) -> dict[str, float]:
        c = int(round(len(counts) ** 0.5))
        cm = counts.cpu().reshape(c, c)
        return {"miou": miou(cm), "pixel_accuracy": pixel_accuracy(cm)}

    def subset(self, labels: torch.Tensor, n: int, num_classes: int, seed: int) -> torch.Tensor:
        """``n`` images drawn at random with a fixed seed (an image holds several classes,
        so there is no class balance to keep)."""
        return torch.randperm(len(labels), generator=torch.Generator().manual_seed(seed))[:n].sort().values

    def random_targets(self, n, num_classes, size, device, generator=None):
        """Random class maps, the segmentation reading of a random one-hot target (the
        papers give none): each image a ``TARGET_GRID`` x ``TARGET_GRID`` layout of
        random classes, upsampled (nearest) to ``size``, so a target asks for regions of
        classes, as a label map has, not for per-pixel noise no image could match."""
        cells = torch.randint(num_classes, (n, 1, TARGET_GRID, TARGET_GRID), generator=generator)
        maps = F.interpolate(cells.float(), size=tuple(size), mode="nearest")[:, 0].long()
        return maps.to(device)

    def teacher_classes(self, logits):
        """Each image's class histogram: the share of its pixels the teacher assigns to
        each class (N x C, float32, rows summing to 1)."""
        return class_histograms(logits.argmax(1), logits.shape[1])


CLASSIFICATION, SEGMENTATION = Classification(), Segmentation()
TASKS = {t.name: t for t in (CLASSIFICATION, SEGMENTATION)}


def get_task(name: str) -> Classification:
    try:
        return TASKS[name]
    except KeyError:
        raise UserError(f"unknown task {name!r}; known tasks: {', '.join(TASKS)}") from None


def dataset_task(dataset: str) -> str:
    """The task of a registered data set (``name`` or ``kind:ARGUMENT``), without loading
    it: its loader's ``task`` attribute, classification where it sets none."""
    from .registry import DATASETS

    return getattr(DATASETS.get(dataset.split(":", 1)[0]), "task", CLASSIFICATION.name)


def class_histograms(classes: torch.Tensor, num_classes: int) -> torch.Tensor:
    """Per image (``classes``: N x H x W class ids), the share of its pixels in each class,
    N x C: one ``bincount`` over image-offset ids, no one-hot tensor of N x H x W x C."""
    n = classes.shape[0]
    offsets = torch.arange(n, device=classes.device)[:, None] * num_classes
    counts = torch.bincount((classes.reshape(n, -1) + offsets).flatten(), minlength=n * num_classes)
    return counts.reshape(n, num_classes).float() / max(1, classes[0].numel())


def balanced_subset(labels: torch.Tensor, n: int, num_classes: int, seed: int) -> torch.Tensor:
    """``n`` indices with class counts as equal as ``n`` allows (the first ``n % C``
    classes get one more), drawn at random with a fixed seed."""
    g = torch.Generator().manual_seed(seed)
    per_class = [n // num_classes + (1 if c < n % num_classes else 0) for c in range(num_classes)]
    picks = []
    for c, k in enumerate(per_class):
        pool = (labels == c).nonzero().flatten()
        if k > len(pool):
            raise UserError(f"--data-scale {n}: class {c} has only {len(pool)} training images "
                            f"(at most {len(pool) * num_classes} in all)")
        picks.append(pool[torch.randperm(len(pool), generator=g)[:k]])
    return torch.cat(picks).sort().values
