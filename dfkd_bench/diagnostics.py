"""What a run leaves for the report's synthetic-data figures (the SSD-KD paper's Fig. 2):
the teacher's predicted class and confidence for every sample the student trained on at
the end (a pool method's final pool), and a small fixed sample of those images.

``diagnostics.npz`` holds the arrays (``np.load(path, allow_pickle=False)``): ``classes``
(int64), ``confidence`` (float32, the teacher's top softmax probability), ``sample_images``
(uint8 N x C x H x W, back in pixel space), ``sample_classes`` (int64) and ``class_names``
(str). ``diagnostics.json`` is its readable summary: class counts, the normalised entropy
of the class distribution (1 = balanced) and confidence quantiles.

Segmentation (dense logits): ``class_histograms`` (float32 N x C) holds each image's share
of pixels in each teacher class; ``classes`` is each image's most frequent pixel class and
``confidence`` its mean pixel confidence, so the per-image figures read the same; the
summary's ``pixel_class_share`` and its entropy are over every pixel of the pool. The harness writes
both when a run completes; methods do nothing for it.
"""
from __future__ import annotations

import io
import math
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import nn

from .data import Normalizer
from .inversion import per_image
from .tasks import class_histograms
from .store import atomic_write_bytes, atomic_write_json

DIAGNOSTICS = "diagnostics.npz"
DIAGNOSTICS_SUMMARY = "diagnostics.json"
SAMPLE_SIZE = 64  # images kept for the report's grid
QUANTILES = (0.1, 0.25, 0.5, 0.75, 0.9)


@torch.no_grad()
def teacher_view(teacher: nn.Module, images: torch.Tensor, batch_size: int = 512
                 ) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor | None]:
    """The teacher's predicted class and confidence for normalised ``images``, and for a
    dense teacher each image's class histogram (None for a classifier); see the module
    docstring."""
    classes, confidence, histograms = [], [], []
    for i in range(0, len(images), batch_size):
        probs = teacher(images[i:i + batch_size]).float().softmax(dim=1)
        top = probs.max(dim=1)
        if probs.dim() == 4:
            hist = class_histograms(top.indices, probs.shape[1])
            histograms.append(hist.cpu())
            classes.append(hist.argmax(1).cpu())
            confidence.append(per_image(top.values).cpu())
            continue
        classes.append(top.indices.cpu())
        confidence.append(top.values.cpu())
    return torch.cat(classes), torch.cat(confidence), torch.cat(histograms) if histograms else None


def sample_indices(n: int, k: int = SAMPLE_SIZE) -> torch.Tensor:
    """``k`` evenly spaced indices of ``n`` (all of them if fewer): the same images for
    every reader, whatever the random state at the end of the run."""
    return torch.linspace(0, n - 1, min(n, k)).round().long() if n else torch.zeros(0, dtype=torch.long)


def to_pixels(images: torch.Tensor, normalizer: Normalizer) -> torch.Tensor:
    """Normalised images back to uint8 pixels."""
    x01 = images.float() * normalizer.std.to(images.device) + normalizer.mean.to(images.device)
    return (x01.clamp(0, 1) * 255).round().to(torch.uint8).cpu()


def pool_diagnostics(teacher: nn.Module, images: torch.Tensor, normalizer: Normalizer,
                     class_names: tuple[str, ...] = ()) -> dict[str, np.ndarray]:
    classes, confidence, histograms = teacher_view(teacher, images)
    idx = sample_indices(len(images))
    dense = {} if histograms is None else {"class_histograms": histograms.numpy().astype(np.float32)}
    return {**dense, "classes": classes.numpy().astype(np.int64), "confidence": confidence.numpy().astype(np.float32),
            "sample_images": to_pixels(images[idx.to(images.device)], normalizer).numpy(),
            "sample_classes": classes[idx].numpy().astype(np.int64),
            "class_names": np.array(list(class_names), dtype=str)}


def summarize(arrays: dict[str, np.ndarray], num_classes: int) -> dict[str, Any]:
    classes, confidence = arrays["classes"], arrays["confidence"]
    counts = np.bincount(classes, minlength=num_classes)
    dense = {}
    if "class_histograms" in arrays:  # segmentation: the entropy of the pixels' classes
        pixels = arrays["class_histograms"].astype(np.float64).sum(0)
        dense = {"pixel_class_share": [round(float(v), 4) for v in pixels / max(pixels.sum(), 1e-12)]}
        counts_for_entropy = pixels
    else:
        counts_for_entropy = counts
    share = counts_for_entropy[counts_for_entropy > 0] / max(1e-12, counts_for_entropy.sum())
    entropy = float(-(share * np.log(share)).sum() / math.log(num_classes)) if num_classes > 1 and len(share) else 0.0
    return {"samples": int(len(classes)), "class_counts": counts.tolist(), **dense,
            "class_names": arrays["class_names"].tolist(), "normalised_entropy": round(entropy, 4),
            "confidence_mean": round(float(confidence.mean()), 4) if len(confidence) else None,
            "confidence_quantiles": {str(q): round(float(np.quantile(confidence, q)), 4) for q in QUANTILES}
            if len(confidence) else {}}


def modulating_mean(arrays: dict[str, np.ndarray], gamma: float) -> float:
    """The mean over a pool of SSD-KD's Eq. 3 with both terms on, ``(1 - the pool's share
    of the image's teacher class) * (1 - its confidence)^gamma``, read from its diagnostics
    arrays (per image: for segmentation, an image's class and confidence as ``classes`` and
    ``confidence`` hold them)."""
    classes, confidence = arrays["classes"], arrays["confidence"].astype(np.float64)
    share = np.bincount(classes)[classes] / len(classes)
    return float(((1 - share) * (1 - confidence) ** gamma).mean())


def write(run_path: Path, arrays: dict[str, np.ndarray], num_classes: int) -> None:
    buffer = io.BytesIO()
    np.savez_compressed(buffer, **arrays)
    atomic_write_bytes(run_path / DIAGNOSTICS, buffer.getvalue())
    atomic_write_json(run_path / DIAGNOSTICS_SUMMARY, summarize(arrays, num_classes))


def read(run_path: Path) -> dict[str, np.ndarray] | None:
    """The arrays of a run's diagnostics, or None if it has none."""
    path = Path(run_path) / DIAGNOSTICS
    if not path.exists():
        return None
    with np.load(path, allow_pickle=False) as data:
        return {k: data[k] for k in data.files}
