"""The inversion-distillation loop: epochs of synthesize -> distill -> evaluate, on one
clock, with a checkpoint each epoch so an interrupted run resumes where it stopped.

A ``Session`` holds one run's components (student trainer, method, feed, clock, cost
counter, random state, progress); each owns its state, and a checkpoint is their
``state_dict``s side by side, so what is saved and what is restored cannot drift apart.
``run`` is the page that drives it.
"""
from __future__ import annotations

import dataclasses
import datetime as dt
import math
import random
import re
from contextlib import contextmanager
from dataclasses import dataclass
from typing import Any

import numpy as np
import torch
from torch import nn

from . import backends, diagnostics, store
from .config import resolve_device, run_identity, to_dict
from .data import Normalizer, format_normalization, load_dataset, random_crop_flip
from .errors import Diverged, UserError, interruption
from .estimate import GPU_SCALE, gpu_scale_warning
from .events import RunObserver
from .feeds import FeedEnv, add_logs, make_feed
from .method import Batch, Method, MethodContext
from .models import build_model
from .paths import cache_dir
from .precision import RESOLVED_PRECISIONS, FastPath
from .precision import resolve as resolve_precision
from .pairs import resolve_pair
from .plan import RunSpec
from .summary import RunSummary
from .tasks import get_task
from .teachers import TrainRecipe, evaluator_for, get_or_train_teacher, teacher_normalization, teacher_paths
from .timing import CostCounter, PhaseClock

CHECKPOINT_FORMAT = 2  # 1: before issue 10 (no "format" key; pool images inside the checkpoint)


def seed_everything(seed: int) -> None:
    random.seed(seed)
    np.random.seed(seed)
    torch.manual_seed(seed)


class GlobalRng:
    """The process-wide random states (Python, NumPy, torch CPU and CUDA) as a component."""

    def state_dict(self) -> dict:
        state = {"torch": torch.get_rng_state(), "numpy": np.random.get_state()[1].tolist(),
                 "numpy_pos": int(np.random.get_state()[2]), "python": list(random.getstate()[1])}
        if torch.cuda.is_available():
            state["cuda"] = torch.cuda.get_rng_state_all()
        return state

    def load_state_dict(self, state: dict) -> None:
        torch.set_rng_state(state["torch"])
        np.random.set_state(("MT19937", np.array(state["numpy"], dtype=np.uint32), state["numpy_pos"], 0, 0.0))
        random.setstate((3, tuple(state["python"]), None))
        if "cuda" in state and torch.cuda.is_available():
            torch.cuda.set_rng_state_all(state["cuda"])


@dataclass
class RunProgress:
    """Where the run is: the last finished epoch, its accuracies, when it started."""

    epoch: int = -1
    best: float | None = None
    final: float | None = None
    started: str = ""

    def state_dict(self) -> dict:
        return dataclasses.asdict(self)

    def load_state_dict(self, state: dict) -> None:
        for k, v in state.items():
            setattr(self, k, v)


# The reference scripts' schedule (``run.lr_schedule="reference"``): a cosine stepped once a
# distillation epoch over 200 epochs to 2e-4, whatever the run's length (Fast-Datafree's
# CosineAnnealingLR(optimizer, 200, eta_min=2e-4)). Their runs end at epoch 200; a longer run
# holds 2e-4 where theirs would have turned back up.
REFERENCE_COSINE_EPOCHS, REFERENCE_ETA_MIN = 200, 2e-4


def reference_lr_factor(distill_epoch: int, lr: float) -> float:
    """The reference schedule's learning rate in a run's ``distill_epoch``-th distillation
    epoch (0 first), as a multiple of the initial ``lr``."""
    progress = min(distill_epoch, REFERENCE_COSINE_EPOCHS) / REFERENCE_COSINE_EPOCHS
    return (REFERENCE_ETA_MIN + (lr - REFERENCE_ETA_MIN) * (1 + math.cos(math.pi * progress)) / 2) / lr


