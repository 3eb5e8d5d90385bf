"""Data sets as uint8 tensors decoded once, normalisation, and augmentation on tensors.

Every data set is a ``DataBundle`` of uint8 NCHW tensors; batches are normalised and
augmented on whatever device holds them, so no per-image PIL work sits in the loop.
"""
from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import torch
import torch.nn.functional as F

from .registry import DATASETS


@dataclass
class DataBundle:
    name: str
    train_images: torch.Tensor  # uint8 N,C,H,W
    train_labels: torch.Tensor  # int64 N
    test_images: torch.Tensor
    test_labels: torch.Tensor
    num_classes: int
    mean: tuple[float, ...]
    std: tuple[float, ...]
    crop_padding: int = 4
    flip: bool = True
    class_names: tuple[str, ...] = ()

    @property
    def image_shape(self) -> tuple[int, int, int]:
        return tuple(self.train_images.shape[1:])

    def to(self, device: torch.device) -> "DataBundle":
        for attr in ("train_images", "train_labels", "test_images", "test_labels"):
            setattr(self, attr, getattr(self, attr).to(device))
        return self


class Normalizer:
    """Maps [0,1] images to the normalised space the models expect, and back."""

    def __init__(self, mean, std, device: torch.device | str = "cpu"):
        self.mean = torch.tensor(mean, dtype=torch.float32, device=device).view(1, -1, 1, 1)
        self.std = torch.tensor(std, dtype=torch.float32, device=device).view(1, -1, 1, 1)

    def __call__(self, x01: torch.Tensor) -> torch.Tensor:
        return (x01 - self.mean) / self.std

    def denormalize(self, x: torch.Tensor) -> torch.Tensor:
        return x * self.std + self.mean

    def from_uint8(self, x: torch.Tensor) -> torch.Tensor:
        return self(x.float() / 255.0)

    def clamp(self, x: torch.Tensor) -> torch.Tensor:
        """Clamp a normalised image to the range that [0,1] pixels map to."""
        lo, hi = (0 - self.mean) / self.std, (1 - self.mean) / self.std
        return torch.maximum(torch.minimum(x, hi), lo)


def random_crop_flip(x: torch.Tensor, padding: int, flip: bool, generator: torch.Generator | None = None) -> torch.Tensor:
    """Per-sample random crop after zero padding, and random horizontal flip, batched."""
    n, _, h, w = x.shape
    if padding:
        padded = F.pad(x, (padding,) * 4)
        oy = torch.randint(0, 2 * padding + 1, (n,), generator=generator).to(x.device)
        ox = torch.randint(0, 2 * padding + 1, (n,), generator=generator).to(x.device)
        rows = (oy[:, None] + torch.arange(h, device=x.device))[:, None, :, None]
        cols = (ox[:, None] + torch.arange(w, device=x.device))[:, None, None, :]
        batch = torch.arange(n, device=x.device)[:, None, None, None]
        chans = torch.arange(x.shape[1], device=x.device)[None, :, None, None]
        x = padded[batch, chans, rows, cols]
    if flip:
        mask = (torch.rand(n, generator=generator) < 0.5).to(x.device)
        x = torch.where(mask[:, None, None, None], x.flip(3), x)
    return x


def load_dataset(name: str, root: str | Path | None = None, download: bool = False) -> DataBundle:
    """``name`` is a registered data set, optionally ``kind:ARGUMENT`` (``imagefolder:PATH``)."""
    return DATASETS.get(name.split(":", 1)[0])(name=name, root=root, download=download)


@DATASETS.register("digits")
def load_digits(name: str = "digits", root=None, download: bool = False) -> DataBundle:
    """scikit-learn's bundled 8x8 handwritten digits (1,797 images, 10 classes),
    upsampled to 16x16, with a fixed stratified 80/20 train/test split (seed 0)."""
    from sklearn.datasets import load_digits as sk_digits
    from sklearn.model_selection import train_test_split

    bunch = sk_digits()
    images = torch.tensor(bunch.images, dtype=torch.float32).unsqueeze(1) / 16.0
    images = F.interpolate(images, size=(16, 16), mode="bilinear", align_corners=False)
    images = (images.clamp(0, 1) * 255).round().to(torch.uint8)
    labels = torch.tensor(bunch.target, dtype=torch.int64)
    idx = torch.arange(len(labels)).numpy()
    tr, te = train_test_split(idx, test_size=0.2, random_state=0, stratify=bunch.target)
    tr, te = torch.from_numpy(tr), torch.from_numpy(te)
    train = images[tr].float() / 255
    mean = (float(train.mean()),)
    std = (float(train.std()),)
    return DataBundle(
        name="digits", train_images=images[tr], train_labels=labels[tr], test_images=images[te],
        test_labels=labels[te], num_classes=10, mean=mean, std=std, crop_padding=2, flip=False,
        class_names=tuple(str(i) for i in range(10)),
    )
