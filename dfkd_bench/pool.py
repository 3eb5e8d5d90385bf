"""The synthetic-sample pool that pool-based methods (DeepInv, CMI, Fast) fill each
epoch and the student samples from. Priority replay (SSD-KD) lives beside it.

A pool holds per-sample tensors by name. Fields fixed when a sample is added (its
image, label, teacher class) are persisted once, by the harness, as append-only shards
(``take_unsaved`` hands over what is new since the last call); fields that change during
a run (priorities) are part of ``state_dict``. So a checkpoint costs the same whatever
the pool's size.
"""
from __future__ import annotations

import torch


class SamplePool:
    """A first-in-first-out store of synthetic images (and optional labels).

    ``capacity`` 0 means unbounded: the growing pool of the reference DeepInv/Fast
    runs. With a capacity (the data scale) the oldest samples are evicted first.
    """

    fixed_fields: tuple[str, ...] = ("images", "labels")
    mutable_fields: tuple[str, ...] = ()

    def __init__(self, capacity: int = 0):
        self.capacity = capacity
        # Each field lives in a preallocated store that grows geometrically; ``data`` holds
        # views of its live rows [start, end), oldest first. Appending writes only the new
        # rows: rebuilding the pool with torch.cat every round copied all of it (about
        # 600 MiB a round at 200 rounds of 256 CIFAR images, issue 32).
        self._store: dict[str, torch.Tensor] = {}
        self._start = self._end = 0
        self.data: dict[str, torch.Tensor] = {}
        self.unsaved = 0  # newest samples not yet handed to ``take_unsaved``

    @property
    def images(self) -> torch.Tensor | None:
        return self.data.get("images")

    @property
    def labels(self) -> torch.Tensor | None:
        return self.data.get("labels")

    def __len__(self) -> int:
        return self._end - self._start if self._store else 0

    def add(self, images: torch.Tensor, labels: torch.Tensor | None = None, meta: dict | None = None) -> None:
        self._append({"images": images, "labels": labels})

    def _append(self, new: dict[str, torch.Tensor | None]) -> None:
        """Append per-sample tensors; a field missing (None) from any add is dropped for
        the whole pool (a pool is labelled only if every sample is)."""
        first = not self._store
        n = new["images"].shape[0]
        for name, value in new.items():
            if value is None or (not first and name not in self._store):
                self._store.pop(name, None)
            elif first:
                self._store[name] = torch.empty((n, *value.shape[1:]), dtype=value.dtype, device=value.device)
        self._reserve(n)
        for name, store in self._store.items():
            store[self._end:self._end + n] = new[name].detach()
        self._end += n
        if self.capacity and len(self) > self.capacity:
            self._start = self._end - self.capacity
        self._views()
        self.unsaved = min(len(self), self.unsaved + n)

    def _reserve(self, n: int) -> None:
        """Room for ``n`` more rows after ``end``: the live rows moved to the front where
        that makes room, else a store twice as long (or as long as needed)."""
        length = next(iter(self._store.values())).shape[0]
        if self._end + n <= length:
            return
        size = len(self)
        grown = length if size + n <= length // 2 else max(2 * length, size + n)
        for name, store in self._store.items():
            fresh = store if grown == length else store.new_empty((grown, *store.shape[1:]))
            fresh[:size] = store[self._start:self._end].clone()
            self._store[name] = fresh
        self._start, self._end = 0, size

    def _views(self) -> None:
        self.data = {name: store[self._start:self._end] for name, store in self._store.items()}

    def sample(self, batch_size: int, generator: torch.Generator | None = None, **_):
        """A uniform random mini-batch ``(images, labels, meta)``, with replacement only
        when the pool is smaller than the batch."""
        if not len(self):
            raise RuntimeError("sampling from an empty pool")
        n = len(self)
        where = self.images.device if generator is None else "cpu"  # drawn where the pool is
        if n >= batch_size:
            idx = torch.randperm(n, generator=generator, device=where)[:batch_size]
        else:
            idx = torch.randint(n, (batch_size,), generator=generator, device=where)
        idx = idx.to(self.images.device)
        return self.images[idx], None if self.labels is None else self.labels[idx], {"index": idx}

    # --- persistence -------------------------------------------------------------
    def take_unsaved(self) -> dict[str, torch.Tensor] | None:
        """The fixed fields of the samples added since the last call (None if none)."""
        k, self.unsaved = self.unsaved, 0
        if not k:
            return None
        # copies: a view would save its whole (preallocated) store
        return {name: self.data[name][-k:].clone() for name in self.fixed_fields if name in self.data}

    def state_dict(self) -> dict:
        """What changes during a run: size and the mutable fields (not the images)."""
        return {"capacity": self.capacity, "size": len(self),
                **{name: None if self.data.get(name) is None else self.data[name].clone()
                   for name in self.mutable_fields}}

    def restore(self, fixed: dict[str, torch.Tensor], state: dict, device: torch.device | str = "cpu") -> None:
        """Rebuild the pool from its persisted fixed fields (at least the last ``size``
        samples ever added, oldest first) and ``state_dict``'s mutable ones."""
        self.capacity, size = state["capacity"], state["size"]
        self._store = {name: t[len(t) - size:].to(device).clone() for name, t in fixed.items() if t is not None}
        for name in self.mutable_fields:
            if state.get(name) is not None:
                self._store[name] = state[name].to(device).clone()
        self._start, self._end = 0, size
        self._views()
        self.unsaved = 0