class StudentTrainer:
    """The student with its SGD optimiser and schedule (``run.lr_schedule``): one step
    from the loss terms a method returns. The method's ``student_modules`` (heads trained
    with the student) share the optimiser, the schedule, the train mode and the checkpoint."""

    def __init__(self, student: torch.nn.Module, method: Method, steps_total: int, autocast, scaler=None):
        cfg = method.ctx.run
        self.student, self.method, self.autocast = student, method, autocast
        # fp16 (precision.FastPath.fp16): the loss is scaled so small gradients survive fp16, and
        # a step whose gradients overflowed is skipped (the scale then halves).
        self.scaler = scaler
        self.extra = nn.ModuleDict(method.student_modules()).to(method.ctx.device)
        self.optimizer = torch.optim.SGD([*student.parameters(), *self.extra.parameters()], lr=cfg.lr,
                                         momentum=cfg.momentum, weight_decay=cfg.weight_decay)
        self.per_epoch = cfg.lr_schedule == "reference"
        if self.per_epoch:
            self.scheduler = torch.optim.lr_scheduler.LambdaLR(
                self.optimizer, lambda k: reference_lr_factor(k, cfg.lr))
        else:  # a per-step cosine to 0 over the run's actual distillation steps
            self.scheduler = torch.optim.lr_scheduler.CosineAnnealingLR(self.optimizer, T_max=max(1, steps_total))

    def step(self, batch: Batch, epoch: int) -> dict[str, torch.Tensor]:
        # The per-epoch schedule is brought to this distillation epoch before its first step
        # (the scheduler's own count, so a resumed run needs no state of its own)
        while self.per_epoch and self.scheduler.last_epoch < epoch - self.method.ctx.run.warmup_epochs:
            self.scheduler.step()
        self.student.train()
        self.extra.train()
        # the models are channels_last (precision.FastPath); a batch in NCHW would make every
        # convolution convert it first
        batch.images = self.method.ctx.fast_path.images(batch.images)
        with self.autocast("distillation"):
            losses = self.method.distill_loss(batch)
        loss = losses["loss"]
        if not torch.isfinite(loss):
            raise Diverged(f"non-finite distillation loss ({loss.item()}) at epoch {epoch}")
        self.optimizer.zero_grad(set_to_none=True)
        if self.scaler is None:
            loss.backward()
            self.optimizer.step()
        else:
            self.scaler.scale(loss).backward()
            self.scaler.step(self.optimizer)
            self.scaler.update()
        if not self.per_epoch:
            self.scheduler.step()
        self.method.after_distill_step(batch, losses)
        # Detached tensors, summed on the device: one host sync a step (the finiteness
        # check), not one per logged loss term.
        return {k: v.detach() for k, v in losses.items()}

    @property
    def lr(self) -> float:
        return self.scheduler.get_last_lr()[0]

    def state_dict(self) -> dict:
        state = {"student": self.student.state_dict(), "optimizer": self.optimizer.state_dict(),
                 "scheduler": self.scheduler.state_dict()}
        if len(self.extra):
            state["modules"] = self.extra.state_dict()
        if self.scaler is not None:
            state["scaler"] = self.scaler.state_dict()
        return state

    def load_state_dict(self, state: dict) -> None:
        self.student.load_state_dict(state["student"])
        if len(self.extra):
            self.extra.load_state_dict(state["modules"])
        self.optimizer.load_state_dict(state["optimizer"])
        self.scheduler.load_state_dict(state["scheduler"])
        if self.scaler is not None:
            self.scaler.load_state_dict(state["scaler"])


def mutable_snapshot(method: Method) -> dict[str, Any]:
    """Copies of a method's own modules, tensors and numbers (not its config, context or
    hooks), to tell whether any of them changes during an epoch."""
    out: dict[str, Any] = {}
    for name, value in vars(method).items():
        if isinstance(value, nn.Module):
            out[name] = [t.detach().clone() for t in value.state_dict().values()]
        elif torch.is_tensor(value):
            out[name] = value.detach().clone()
        elif isinstance(value, (bool, int, float, str)):
            out[name] = value
    return out


def changed_attributes(before: dict[str, Any], after: dict[str, Any]) -> list[str]:
    def same(a, b):
        if isinstance(a, list):
            return isinstance(b, list) and len(a) == len(b) and all(same(x, y) for x, y in zip(a, b))
        if torch.is_tensor(a):
            return torch.is_tensor(b) and a.shape == b.shape and torch.equal(a, b)
        return a == b
    return sorted(k for k in after if k not in before or not same(before[k], after[k]))


