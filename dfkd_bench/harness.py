"""The inversion-distillation loop: epochs of synthesize -> distill -> evaluate, on one
clock, with a checkpoint each epoch so an interrupted run resumes where it stopped."""
from __future__ import annotations

import dataclasses
import datetime as dt
import math
import random
import resource
from contextlib import nullcontext
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable

import numpy as np
import torch

from . import store
from .config import RunConfig, to_dict
from .data import DataBundle, Normalizer, load_dataset, random_crop_flip
from .errors import Diverged, Terminated, UserError
from .method import ONLINE, POOL, REAL, Batch, Method, MethodContext
from .models import build_model
from .pairs import resolve_pair
from .registry import METHODS
from .teachers import evaluate_top1, get_or_train_teacher
from .timing import CostCounter, PhaseClock

Progress = Callable[[str, dict], None]


@dataclass
class RunSpec:
    """Everything that identifies one run, before it is resolved."""

    method: str
    dataset: str
    pair: str | None
    seed: int
    run: RunConfig
    method_config: Any
    preset: str | None = None
    out: Path = Path("results")
    data_root: str | None = None
    cache: str | None = None
    download: bool = False
    train_missing_teacher: bool = True
    force: bool = False
    extra: dict = field(default_factory=dict)


def resolve_device(name: str) -> torch.device:
    if name == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    if name == "cuda" and not torch.cuda.is_available():
        raise UserError("--device cuda: no CUDA device is available here; use --device cpu or auto")
    if name not in ("cpu", "cuda"):
        raise UserError(f"unknown device {name!r}; accepted: auto, cpu, cuda")
    return torch.device(name)


def seed_everything(seed: int) -> None:
    random.seed(seed)
    np.random.seed(seed)
    torch.manual_seed(seed)


def rng_state() -> dict:
    state = {"torch": torch.get_rng_state(), "numpy": np.random.get_state()[1].tolist(),
             "numpy_pos": int(np.random.get_state()[2]), "python": list(random.getstate()[1])}
    if torch.cuda.is_available():
        state["cuda"] = torch.cuda.get_rng_state_all()
    return state


def set_rng_state(state: dict) -> None:
    torch.set_rng_state(state["torch"])
    np.random.set_state(("MT19937", np.array(state["numpy"], dtype=np.uint32), state["numpy_pos"], 0, 0.0))
    random.setstate((3, tuple(state["python"]), None))
    if "cuda" in state and torch.cuda.is_available():
        torch.cuda.set_rng_state_all(state["cuda"])


def resolved_config(spec: RunSpec, device: torch.device) -> dict:
    pair = resolve_pair(spec.pair, spec.dataset)
    return {
        "method": spec.method, "preset": spec.preset, "dataset": spec.dataset, "pair": pair.name,
        "teacher": pair.teacher, "student": pair.student, "seed": spec.seed, "device": device.type,
        "run": to_dict(spec.run), "method_config": to_dict(spec.method_config),
    }


def run_name(resolved: dict) -> str:
    label = resolved["method"] + (f"-{resolved['preset']}" if resolved["preset"] else "")
    scale = resolved["run"]["data_scale"]
    dataset = resolved["dataset"].replace("/", "_").replace(":", "_")
    return (f"{dataset}__{resolved['pair'].replace(':', '_')}__{label}__n{scale or 'default'}"
            f"__s{resolved['seed']}__{store.config_hash(resolved)}")


class RealSampler:
    """Epoch-wise random permutation over (a class-balanced subset of) the real
    training split, for the baselines that see real data."""

    def __init__(self, data: DataBundle, subset: int, seed: int):
        labels = data.train_labels.cpu()
        if subset and subset < len(labels):
            idx = balanced_subset(labels, subset, data.num_classes, seed)
        else:
            idx = torch.arange(len(labels))
        self.images = data.train_images[idx.to(data.train_images.device)]
        self.labels = data.train_labels[idx.to(data.train_labels.device)]
        self._perm: torch.Tensor | None = None
        self._pos = 0

    def __len__(self) -> int:
        return len(self.labels)

    def sample(self, batch_size: int) -> tuple[torch.Tensor, torch.Tensor]:
        if self._perm is None or self._pos >= len(self._perm):
            self._perm, self._pos = torch.randperm(len(self)).to(self.labels.device), 0
        idx = self._perm[self._pos:self._pos + batch_size]
        self._pos += batch_size
        return self.images[idx], self.labels[idx]


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


def peak_memory_mb(device: torch.device) -> float:
    if device.type == "cuda":
        return torch.cuda.max_memory_allocated(device) / 2**20
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024  # Linux reports KiB


def add_logs(sums: dict[str, float], logs: dict[str, float], prefix: str = "") -> None:
    """Add one step's float logs into running per-epoch sums, keys prefixed."""
    for k, v in logs.items():
        sums[prefix + k] = sums.get(prefix + k, 0.0) + float(v)


def _now() -> str:
    return dt.datetime.now(dt.timezone.utc).isoformat(timespec="seconds")


