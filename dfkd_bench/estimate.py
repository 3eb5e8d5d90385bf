"""What a GPU-scale pair costs on this machine's CPU, measured before the long work starts
(issue 33: a newcomer's `dfkd-bench run --pair resnet34-resnet18` on a laptop trained a
teacher for hours behind one line and a ticking timer).

The estimate times the pair's own steps here, at the run's batch sizes (a forward and
backward of the teacher at the teacher recipe's batch; a student step with the teacher's
forward at the KD batch), a few times after one untimed call, and multiplies by the step
counts. It is a lower bound for the run: a method's synthesis (generator or pixel steps
through the teacher) comes on top and is not estimated."""
from __future__ import annotations

import math
import statistics
import time

import torch

from .config import RunConfig
from .models import build_model
from .pairs import Pair

GPU_SCALE = "GPU scale"  # how pairs.py labels the papers' large pairs (`dfkd-bench list`)


PROBE_BATCH = 16  # images a timed call takes; a step's time is scaled from it by the batch


def step_seconds(model: torch.nn.Module, batch: int, image_shape: tuple[int, ...], backward: bool = True,
                 repeats: int = 2) -> float:
    """Seconds of one training step (forward, and backward when ``backward``) of ``model``
    at ``batch`` images: the median of ``repeats`` timed calls on at most
    ``PROBE_BATCH`` random images after one untimed call, scaled linearly to ``batch``
    (a few seconds for a resnet34 on a CPU, where timing the whole batch took a minute;
    small batches run a little less efficiently, so it errs long). The caller's random
    stream is left as it was and the gradients are dropped; a BN layer in train mode
    updates its statistics, so time a throw-away model."""
    probe = min(batch, PROBE_BATCH)
    with torch.random.fork_rng(devices=[]):
        x = torch.randn(probe, *image_shape)
        times = []
        for i in range(repeats + 1):
            start = time.perf_counter()
            with torch.set_grad_enabled(backward):
                out = model(x)
                if backward:
                    out.float().sum().backward()
            if i:
                times.append(time.perf_counter() - start)
        model.zero_grad(set_to_none=True)
    return statistics.median(times) * batch / probe


def human(seconds: float) -> str:
    """``3 min``, ``2.4 h``, ``1.6 days``."""
    if seconds < 120:
        return f"{seconds:.0f} s"
    if seconds < 2 * 3600:
        return f"{seconds / 60:.0f} min"
    if seconds < 48 * 3600:
        return f"{seconds / 3600:.1f} h"
    return f"{seconds / 86400:.1f} days"


def gpu_scale_warning(pair: Pair, num_classes: int, image_shape: tuple[int, ...], train_images: int,
                      run: RunConfig, teacher_epochs: int | None, teacher_batch: int) -> str:
    """One line for a GPU-scale ``pair`` about to run on the CPU: the measured cost of the
    teacher's training (``teacher_epochs`` None: the teacher is in the zoo) and the run's
    distillation steps."""
    with torch.random.fork_rng(devices=[]):
        teacher = build_model(pair.teacher, num_classes, image_shape[0])
        student = build_model(pair.student, num_classes, image_shape[0])
    parts = []
    if teacher_epochs:
        per_epoch = math.ceil(train_images / teacher_batch) * step_seconds(teacher.train(), teacher_batch, image_shape)
        parts.append(f"training its missing {pair.teacher} teacher ({teacher_epochs} epochs) about "
                     f"{human(teacher_epochs * per_epoch)}")
    kd_steps = (run.epochs - run.warmup_epochs) * run.steps_per_epoch()
    kd_step = step_seconds(teacher.eval(), run.batch_size, image_shape, backward=False) + \
        step_seconds(student.train(), run.batch_size, image_shape)
    parts.append(f"the run's {kd_steps:,} student steps at least {human(kd_steps * kd_step)} "
                 "(its synthesis comes on top)")
    return (f"{pair.name} is a GPU-scale pair (`dfkd-bench list`) and this run is on the CPU: measured here, "
            f"{'; '.join(parts)}; a GPU (--device cuda) or a CPU pair (resnet20-resnet8, wrn16_2-wrn16_1) "
            "takes a fraction of that")