def resolved_config(spec: RunSpec, device: torch.device) -> dict:
    """What a run is: its method, data, models, seed, device and configs, with the
    precision it runs at on ``device`` (``auto`` resolved)."""
    spec = effective_spec(spec, device)
    return identity(spec, device.type, spec.run.precision)


def identity(spec: RunSpec, device_type: str, precision: str) -> dict:
    """``spec``'s resolved config as a machine of ``device_type`` that resolves its
    precision to ``precision`` runs it: what the run's name hashes."""
    run = spec.run if spec.run.precision == precision else dataclasses.replace(spec.run, precision=precision)
    pair = resolve_pair(spec.pair, spec.dataset)
    return {
        "method": spec.method, "preset": spec.preset, "dataset": spec.dataset, "pair": pair.name,
        "teacher": pair.teacher, "student": pair.student, "seed": spec.seed, "device": device_type,
        "run": run_identity(run), "method_config": to_dict(spec.method_config),
    }


@dataclass(frozen=True)
class Target:
    """Where a run executes, resolved there (a compute node, not the login node that
    planned it): the device it computes on, the device type its name and config record
    (the device's own type; a test may present another) and the precision ``auto``
    resolves to on it."""

    device: torch.device
    precision: str
    device_type: str


def resolve_target(spec: RunSpec, say=None) -> Target:
    device = resolve_device(spec.run.device)
    return Target(device, effective_spec(spec, device, say).run.precision, device.type)


def candidate_run_dirs(spec: RunSpec) -> list[store.RunDir]:
    """Every directory ``spec``'s run can have, whatever machine executes it: one per
    device type and precision its settings leave open (``device auto`` is CUDA or the
    CPU, ``precision auto`` any resolved precision), so a login node without a GPU
    finds the runs its compute nodes wrote. Nothing is created."""
    devices = [spec.run.device] if spec.run.device != "auto" else ["cuda", "cpu"]
    precisions = [spec.run.precision] if spec.run.precision != "auto" else list(RESOLVED_PRECISIONS)
    return [store.RunDir(spec.out, run_name(identity(spec, d, p))) for d in devices for p in precisions]


def run_name(resolved: dict) -> str:
    """``dataset__pair__method-preset__nSCALE__sSEED__HASH``: one folder name, whatever
    the user typed (anything but letters, digits, ``.+=-`` becomes ``_``)."""
    scale = resolved["run"]["data_scale"]
    label = resolved["method"] + (f"-{resolved['preset']}" if resolved["preset"] else "")
    parts = [resolved["dataset"], resolved["pair"], label, f"n{scale or 'default'}", f"s{resolved['seed']}"]
    return "__".join(re.sub(r"[^A-Za-z0-9.+=-]", "_", p).lstrip(".") for p in parts) + "__" + \
        store.config_hash(resolved)


def _now() -> str:
    return dt.datetime.now(dt.timezone.utc).isoformat(timespec="seconds")


def upgrade_checkpoint(ckpt: dict) -> dict:
    """A checkpoint in the current layout; one written before issue 10 (format 1: one
    flat dict, the pool's images inside) is mapped onto the session's components."""
    if ckpt.get("format") == CHECKPOINT_FORMAT:
        return ckpt
    if "format" in ckpt or "student" not in ckpt:
        raise UserError(f"checkpoint format {ckpt.get('format')!r} is not one this version reads "
                        f"(format {CHECKPOINT_FORMAT}); re-run with --force to restart the run")
    return {
        "format": CHECKPOINT_FORMAT,
        "trainer": {k: ckpt[k] for k in ("student", "optimizer", "scheduler")},
        "method": ckpt["method"],
        "feed": {"legacy_pool": ckpt.get("pool"), "perm": ckpt.get("real_perm"), "pos": ckpt.get("real_pos", 0)},
        "clock": ckpt["clock"], "counter": ckpt["counter"], "rng": ckpt["rng"],
        "progress": {"epoch": ckpt["epoch"], "best": ckpt["best"], "final": ckpt["final"],
                     "started": ckpt["started"]},
    }


