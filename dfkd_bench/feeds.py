"""How the student is fed: the harness's feeds, one per method ``mode``.

A feed gives the student its batches and owns what that takes (the synthetic pool, the
real-data order). Every feed has the same protocol, and this module is the only place a
method's mode is read (``make_feed``): a new way of feeding the student is a new class
registered in ``FEEDS``, not new branches in the loop.

- ``warmup_epoch(epoch)``: a synthesis-only epoch (``run.warmup_epochs``); logs.
- ``start_epoch(epoch)``: before a distillation epoch's student steps; logs.
- ``next_batch(epoch)``: the batch of one student step and its logs (summed over the
  epoch by the loop). The loop calls it inside the distillation phase; a feed that
  synthesises times that as synthesis (phases nest on the clock).
- ``state_dict()`` / ``load_state_dict(state)``, ``after_checkpoint()``.
"""
from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any, Callable, ContextManager

import torch

from .data import DataBundle
from .errors import Diverged, UserError
from .method import Batch, Method, MethodContext
from .registry import Registry
from . import augment as aug
from .store import ImageCache, ShardStore
from .tasks import balanced_subset  # noqa: F401  (its home before tasks; imported from here by callers)
from .timing import CostCounter, PhaseClock

FEEDS: Registry[type["Feed"]] = Registry("feed")


@dataclass
class FeedEnv:
    """What a feed may use; all of it belongs to the harness's session."""

    method: Method
    ctx: MethodContext
    clock: PhaseClock
    autocast: Callable[[], ContextManager]
    data: DataBundle
    seed: int
    shards: ShardStore
    counter: CostCounter | None = None  # work done outside watched modules (augmentation)
    augment_cache: ImageCache | None = None


def make_feed(env: FeedEnv) -> "Feed":
    return FEEDS.get(env.method.mode)(env)


def checked_synthesis(method: Method, result: Any) -> tuple[Batch, dict[str, float]]:
    """``synthesize``'s result, or a TypeError that says what the contract expects."""
    if (not isinstance(result, tuple) or len(result) != 2 or not isinstance(result[0], Batch)
            or not isinstance(result[1], dict)):
        raise TypeError(f"{type(method).__name__}.synthesize must return (Batch, dict of float logs), "
                        f"got {type(result).__name__}")
    return result


def check_finite_synthesis(batch: Batch, logs: dict[str, float], epoch: int) -> None:
    """A round's logs (host floats) and images are finite, or the run has diverged:
    ``Diverged`` names the quantity and the epoch (the loss first), as a diverging student
    step does, where a non-finite pool would otherwise end in whatever raw error its first
    use raises (SSD-KD: ``invalid multinomial distribution``). One device reduction a round."""
    bad = [k for k, v in logs.items() if not math.isfinite(v)]
    if bad:
        key = "loss" if "loss" in bad else bad[0]
        raise Diverged(f"non-finite synthesis {key} ({logs[key]}) at epoch {epoch}")
    if not bool(torch.isfinite(batch.images).all()):
        raise Diverged(f"non-finite synthetic images at epoch {epoch}")


class Feed:
    def __init__(self, env: FeedEnv):
        self.env = env

    @property
    def steps_per_epoch(self) -> int:
        return self.env.ctx.run.steps_per_epoch()

    def synthesize(self, epoch: int) -> tuple[Batch, dict[str, float]]:
        """One ``method.synthesize`` call, timed as synthesis, the student in the mode the
        method declares (``synthesis_student_train_mode``)."""
        env = self.env
        with env.clock.phase("synthesis"), env.autocast("synthesis"):
            self.student_to_synthesis_mode()
            return checked_synthesis(env.method, env.method.synthesize(epoch))

    def student_to_synthesis_mode(self) -> None:
        # The method's, not the feed's: DFAD's and ZSKT's games run the student in train
        # mode, the others in eval mode; the distillation step sets train mode again.
        self.env.ctx.student.train(self.env.method.synthesis_student_train_mode)

    def warmup_epoch(self, epoch: int) -> dict[str, float]:
        return {}

    def start_epoch(self, epoch: int) -> dict[str, float]:
        return {}

    def next_batch(self, epoch: int) -> tuple[Batch, dict[str, float]]:
        raise NotImplementedError

    def state_dict(self) -> dict:
        return {}

    def load_state_dict(self, state: dict) -> None:
        pass

    def after_checkpoint(self) -> None:
        """The checkpoint naming this feed's state is on disk."""

    def final_samples(self) -> torch.Tensor | None:
        """The normalised images the student trained on at the end (a pool's content),
        for the run's diagnostics; None where there is no such set."""
        return None


