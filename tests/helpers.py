"""Shared test helpers: run specs from a method's ``smoke`` preset, observers that
stop or record a run, and a method context on tiny CPU models."""
from __future__ import annotations

import copy
from typing import Callable

import torch

from dfkd_bench import store
from dfkd_bench.config import RunConfig
from dfkd_bench.data import Normalizer, random_crop_flip
from dfkd_bench.events import RunObserver, StopAfter  # noqa: F401 - the tests import it from here
from dfkd_bench.method import MethodContext
from dfkd_bench.models import build_model
from dfkd_bench.plan import RunSpec, plan_runs
from dfkd_bench.summary import RunSummary


def smoke_spec(method: str, out, seed: int = 0, epochs: int | None = None, preset: str = "smoke",
               **changes) -> RunSpec:
    """One run of ``method`` on the tiny data set with its ``smoke`` preset (its test
    budget), planned like the CLI plans it; ``changes`` are ``--set`` changes."""
    (spec,) = plan_runs([method], dataset="tiny", pair="cnn_s-cnn_s", preset=preset, seeds=[seed], epochs=epochs,
                        device="cpu", sets=changes, out=out)
    return spec


class Recorder(RunObserver):
    """Every event as (name, arguments)."""

    def __init__(self):
        self.events: list[tuple] = []

    def start(self, name, epochs, start_epoch):
        self.events.append(("start", name, epochs, start_epoch))

    def epoch(self, epoch, record):
        self.events.append(("epoch", epoch))

    def skip(self, summary):
        self.events.append(("skip", summary.name))

    def failed(self, summary):
        self.events.append(("failed", summary.reason))

    def done(self, summary):
        self.events.append(("done", summary.status))


def checkpoint(summary: RunSummary, out) -> dict:
    return store.RunDir(out, summary.name).load_checkpoint()


def student_state(summary: RunSummary, out) -> dict:
    return checkpoint(summary, out)["trainer"]["student"]


def same_tensors(a: dict, b: dict) -> bool:
    return a.keys() == b.keys() and all(torch.equal(a[k], b[k]) for k in a)


def method_context(*, classes: int = 4, shape=(1, 8, 8), teacher: str = "cnn_s", student: str = "cnn_s",
                   seed: int = 0, bn_input: Callable[[tuple], torch.Tensor] | None = None,
                   student_seed: int | None = None, student_is_teacher_copy: bool = False,
                   mean=(0.35,), std=(0.3,), crop_padding: int | None = None, student_mode: str = "eval",
                   **run_changes) -> MethodContext:
    """A method context on tiny CPU models: a teacher (seeded, frozen, eval mode) whose
    BN running statistics come from three train-mode passes over ``bn_input(shape)``
    (none when ``bn_input`` is None), and a student (seeded by ``student_seed`` when
    given, or a copy of the teacher)."""
    torch.manual_seed(seed)
    t = build_model(teacher, classes, shape[0])
    if bn_input is not None:
        t.train()
        with torch.no_grad():
            for _ in range(3):
                t(bn_input(shape))
    t.eval().requires_grad_(False)
    if student_is_teacher_copy:
        s = copy.deepcopy(t).requires_grad_(True)
    else:
        if student_seed is not None:
            torch.manual_seed(student_seed)
        s = build_model(student, classes, shape[0])
    s.train(student_mode == "train")
    augment = (lambda x: x) if crop_padding is None else (lambda x: random_crop_flip(x, crop_padding, False))
    return MethodContext(teacher=t, student=s, num_classes=classes, image_shape=tuple(shape),
                         normalizer=Normalizer(mean, std), device=torch.device("cpu"),
                         run=RunConfig(device="cpu", **run_changes), augment=augment)