class Session:
    """One run's live state, built from a spec; see the module docstring."""

    def __init__(self, spec: RunSpec, device: torch.device, rundir: store.RunDir, resolved: dict,
                 observer: RunObserver):
        self.spec, self.device, self.rundir, self.resolved, self.observer = spec, device, rundir, resolved, observer
        # This run's peak, not the process's: a sweep worker runs cells one after another.
        backends.reset_peak_memory(device)
        self.peak_before = (0.0, None)  # a resumed run's peaks before the resume (``run`` sets them)
        cfg = spec.run
        if cfg.num_threads:
            torch.set_num_threads(cfg.num_threads)
        self.data = load_dataset(spec.dataset, spec.data_root, spec.download, cache=spec.cache,
                                 progress=observer.data_progress).to(device)
        warn_gpu_scale_on_cpu(spec, self.data, device, observer.message)
        self.teacher, teacher_meta = get_or_train_teacher(self.data, resolved["teacher"], device, spec.cache,
                                                          spec.train_missing_teacher, observer.message,
                                                          observer.teacher_progress)
        seed_everything(spec.seed)
        student = build_model(resolved["student"], self.data.num_classes, self.data.image_shape[0])
        self.fast_path = FastPath(device.type, resolve_precision(cfg.precision, device)[0], cfg.channels_last,
                                  cfg.bf16_phases)
        self.fast_path.prepare(self.teacher.to(device).eval().requires_grad_(False))
        self.fast_path.prepare(student.to(device))
        # Start-up costs (autotuning, lazy kernels) timed apart, before any method hook or
        # cost counter watches the models; ``start`` charges them to the "startup" phase.
        def warm_up() -> float:
            return backends.warm_up_kernels(self.fast_path, self.teacher, student, self.data.image_shape,
                                            getattr(spec.method_config, "synth_batch", None) or cfg.batch_size,
                                            cfg.batch_size, device)

        self.startup_seconds, self.compiled = backends.compiled_start(student, warm_up) if cfg.compile \
            else (warm_up(), "off")
        data = self.data
        mean, std = teacher_normalization(teacher_meta, data)
        self.normalizer = Normalizer(mean, std, device)
        # Which teacher file and input space the run used: part of what makes two runs
        # the same experiment (the report groups by config.json).
        self.resolved = {**resolved, "teacher_sha256": teacher_meta.get("sha256"),
                         "teacher_normalization": format_normalization(mean, std)}
        task = get_task(data.task)
        self.ctx = MethodContext(teacher=self.teacher, student=student, num_classes=data.num_classes,
                                 image_shape=data.image_shape, normalizer=self.normalizer, device=device, run=cfg,
                                 augment=lambda x: random_crop_flip(x, data.crop_padding, data.flip),
                                 fast_path=self.fast_path, task=task,
                                 augment_labelled=lambda x, y: task.crop_flip(x, y, data.crop_padding, data.flip))
        self.method = spec.method_cls(spec.method_config, self.ctx)
        self.counter = CostCounter()
        for name, module in {"teacher": self.teacher, "student": student, **self.method.cost_modules()}.items():
            self.counter.watch(name, module)
        self.clock = PhaseClock(device)
        autocast = self.fast_path.autocast
        self.feed = make_feed(FeedEnv(self.method, self.ctx, self.clock, autocast, data, spec.seed, rundir.shards(),
                                      self.counter, store.ImageCache(cache_dir(spec.cache) / "augmentations")))
        self.steps = self.feed.steps_per_epoch
        scaler = torch.amp.GradScaler(device.type) if self.fast_path.fp16 else None
        self.trainer = StudentTrainer(student, self.method, (cfg.epochs - cfg.warmup_epochs) * self.steps, autocast,
                                      scaler)
        self.progress = RunProgress(started=_now())
        self.failure: RunSummary | None = None
        # A method that keeps no state of its own is watched over its first epoch: if its
        # attributes change, a resumed run would differ from an uninterrupted one.
        stateless = type(self.method).state_dict is Method.state_dict
        self._unsaved_watch = mutable_snapshot(self.method) if stateless else None
        self.evaluator = evaluator_for(data, self.normalizer, self.fast_path)
        self.teacher_top1 = teacher_meta.get("top1")
        if self.teacher_top1 is None:
            self.teacher_top1 = self.evaluator.score(self.teacher)

    def components(self) -> dict[str, Any]:
        """Everything whose state a checkpoint holds (the random state last, so that it
        is taken after every other component has been read)."""
        return {"trainer": self.trainer, "method": self.method, "feed": self.feed, "clock": self.clock,
                "counter": self.counter, "progress": self.progress, "rng": GlobalRng()}

    # --- start and resume -----------------------------------------------------------
    def start(self) -> int:
        """Resume from the checkpoint if there is one; write config and environment.
        Returns the first epoch to run."""
        env = {**store.environment(self.device, self.spec.run.precision), "compiled": self.compiled}
        ckpt = self.rundir.load_checkpoint(warn=self.observer.message)
        if ckpt is not None:
            state = upgrade_checkpoint(ckpt)
            for name, component in self.components().items():
                component.load_state_dict(state[name])
        self.clock.add("startup", self.startup_seconds)  # this process's, added to a resumed run's
        self.rundir.prepare_metrics(self.progress.epoch if ckpt is not None else None, self.observer.message)
        if ckpt is not None:
            # environment.json keeps the machine the run started on; a resume on another
            # machine, commit or thread count is recorded with the resume itself.
            self.rundir.append_metrics({"event": "resume", "epoch": self.progress.epoch, "time": _now(),
                                        "environment": env})
        self.rundir.write_json(store.CONFIG, self.resolved)
        if ckpt is None or not self.rundir.file(store.ENVIRONMENT).exists():
            self.rundir.write_json(store.ENVIRONMENT, env)
        self.write_summary("running")
        return self.progress.epoch + 1

    # --- one epoch --------------------------------------------------------------------
    def train_epoch(self, epoch: int) -> dict[str, Any]:
        """A warm-up epoch (the feed synthesises only) or a distillation epoch."""
        record: dict[str, Any] = {"event": "epoch", "epoch": epoch}
        if epoch < self.spec.run.warmup_epochs:
            record.update(self.feed.warmup_epoch(epoch))
            return record
        record.update(self.feed.start_epoch(epoch))
        sums: dict[str, Any] = {}
        for _ in range(self.steps):
            with self.clock.phase("distillation"):
                batch, logs = self.feed.next_batch(epoch)
                add_logs(sums, logs, "synth_")
                for k, v in self.trainer.step(batch, epoch).items():
                    sums[k] = sums.get(k, 0.0) + v
        record.update({k: float(v) / self.steps for k, v in sums.items()})
        record["lr"] = self.trainer.lr
        return record

    def evaluate_if_due(self, epoch: int, record: dict[str, Any]) -> None:
        """Evaluate after the last epoch and every ``eval_every``-th distillation epoch
        (a warm-up epoch leaves the student as it was: nothing new to evaluate)."""
        cfg = self.spec.run
        due = epoch >= cfg.warmup_epochs and (epoch + 1) % max(1, cfg.eval_every) == 0
        if not (due or epoch == cfg.epochs - 1):
            return
        with self.clock.phase("evaluation"), self.counter.pause():
            top1 = self.evaluator.score(self.ctx.student)
        self.progress.final = top1
        self.progress.best = top1 if self.progress.best is None else max(self.progress.best, top1)
        record["top1"] = top1

    def checkpoint(self, epoch: int, record: dict[str, Any]) -> None:
        """The epoch's record, then the checkpoint: a crash between the two leaves a
        record after the checkpoint's epoch, which the resume drops and makes again."""
        with self.clock.phase("checkpoint"):
            record.update({"seconds_" + k: v for k, v in self.clock.seconds.items()})
            record.update({"cpu_seconds_" + k: v for k, v in self.clock.cpu_seconds.items()})
            self.rundir.append_metrics(record)
            self.progress.epoch = epoch
            try:
                state = {"format": CHECKPOINT_FORMAT, **{k: c.state_dict() for k, c in self.components().items()}}
                self.rundir.save_checkpoint(state)
            except BaseException:
                self.progress.epoch = epoch - 1  # the summary must not claim an epoch no checkpoint holds
                raise
            self.feed.after_checkpoint()
            self.write_summary("running")
        if self._unsaved_watch is not None:
            changed = changed_attributes(self._unsaved_watch, mutable_snapshot(self.method))
            self._unsaved_watch = None
            if changed:
                self.observer.message(
                    f"{self.spec.method}: {', '.join(changed)} changed during the epoch, but the method keeps no "
                    "state (state_dict/load_state_dict); a resumed run will differ from an uninterrupted one")

    # --- the end ----------------------------------------------------------------------
    def write_summary(self, status: str, reason: str = "") -> RunSummary:
        spec, r, p = self.spec, self.resolved, self.progress
        costs = self.counter.summary()
        peak, reserved = backends.peak_memory(self.device)
        peak = max(peak, self.peak_before[0])
        reserved = reserved if self.peak_before[1] is None else max(reserved or 0.0, self.peak_before[1])
        summary = RunSummary(
            status=status, reason=reason, name=self.rundir.path.name, method=spec.method, preset=spec.preset,
            dataset=spec.dataset, pair=r["pair"], teacher=r["teacher"], student=r["student"], seed=spec.seed,
            data_scale=spec.run.data_scale, epochs=spec.run.epochs, epochs_done=p.epoch + 1,
            steps_per_epoch=self.steps, final_top1=p.final, best_top1=p.best, teacher_top1=self.teacher_top1,
            seconds=dict(self.clock.seconds), training_flops=costs.pop("training_flops"), costs=costs,
            peak_memory_mb=round(peak, 1), peak_reserved_mb=None if reserved is None else round(reserved, 1),
            device=r["device"],
            started=p.started, updated=_now(), variant=self.method.variant(), precision=spec.run.precision,
            metric=self.ctx.task.metric)
        self.rundir.write_summary(summary)
        return summary

    @contextmanager
    def recording_failures(self):
        """A diverged method ends the run as failed (the CLI goes on with the next run);
        an interruption (``errors.interruption``: Ctrl-C, SIGTERM, a Slurm preemption or
        time limit) leaves it interrupted and resumable; any other error is recorded as
        failed and raised. ``self.failure`` holds a failed summary."""
        try:
            yield
        except Diverged as exc:
            self.failure = self.write_summary("failed", str(exc))
            self.observer.failed(self.failure)
        except UserError:
            raise
        except BaseException as exc:
            how = interruption(exc)
            if how is not None:
                self.write_summary("interrupted", f"interrupted ({how}) during epoch {self.progress.epoch + 1}; "
                                                  "re-run the same command to resume")
                raise
            if not isinstance(exc, Exception):
                raise
            try:
                self.write_summary("failed", f"{type(exc).__name__}: {exc}".splitlines()[0])
            except OSError:  # a full disk may refuse the summary too; the first error says more
                pass
            raise

    def finish(self) -> RunSummary:
        if self.failure is not None:
            return self.failure
        self.write_diagnostics()
        summary = self.write_summary("completed")
        self.observer.done(summary)
        return summary

    def write_diagnostics(self) -> None:
        """The teacher's view of the final pool for the report (``diagnostics``), timed
        as evaluation and not counted as training cost."""
        images = self.feed.final_samples()
        if images is None or not len(images):
            return
        with self.clock.phase("evaluation"), self.counter.pause():
            arrays = diagnostics.pool_diagnostics(self.teacher, images, self.normalizer, self.data.class_names)
        diagnostics.write(self.rundir.path, arrays, self.data.num_classes)