@FEEDS.register("pool")
class PoolFeed(Feed):
    """Once an epoch (warm-up epochs too) the method's batch enters the sample pool;
    the student's batches are drawn from the pool and augmented.

    The pool's images are written once, as append-only shards beside the checkpoint
    (``state_dict`` writes the new ones), so a checkpoint's cost does not grow with the
    pool; shards holding only evicted samples are removed once a checkpoint no longer
    names them."""

    def __init__(self, env: FeedEnv):
        super().__init__(env)
        self.pool = env.method.make_pool(env.ctx.run.data_scale)
        self.shards: list[tuple[str, int]] = []  # oldest first; their samples end with the pool's
        self.next_shard = 0
        self._previous: set[str] = set()  # the shards the previous checkpoint names

    def warmup_epoch(self, epoch: int) -> dict[str, float]:
        return self.start_epoch(epoch)

    def start_epoch(self, epoch: int) -> dict[str, float]:
        with self.env.clock.phase("synthesis"):  # one phase: synthesize's own is the same one
            batch, logs = self.synthesize(epoch)
            logs = {k: float(v) for k, v in logs.items()}
            check_finite_synthesis(batch, logs, epoch)
            self.pool.add(batch.images, batch.labels, batch.meta)
        logs = {f"synth_{k}": v for k, v in logs.items()}
        logs.update(self.after_synthesis(batch))
        return {**logs, "pool_size": len(self.pool)}

    def after_synthesis(self, batch: Batch) -> dict[str, float]:
        """After a round's batch entered the pool; logs."""
        return {}

    def next_batch(self, epoch: int) -> tuple[Batch, dict[str, float]]:
        env = self.env
        images, labels, meta = self.pool.sample(env.ctx.run.batch_size, **env.method.sample_options(epoch))
        return Batch(env.ctx.augment(images), labels, meta), {}

    def state_dict(self) -> dict:
        fresh = self.pool.take_unsaved()
        if fresh is not None:
            name = f"shard-{self.next_shard:06d}.pt"
            self.env.shards.write(name, fresh)
            self.shards.append((name, len(fresh["images"])))
            self.next_shard += 1
        while len(self.shards) > 1 and sum(n for _, n in self.shards[1:]) >= len(self.pool):
            self.shards.pop(0)
        return {"pool": self.pool.state_dict(), "shards": list(self.shards), "next_shard": self.next_shard}

    def load_state_dict(self, state: dict) -> None:
        device = self.env.ctx.device
        if state.get("legacy_pool") is not None:
            # A checkpoint from before shards: its images come in the checkpoint and are
            # all written as the first shard at the next checkpoint.
            old = state["legacy_pool"]
            fixed = {k: old.get(k) for k in self.pool.fixed_fields}
            self.pool.restore(fixed, {**old, "size": len(old["images"])}, device)
            self.pool.unsaved = len(self.pool)
            return
        try:
            parts = [self.env.shards.read(name) for name, _ in state["shards"]]
        except Exception as exc:  # noqa: BLE001  (missing, torn or foreign shard files alike)
            raise UserError(f"a pool shard in {self.env.shards.path} cannot be read ({type(exc).__name__}: "
                            f"{exc}".splitlines()[0][:300] + "); re-run with --force to restart the run") from None
        fixed = {k: torch.cat([p[k] for p in parts]) for k in (parts[0] if parts else {})}
        self.pool.restore(fixed, state["pool"], device)
        self.shards, self.next_shard = [tuple(s) for s in state["shards"]], state["next_shard"]
        self._previous = {name for name, _ in self.shards}  # the loaded checkpoint stays a fallback

    def after_checkpoint(self) -> None:
        """Remove shards neither this checkpoint nor the previous one (kept as a
        fallback) names."""
        keep = {name for name, _ in self.shards}
        self.env.shards.prune(keep=keep | self._previous)
        self._previous = keep

    def final_samples(self) -> torch.Tensor | None:
        return self.pool.images