class PriorityReplay(SamplePool):
    """SSD-KD's replay buffer: constant size |B| with the oldest samples evicted, each
    sample carrying a priority delta (Eq. 4) and its teacher class.

    Sampling follows prioritised experience replay (Schaul et al., 2016), SSD-KD Eq. 6:
    ``P(x) = (|delta(x)| + eps)^alpha / sum_B (|delta| + eps)^alpha``, with replacement;
    importance-sampling weights (Eq. 5) ``w(x) = (N * P(x))^-beta`` as printed, with no
    normalisation by default (see ``importance_weights``). ``alpha = 0`` is uniform
    sampling.
    """

    fixed_fields = ("images", "labels", "teacher_classes")
    mutable_fields = ("priorities",)

    def __init__(self, capacity: int = 0, alpha: float = 0.6, eps: float = 1e-6):
        super().__init__(capacity)
        self.alpha, self.eps = alpha, eps

    @property
    def priorities(self) -> torch.Tensor | None:
        return self.data.get("priorities")

    @property
    def teacher_classes(self) -> torch.Tensor | None:
        return self.data.get("teacher_classes")

    def add(self, images: torch.Tensor, labels: torch.Tensor | None = None, meta: dict | None = None) -> None:
        meta = meta or {}
        n = images.shape[0]
        prio = meta.get("priority")
        prio = torch.ones(n, device=images.device) if prio is None else prio.detach().float().to(images.device)
        cls = meta.get("teacher_class")
        cls = torch.full((n,), -1, dtype=torch.long, device=images.device) if cls is None else cls.detach().to(images.device)
        self._append({"images": images, "labels": labels, "priorities": prio, "teacher_classes": cls})

    def probabilities(self) -> torch.Tensor:
        scaled = (self.priorities.abs() + self.eps) ** self.alpha
        return scaled / scaled.sum()

    IS_NORMS = ("none", "buffer", "batch", "mean")

    def importance_weights(self, idx: torch.Tensor, beta: float, norm: str = "none",
                           probs: torch.Tensor | None = None) -> torch.Tensor:
        """Eq. 5 for the items ``idx``. ``norm`` says what the weights are divided by:
        ``none``, nothing (Eq. 5 as printed: at beta 1 the expected weight of a sampled
        item is exactly 1, sum_i P_i / (N P_i)); ``buffer``, the largest weight any item
        in the buffer could get (Schaul et al.'s 1/max_i w_i: shrinks every weight as
        priorities spread); ``batch``, the largest weight in this batch; ``mean``, the
        batch mean (relative weights only). ``probs``: the buffer's probabilities when
        the caller already has them."""
        p = self.probabilities() if probs is None else probs
        n = p.shape[0]
        w = (n * p[idx]) ** (-beta)
        if norm == "none":
            return w
        if norm == "buffer":
            return w / (n * p.min()) ** (-beta)
        if norm == "batch":
            return w / w.max()
        if norm == "mean":
            return w / w.mean()
        raise ValueError(f"importance-weight normalisation {norm!r}; accepted: {', '.join(self.IS_NORMS)}")

    def sample(self, batch_size: int, generator: torch.Generator | None = None, beta: float = 0.4,
               is_norm: str = "none"):
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
        """Set the priorities of the items ``idx``. Sampling is with replacement, so an
        item can be drawn more than once in a batch: it gets the mean of its values (its
        KL on each augmented view it was seen in), not whichever write indexed assignment
        happens to keep (unspecified, and on CUDA different from run to run)."""
        prio = self.priorities
        sums = torch.zeros_like(prio).index_add_(0, idx, priorities.detach().float())
        counts = torch.zeros_like(prio).index_add_(0, idx, torch.ones_like(sums[idx]))
        prio.copy_(torch.where(counts > 0, sums / counts.clamp_min(1), prio))  # in place: a view of the store

    def class_share(self, classes: torch.Tensor) -> torch.Tensor:
        """For each class id in ``classes`` (any shape: per sample, or per pixel), the share
        of the buffer whose teacher class equals it (the diversity factor of SSD-KD's Eq. 3
        is one minus this). Items recorded as class histograms (N x C, a segmentation
        buffer's) count by their pixel shares: the share of the buffer's pixels in the class."""
        held = self.teacher_classes
        if held is None or not len(self):
            return torch.zeros(classes.shape, device=classes.device)
        if held.dim() == 2:
            return held.mean(0)[classes.to(held.device)].to(classes.device)
        flat = classes.reshape(-1).to(held.device)
        share = (held[None, :] == flat[:, None]).float().mean(1)
        return share.reshape(classes.shape).to(classes.device)
