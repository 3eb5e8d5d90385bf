"""The typed run summary: what ``summary.json`` holds, read and written in one place.

The store writes it, the CLI's table, the report and the benchmark scripts read it
through this class; nobody indexes the JSON by string keys. The JSON layout is flat (the
per-model cost counters are top-level keys such as ``student_forward_images``), as
written since the first release, so older summaries load too.
"""
from __future__ import annotations

import dataclasses
from dataclasses import dataclass, fields
from typing import Any

from .timing import TRAIN_PHASES

COST_SUFFIXES = ("_flops_per_image", "_forward_images", "_backward_images", "_cached_images", "_cached_seconds")


@dataclass
class RunSummary:
    status: str  # running | completed | failed | interrupted
    reason: str
    name: str  # the run directory's name
    method: str
    preset: str | None
    dataset: str
    pair: str
    teacher: str
    student: str
    seed: int
    data_scale: int
    epochs: int
    epochs_done: int
    steps_per_epoch: int
    final_top1: float | None
    best_top1: float | None
    teacher_top1: float | None
    seconds: dict[str, float]  # per phase: synthesis, distillation, evaluation, checkpoint
    costs: dict[str, int]  # <model>_flops_per_image, <model>_forward_images, <model>_backward_images
    training_flops: int
    peak_memory_mb: float
    device: str
    started: str
    updated: str
    # What a table must say about the run beyond its preset (DDA: which augmentation).
    variant: str = ""
    precision: str = ""  # fp32 | bf16: what the run computed in ("" in summaries before issue 16: fp32)
    peak_reserved_mb: float | None = None  # CUDA: the allocator's peak reserved memory (None on the CPU)
    # The task's main metric that final_top1, best_top1 and teacher_top1 hold: "top-1"
    # (classification; also what a summary without the field means) or "mIoU" (segmentation).
    metric: str = "top-1"
    skipped: bool = False  # set when a completed run was read back instead of run

    @property
    def label(self) -> str:
        """The method as a table shows it: ``method`` or ``method-preset``, with its
        variant in brackets where the method names one (``dda-cpu [RandAugment]``)."""
        return run_label(self.method, self.preset) + (f" [{self.variant}]" if self.variant else "")

    @property
    def train_seconds(self) -> float:
        return sum(self.seconds.get(p, 0.0) for p in TRAIN_PHASES)

    @property
    def total_seconds(self) -> float:
        return sum(self.seconds.values())

    @property
    def completed(self) -> bool:
        return self.status == "completed"

    def to_json(self) -> dict[str, Any]:
        out = {f.name: getattr(self, f.name) for f in fields(self) if f.name not in ("costs", "skipped")}
        out.update(self.costs)
        out.update(label=self.label, train_seconds=self.train_seconds, total_seconds=self.total_seconds)
        return out

    @classmethod
    def from_json(cls, data: dict[str, Any]) -> "RunSummary":
        """A summary from its JSON object (``KeyError``/``TypeError`` if it is not one).
        Summaries written before the checkpoint phase had its name call it ``other``; keys
        this version does not know are ignored."""
        names = {f.name for f in fields(cls)} - {"costs", "skipped"}
        seconds = dict(data["seconds"])
        if "other" in seconds:
            seconds["checkpoint"] = seconds.pop("other")
        costs = {k: v for k, v in data.items() if k.endswith(COST_SUFFIXES)}
        kwargs = {k: data[k] for k in names if k in data}
        return cls(**{**kwargs, "seconds": seconds}, costs=costs)

    def replace(self, **changes) -> "RunSummary":
        return dataclasses.replace(self, **changes)

    def row(self) -> dict[str, Any]:
        """A flat record for tables: the JSON keys plus ``seconds_<phase>``."""
        flat = {k: v for k, v in self.to_json().items() if not isinstance(v, dict)}
        flat.update({f"seconds_{k}": v for k, v in self.seconds.items()}, skipped=self.skipped)
        return flat


def run_label(method: str, preset: str | None) -> str:
    return method + (f"-{preset}" if preset else "")