@FEEDS.register("augmented")
class AugmentedPoolFeed(PoolFeed):
    """A pool feed that also augments each round's new images (the method's
    ``make_augmenter``, ``k`` outputs an image), keeps those the method's
    ``filter_augmentations`` accepts and adds them to the pool beside their sources
    (with the sources' labels), so the student trains on originals and kept
    augmentations alike. The pool holds ``data_scale * (1 + k)`` samples.

    All of it is the ``augmentation`` phase on the clock. Outputs of a cacheable
    augmenter go through the on-disk ``ImageCache``: an image already augmented (a
    resumed epoch, a repeated run) is read back, and its FLOPs and original seconds are
    counted as cached work (``<cost>_cached_images``, ``_cached_seconds``)."""

    def __init__(self, env: FeedEnv):
        super().__init__(env)
        self.augmenter = env.method.make_augmenter()
        if self.augmenter is not None and self.pool.capacity:
            self.pool.capacity *= 1 + self.augmenter.k

    def after_synthesis(self, batch: Batch) -> dict[str, float]:
        if self.augmenter is None:
            return {}
        env, a = self.env, self.augmenter
        with env.clock.phase("augmentation"):
            sources = aug.to_uint8(env.ctx.normalizer.denormalize(batch.images))
            outputs, logs = self.augmented(sources, batch.labels)
            images = env.ctx.normalizer.from_uint8(outputs.to(batch.images.device))
            with env.autocast("synthesis"):
                keep, filter_logs = env.method.filter_augmentations(batch.images, images, a.k)
            labels = None if batch.labels is None else batch.labels.repeat_interleave(a.k)[keep]
            self.pool.add(images[keep], labels)
        logs.update({"aug_made": float(len(images)), "aug_kept": float(keep.sum()),
                     "aug_kept_fraction": float(keep.float().mean())})
        logs.update({f"aug_{k}": float(v) for k, v in filter_logs.items()})
        return logs

    def augmented(self, sources: torch.Tensor, labels: torch.Tensor | None) -> tuple[torch.Tensor, dict[str, float]]:
        """``k`` uint8 augmentations of each source, grouped by source: cached ones read
        back, the others made (and cached) in one call of the augmenter."""
        env, a = self.env, self.augmenter
        identity = a.identity()
        keys = [aug.cache_key(identity, image) for image in sources]
        cache = env.augment_cache if a.cacheable else None
        found = [cache.get(key) if cache is not None else None for key in keys]
        found = [f if f is not None and f[0].shape == (a.k, *sources.shape[1:]) else None for f in found]
        missing = [i for i, f in enumerate(found) if f is None]
        outputs: list[torch.Tensor | None] = [None if f is None else f[0] for f in found]
        seconds = 0.0
        if missing:
            idx = torch.tensor(missing, device=sources.device)
            made, seconds = aug.timed(a, sources[idx], None if labels is None else labels[idx],
                                      [aug.output_seeds(keys[i], a.k) for i in missing], env.data.class_names)
            per_image = seconds / len(missing)
            for j, i in enumerate(missing):
                outputs[i] = made[j * a.k:(j + 1) * a.k]
                if cache is not None:
                    cache.put(keys[i], outputs[i], {"seconds": per_image, "flops_per_output": a.flops_per_output,
                                                    "identity": identity})
        hits = [f for f in found if f is not None]
        if a.cost_name and env.counter is not None:
            flops = a.flops_per_output or next((f[1].get("flops_per_output", 0) for f in hits), 0)
            env.counter.add(a.cost_name, flops, images=len(missing) * a.k, cached_images=len(hits) * a.k,
                            cached_seconds=sum(f[1].get("seconds", 0.0) for f in hits))
        return torch.cat([o.to(sources.device) for o in outputs]), {"aug_cache_hits": float(len(hits)),
                                                                    "aug_seconds_made": seconds}