def run(spec: RunSpec, progress: Progress | None = None, announce: Callable[[str], None] = print) -> dict:
    """Run (or resume, or skip if complete) one (config, seed). Returns its summary."""
    emit = progress or (lambda event, info: None)
    device = resolve_device(spec.run.device)
    if device.type != "cuda" and (spec.run.amp_bf16 or spec.run.channels_last):
        spec.run = dataclasses.replace(spec.run, amp_bf16=False, channels_last=False)
    resolved = resolved_config(spec, device)
    rundir = store.RunDir(store.ensure_writable_dir(spec.out), run_name(resolved))
    previous = rundir.summary()
    if previous and previous.get("status") == "completed" and not spec.force:
        emit("skip", {"name": rundir.path.name, "summary": previous})
        return {**previous, "skipped": True}
    rundir.create()
    if spec.force:
        for stale in (store.CHECKPOINT, store.METRICS):
            rundir.file(stale).unlink(missing_ok=True)
    if spec.run.num_threads:
        torch.set_num_threads(spec.run.num_threads)

    cls: type[Method] = METHODS.get(spec.method)
    data = load_dataset(spec.dataset, spec.data_root, spec.download, cache=spec.cache).to(device)
    teacher, teacher_meta = get_or_train_teacher(data, resolved["teacher"], device, spec.cache,
                                                 spec.train_missing_teacher, announce)
    seed_everything(spec.seed)
    student = build_model(resolved["student"], data.num_classes, data.image_shape[0])
    teacher.to(device).eval().requires_grad_(False)
    student.to(device)
    if spec.run.channels_last:
        teacher.to(memory_format=torch.channels_last)
        student.to(memory_format=torch.channels_last)
    normalizer = Normalizer(data.mean, data.std, device)
    augment = lambda x: random_crop_flip(x, data.crop_padding, data.flip)  # noqa: E731
    ctx = MethodContext(teacher=teacher, student=student, num_classes=data.num_classes,
                        image_shape=data.image_shape, normalizer=normalizer, device=device, run=spec.run,
                        augment=augment)
    method = cls(spec.method_config, ctx)
    counter = CostCounter()
    counter.watch("teacher", teacher)
    counter.watch("student", student)
    for name, module in method.cost_modules().items():
        counter.watch(name, module)

    cfg = spec.run
    steps = cfg.steps_per_epoch()
    real = RealSampler(data, cfg.data_scale, spec.seed) if cls.mode == REAL else None
    if real is not None and not cfg.data_scale:
        steps = math.ceil(len(real) / cfg.batch_size)
    distill_epochs = max(0, cfg.epochs - cfg.warmup_epochs)
    optimizer = torch.optim.SGD(student.parameters(), lr=cfg.lr, momentum=cfg.momentum,
                                weight_decay=cfg.weight_decay)
    # Cosine over the run's actual length (the reference code fixes it at 200 epochs).
    scheduler = torch.optim.lr_scheduler.CosineAnnealingLR(optimizer, T_max=max(1, distill_epochs * steps))
    pool = method.make_pool(cfg.data_scale) if cls.mode == POOL else None
    clock = PhaseClock(device)
    autocast = (lambda: torch.autocast("cuda", dtype=torch.bfloat16)) if cfg.amp_bf16 else nullcontext

    start_epoch, best, final, history_started = 0, None, None, _now()
    ckpt = rundir.load_checkpoint()
    if ckpt is not None:
        student.load_state_dict(ckpt["student"])
        optimizer.load_state_dict(ckpt["optimizer"])
        scheduler.load_state_dict(ckpt["scheduler"])
        method.load_state_dict(ckpt["method"])
        if pool is not None:
            pool.load_state_dict(ckpt["pool"])
        if real is not None:
            real._perm, real._pos = ckpt["real_perm"], ckpt["real_pos"]
        clock.load_state_dict(ckpt["clock"])
        counter.load_state_dict(ckpt["counter"])
        set_rng_state(ckpt["rng"])
        start_epoch, best, final = ckpt["epoch"] + 1, ckpt["best"], ckpt["final"]
        history_started = ckpt["started"]
    env = store.environment(device)
    if ckpt is not None:
        rundir.truncate_metrics(ckpt["epoch"])
        # environment.json keeps the machine the run started on; a resume on another
        # machine, commit or thread count is recorded with the resume itself.
        rundir.append_metrics({"event": "resume", "epoch": ckpt["epoch"], "time": _now(), "environment": env})
    rundir.write_json(store.CONFIG, resolved)
    if ckpt is None or not (rundir.path / store.ENVIRONMENT).exists():
        rundir.write_json(store.ENVIRONMENT, env)

    teacher_top1 = teacher_meta.get("top1")
    if teacher_top1 is None:
        teacher_top1 = evaluate_top1(teacher, data.test_images, data.test_labels, normalizer)

    def summary(status: str, reason: str = "", epochs_done: int = 0) -> dict:
        s = {
            "status": status, "reason": reason, "name": rundir.path.name, "method": spec.method,
            "preset": spec.preset, "label": resolved["method"] + (f"-{spec.preset}" if spec.preset else ""),
            "dataset": spec.dataset, "pair": resolved["pair"], "teacher": resolved["teacher"],
            "student": resolved["student"], "seed": spec.seed, "data_scale": cfg.data_scale,
            "epochs": cfg.epochs, "epochs_done": epochs_done, "steps_per_epoch": steps,
            "final_top1": final, "best_top1": best, "teacher_top1": teacher_top1,
            "seconds": dict(clock.seconds), "train_seconds": clock.train_seconds,
            "total_seconds": clock.total_seconds, **counter.summary(),
            "peak_memory_mb": round(peak_memory_mb(device), 1), "device": device.type,
            "started": history_started, "updated": _now(),
        }
        rundir.write_summary(s)
        return s

    summary("running", epochs_done=start_epoch)
    emit("start", {"name": rundir.path.name, "epochs": cfg.epochs, "start_epoch": start_epoch})

    def student_step(batch: Batch) -> dict[str, torch.Tensor]:
        with autocast():
            losses = method.distill_loss(batch)
        loss = losses["loss"]
        if not torch.isfinite(loss):
            raise Diverged(f"non-finite distillation loss ({loss.item()}) at epoch {epoch}")
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        optimizer.step()
        scheduler.step()
        method.after_distill_step(batch, losses)
        # Detached tensors, summed on the device: one host sync a step (the finiteness
        # check), not one per logged loss term.
        return {k: v.detach() for k, v in losses.items()}

    epoch = start_epoch
    try:
        for epoch in range(start_epoch, cfg.epochs):
            record: dict[str, Any] = {"event": "epoch", "epoch": epoch}
            if cls.mode == POOL:
                with clock.phase("synthesis"):
                    student.eval()
                    with autocast():
                        batch, logs = method.synthesize(epoch)
                    pool.add(batch.images, batch.labels, batch.meta)
                record.update({f"synth_{k}": float(v) for k, v in logs.items()})
                record["pool_size"] = len(pool)
            if cls.mode == ONLINE and epoch < cfg.warmup_epochs:
                # An online method's warm-up trains its generator alone, step for step.
                sums: dict[str, float] = {}
                with clock.phase("synthesis"):
                    student.eval()
                    for _ in range(steps):
                        with autocast():
                            logs = method.warmup_step(epoch)
                        add_logs(sums, logs, "synth_")
                record.update({k: v / steps for k, v in sums.items()})
            if epoch >= cfg.warmup_epochs:
                sums = {}
                for _ in range(steps):
                    if cls.mode == ONLINE:
                        with clock.phase("synthesis"):
                            student.eval()
                            with autocast():
                                batch, logs = method.synthesize(epoch)
                        add_logs(sums, logs, "synth_")
                    with clock.phase("distillation"):
                        student.train()
                        if cls.mode == POOL:
                            images, labels, meta = pool.sample(cfg.batch_size, **method.sample_options(epoch))
                            batch = Batch(augment(images), labels, meta)
                        elif cls.mode == REAL:
                            images, labels = real.sample(cfg.batch_size)
                            batch = Batch(augment(normalizer.from_uint8(images)), labels)
                        for k, v in student_step(batch).items():
                            sums[k] = sums.get(k, 0.0) + v
                record.update({k: float(v) / steps for k, v in sums.items()})
                record["lr"] = scheduler.get_last_lr()[0]
            last = epoch == cfg.epochs - 1
            # a warm-up epoch leaves the student as it was: nothing new to evaluate
            if last or (epoch >= cfg.warmup_epochs and (epoch + 1) % max(1, cfg.eval_every) == 0):
                with clock.phase("evaluation"), counter.pause():
                    final = evaluate_top1(student, data.test_images, data.test_labels, normalizer)
                best = final if best is None else max(best, final)
                record["top1"] = final
            with clock.phase("other"):
                record.update({"seconds_" + k: v for k, v in clock.seconds.items()})
                state = {
                    "epoch": epoch, "student": student.state_dict(), "optimizer": optimizer.state_dict(),
                    "scheduler": scheduler.state_dict(), "method": method.state_dict(),
                    "pool": pool.state_dict() if pool is not None else None,
                    "real_perm": real._perm if real else None, "real_pos": real._pos if real else 0,
                    "clock": clock.state_dict(), "counter": counter.state_dict(), "rng": rng_state(),
                    "best": best, "final": final, "started": history_started,
                }
                rundir.save_checkpoint(state)
                rundir.append_metrics(record)
                summary("running", epochs_done=epoch + 1)
            emit("epoch", {"epoch": epoch, "top1": record.get("top1"), "loss": record.get("loss")})
    except Diverged as exc:
        result = summary("failed", str(exc), epochs_done=epoch)
        emit("failed", {"reason": str(exc)})
        return result
    except KeyboardInterrupt as exc:
        how = "SIGTERM" if isinstance(exc, Terminated) else "Ctrl-C"
        summary("interrupted", f"interrupted ({how}) during epoch {epoch}; re-run the same command to resume",
                epochs_done=epoch)
        raise
    except UserError:
        raise
    except Exception as exc:
        summary("failed", f"{type(exc).__name__}: {exc}", epochs_done=epoch)
        raise
    result = summary("completed", epochs_done=cfg.epochs)
    emit("done", {"summary": result})
    return result