_SAID: set[str] = set()


def warn_gpu_scale_on_cpu(spec: RunSpec, data, device: torch.device, say) -> None:
    """Before a GPU-scale pair trains or runs on the CPU: what it will cost here, measured
    (``estimate.gpu_scale_warning``), once a process for each pair and data set."""
    pair = resolve_pair(spec.pair, spec.dataset)
    key = f"gpu-scale {pair.name} {data.name}"
    if device.type != "cpu" or GPU_SCALE not in pair.note or key in _SAID:
        return
    _SAID.add(key)
    missing = spec.train_missing_teacher and not teacher_paths(data.name, pair.teacher, spec.cache)[0].exists()
    recipe = TrainRecipe.for_dataset(data.name)
    say(gpu_scale_warning(pair, data.num_classes, data.image_shape, len(data.train_labels), spec.run,
                          recipe.epochs if missing else None, recipe.batch_size))


def effective_spec(spec: RunSpec, device: torch.device, say=None) -> RunSpec:
    """``spec`` with the precision it runs at on ``device`` (``auto`` resolved), so a
    bf16 and an fp32 run are two experiments, in their names and configs alike. Why
    ``auto`` chose fp32, or that an asked-for bf16 is emulated, goes to ``say`` once a
    process."""
    precision, why = resolve_precision(spec.run.precision, device)
    # Said: a fallback to fp32, or a bf16 asked for where it is emulated (not auto's bf16).
    worth_saying = why and (precision in ("fp32", "fp16") or spec.run.precision == "bf16")
    if worth_saying and say is not None and why not in _SAID:
        _SAID.add(why)
        say(why)
    if precision == spec.run.precision:
        return spec
    return dataclasses.replace(spec, run=dataclasses.replace(spec.run, precision=precision))