@FEEDS.register("online")
class OnlineFeed(Feed):
    """A fresh batch from the method before every student step, used once; a warm-up
    epoch calls ``warmup_step`` (generator steps only) as many times as there are
    student steps in an epoch."""

    def warmup_epoch(self, epoch: int) -> dict[str, float]:
        env, sums, steps = self.env, {}, self.steps_per_epoch
        with env.clock.phase("synthesis"):
            self.student_to_synthesis_mode()
            for _ in range(steps):
                with env.autocast("synthesis"):
                    add_logs(sums, env.method.warmup_step(epoch), "synth_")
        return {k: float(v) / steps for k, v in sums.items()}

    def next_batch(self, epoch: int) -> tuple[Batch, dict[str, float]]:
        return self.synthesize(epoch)


@FEEDS.register("real")
class RealFeed(Feed):
    """Real training images (baselines only), one random permutation an epoch over all
    of them or over a subset of ``run.data_scale`` images (the task's: class-balanced for
    classification), cropped and flipped with their labels as the task moves them."""

    def __init__(self, env: FeedEnv):
        super().__init__(env)
        data, subset = env.data, env.ctx.run.data_scale
        labels = data.train_labels.cpu()
        idx = env.ctx.task.subset(labels, subset, data.num_classes, env.seed) if 0 < subset < len(labels) \
            else torch.arange(len(labels))
        self.images = data.train_images[idx.to(data.train_images.device)]
        self.labels = data.train_labels[idx.to(data.train_labels.device)]
        self.perm: torch.Tensor | None = None
        self.pos = 0

    @property
    def steps_per_epoch(self) -> int:
        run = self.env.ctx.run
        return run.steps_per_epoch() if run.data_scale else math.ceil(len(self.labels) / run.batch_size)

    def start_epoch(self, epoch: int) -> dict[str, float]:
        # the real images it trains on, in each epoch's record as a pool's size is (the
        # report's training data scale, Table 3's "795 NYUv2")
        return {"real_samples": float(len(self.labels))}

    def next_batch(self, epoch: int) -> tuple[Batch, dict[str, float]]:
        if self.perm is None or self.pos >= len(self.perm):
            self.perm, self.pos = torch.randperm(len(self.labels)).to(self.labels.device), 0
        idx = self.perm[self.pos:self.pos + self.env.ctx.run.batch_size]
        self.pos += len(idx)
        ctx = self.env.ctx
        return Batch(*ctx.augment_labelled(ctx.normalizer.from_uint8(self.images[idx]), self.labels[idx])), {}

    def state_dict(self) -> dict:
        return {"perm": self.perm, "pos": self.pos}

    def load_state_dict(self, state: dict) -> None:
        perm = state.get("perm")
        self.perm = None if perm is None else perm.to(self.labels.device)
        self.pos = state.get("pos", 0)


def add_logs(sums: dict[str, Any], logs: dict[str, Any], prefix: str = "") -> None:
    """Add one step's logs (floats, or scalar tensors summed where they are, so a step
    never waits for the device) into running per-epoch sums, keys prefixed; the caller
    reads the sums once an epoch."""
    for k, v in logs.items():
        sums[prefix + k] = sums.get(prefix + k, 0.0) + (v.detach() if torch.is_tensor(v) else float(v))
