"""The synthetic-sample pool that pool-based methods (DeepInv, CMI, Fast) fill each
epoch and the student samples from. Priority replay (SSD-KD) lives beside it."""
from __future__ import annotations

import torch


class SamplePool:
    """A first-in-first-out store of synthetic images (and optional labels).

    ``capacity`` 0 means unbounded: the growing pool of the reference DeepInv/Fast
    runs. With a capacity (the data scale) the oldest samples are evicted first.
    """

    def __init__(self, capacity: int = 0):
        self.capacity = capacity
        self.images: torch.Tensor | None = None
        self.labels: torch.Tensor | None = None

    def __len__(self) -> int:
        return 0 if self.images is None else self.images.shape[0]

    def add(self, images: torch.Tensor, labels: torch.Tensor | None = None) -> None:
        images = images.detach()
        if self.images is None:
            self.images = images.clone()
            self.labels = None if labels is None else labels.detach().clone()
        else:
            self.images = torch.cat([self.images, images])
            if self.labels is not None and labels is not None:
                self.labels = torch.cat([self.labels, labels.detach()])
            else:
                self.labels = None
        if self.capacity and len(self) > self.capacity:
            self.images = self.images[-self.capacity:]
            if self.labels is not None:
                self.labels = self.labels[-self.capacity:]

    def sample(self, batch_size: int, generator: torch.Generator | None = None):
        """A uniform random mini-batch, with replacement only when the pool is smaller
        than the batch."""
        if not len(self):
            raise RuntimeError("sampling from an empty pool")
        n = len(self)
        if n >= batch_size:
            idx = torch.randperm(n, generator=generator)[:batch_size]
        else:
            idx = torch.randint(n, (batch_size,), generator=generator)
        idx = idx.to(self.images.device)
        return self.images[idx], None if self.labels is None else self.labels[idx]

    def state_dict(self) -> dict:
        return {"capacity": self.capacity, "images": self.images, "labels": self.labels}

    def load_state_dict(self, state: dict) -> None:
        self.capacity = state["capacity"]
        self.images = state["images"]
        self.labels = state["labels"]