def run(spec: RunSpec, observer: RunObserver | None = None) -> RunSummary:
    """Run (or resume, or skip if complete) one (config, seed). Returns its summary."""
    observer = observer or RunObserver()
    target = resolve_target(spec, observer.message)
    spec = dataclasses.replace(spec, run=dataclasses.replace(spec.run, precision=target.precision))
    resolved = identity(spec, target.device_type, target.precision)
    rundir = _run_dir(spec.out, resolved)
    rundir.create()
    with rundir.lock(), threads_of(rundir), \
            backends.applied(target.device.type, spec.run.deterministic, spec.run.tf32):  # RunLocked: another writer
        previous, problem = rundir.read_summary()
        if previous is not None and previous.completed and not spec.force:
            observer.skip(previous)
            return previous.replace(skipped=True)
        if problem:
            observer.message(f"{problem}; it will be rewritten")
        if spec.force:
            rundir.reset()
        rundir.clean_temporary()
        session = Session(spec, target.device, rundir, resolved, observer)
        if previous is not None and not spec.force:
            session.peak_before = (previous.peak_memory_mb or 0.0, previous.peak_reserved_mb)
        with session.recording_failures():
            first = session.start()
            observer.start(rundir.path.name, spec.run.epochs, first)
            for epoch in range(first, spec.run.epochs):
                record = session.train_epoch(epoch)
                session.evaluate_if_due(epoch, record)
                session.checkpoint(epoch, record)
                observer.epoch(epoch, record)
        return session.finish()


