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

    def add(self, images: torch.Tensor, labels: torch.Tensor | None = None, meta: dict | None = None) -> None:
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

    def sample(self, batch_size: int, generator: torch.Generator | None = None, **_):
        """A uniform random mini-batch ``(images, labels, meta)``, with replacement only
        when the pool is smaller than the batch."""
        if not len(self):
            raise RuntimeError("sampling from an empty pool")
        n = len(self)
        if n >= batch_size:
            idx = torch.randperm(n, generator=generator)[:batch_size]
        else:
            idx = torch.randint(n, (batch_size,), generator=generator)
        idx = idx.to(self.images.device)
        return self.images[idx], None if self.labels is None else self.labels[idx], {"index": idx}

    def state_dict(self) -> dict:
        return {"capacity": self.capacity, "images": self.images, "labels": self.labels}

    def load_state_dict(self, state: dict) -> None:
        self.capacity = state["capacity"]
        self.images = state["images"]
        self.labels = state["labels"]


class PriorityReplay(SamplePool):
    """SSD-KD's replay buffer: constant size |B| with the oldest samples evicted, each
    sample carrying a priority delta (Eq. 4) and its teacher class.

    Sampling follows prioritised experience replay (Schaul et al., 2016), SSD-KD Eq. 6:
    ``P(x) = (|delta(x)| + eps)^alpha / sum_B (|delta| + eps)^alpha``, with replacement;
    importance-sampling weights (Eq. 5) ``w(x) = (N * P(x))^-beta`` are normalised by
    the largest weight in the buffer. ``alpha = 0`` is uniform sampling.
    """

    def __init__(self, capacity: int = 0, alpha: float = 0.6, eps: float = 1e-6):
        super().__init__(capacity)
        self.alpha, self.eps = alpha, eps
        self.priorities: torch.Tensor | None = None
        self.teacher_classes: torch.Tensor | None = None

    def add(self, images: torch.Tensor, labels: torch.Tensor | None = None, meta: dict | None = None) -> None:
        meta = meta or {}
        n = images.shape[0]
        prio = meta.get("priority")
        prio = torch.ones(n, device=images.device) if prio is None else prio.detach().float().to(images.device)
        cls = meta.get("teacher_class")
        cls = torch.full((n,), -1, dtype=torch.long, device=images.device) if cls is None else cls.detach().to(images.device)
        self.priorities = prio.clone() if self.priorities is None else torch.cat([self.priorities, prio])
        self.teacher_classes = cls.clone() if self.teacher_classes is None else torch.cat([self.teacher_classes, cls])
        super().add(images, labels)
        if self.capacity and self.priorities.shape[0] > self.capacity:
            self.priorities = self.priorities[-self.capacity:]
            self.teacher_classes = self.teacher_classes[-self.capacity:]

    def probabilities(self) -> torch.Tensor:
        scaled = (self.priorities.abs() + self.eps) ** self.alpha
        return scaled / scaled.sum()

    IS_NORMS = ("buffer", "batch", "mean")

    def importance_weights(self, idx: torch.Tensor, beta: float, norm: str = "buffer",
                           probs: torch.Tensor | None = None) -> torch.Tensor:
        """Eq. 5 for the items ``idx``. ``norm`` says what the weights are divided by:
        ``buffer``, the largest weight any item in the buffer could get (Schaul et al.'s
        1/max_i w_i, as REFERENCE.md reads Eq. 5); ``batch``, the largest weight in this
        batch; ``mean``, the batch mean (relative weights only, the KD gradient keeps its
        scale). ``probs``: the buffer's probabilities when the caller already has them."""
        p = self.probabilities() if probs is None else probs
        n = p.shape[0]
        w = (n * p[idx]) ** (-beta)
        if norm == "buffer":
            return w / (n * p.min()) ** (-beta)
        if norm == "batch":
            return w / w.max()
        if norm == "mean":
            return w / w.mean()
        raise ValueError(f"importance-weight normalisation {norm!r}; accepted: {', '.join(self.IS_NORMS)}")

    def sample(self, batch_size: int, generator: torch.Generator | None = None, beta: float = 0.4,
               is_norm: str = "buffer"):
        if not len(self):
            raise RuntimeError("sampling from an empty replay buffer")
        probs = self.probabilities()
        # Draw where the priorities live; only an explicit (CPU) generator needs a copy.
        idx = torch.multinomial(probs if generator is None else probs.cpu(), batch_size, replacement=True,
                                generator=generator)
        idx = idx.to(self.images.device)
        # the probabilities just drawn from, not a second pass over the buffer
        meta = {"index": idx, "is_weight": self.importance_weights(idx, beta, is_norm, probs)}
        return self.images[idx], None if self.labels is None else self.labels[idx], meta

    def update_priorities(self, idx: torch.Tensor, priorities: torch.Tensor) -> None:
        self.priorities[idx] = priorities.detach().float()

    def class_share(self, classes: torch.Tensor) -> torch.Tensor:
        """For each class in ``classes``, the share of the buffer whose teacher class
        equals it (the diversity factor of SSD-KD's Eq. 3 is one minus this)."""
        if self.teacher_classes is None or not len(self):
            return torch.zeros(classes.shape[0], device=classes.device)
        return (self.teacher_classes[None, :] == classes[:, None].to(self.teacher_classes.device)).float().mean(1).to(classes.device)

    def state_dict(self) -> dict:
        return {**super().state_dict(), "priorities": self.priorities, "teacher_classes": self.teacher_classes,
                "alpha": self.alpha, "eps": self.eps}

    def load_state_dict(self, state: dict) -> None:
        super().load_state_dict(state)
        self.priorities, self.teacher_classes = state["priorities"], state["teacher_classes"]
        self.alpha, self.eps = state["alpha"], state["eps"]