def run_dir(spec: RunSpec, device: torch.device | None = None, create: bool = True) -> store.RunDir:
    """Where ``spec``'s run lives on ``device`` (default: this machine's), named from
    its resolved config and seed; ``create`` makes (and checks) its results folder."""
    device = device or resolve_device(spec.run.device)
    resolved = resolved_config(spec, device)
    return _run_dir(spec.out, resolved) if create else store.RunDir(spec.out, run_name(resolved))


@contextmanager
def threads_of(rundir: store.RunDir):
    """A resumed run computes with the thread count it started with (its
    environment.json), whatever the process it resumes in would give it: the thread
    count changes a CPU run's numbers, so it is part of the run. The process's own
    count comes back after."""
    recorded = None
    if rundir.file(store.CHECKPOINT).exists() or rundir.file(store.PREVIOUS_CHECKPOINT).exists():
        try:
            recorded = store.read_json(rundir.file(store.ENVIRONMENT)).get("threads")
        except (OSError, ValueError, AttributeError):  # none or unreadable: the start rewrites it
            recorded = None
    before = torch.get_num_threads()
    if isinstance(recorded, int) and recorded > 0 and recorded != before:
        torch.set_num_threads(recorded)
    try:
        yield
    finally:
        if torch.get_num_threads() != before:
            torch.set_num_threads(before)


def _run_dir(out, resolved: dict) -> store.RunDir:
    return store.RunDir(store.ensure_writable_dir(out), run_name(resolved))
