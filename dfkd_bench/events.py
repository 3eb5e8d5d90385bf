"""What a run tells the outside while it goes: typed hooks on an observer, each a
no-op here. The CLI draws its progress bars from them, benchmark scripts print from
them, tests stop a run from them; the harness never imports a display."""
from __future__ import annotations

from .summary import RunSummary


class RunObserver:
    def message(self, text: str) -> None:
        """Something the user should know now (a missing teacher being trained)."""

    def data_progress(self, title: str, done: int, total: int) -> None:
        """Images decoded so far while a data set is read for the first time."""

    def teacher_progress(self, arch: str, epochs: int):
        """A missing teacher is about to be trained for ``epochs`` epochs: the callable
        ``teachers.train_teacher`` reports its progress to (``(event, info)``), or None."""
        return None

    def start(self, name: str, epochs: int, start_epoch: int) -> None:
        """The run begins, or resumes at ``start_epoch`` > 0."""

    def epoch(self, epoch: int, record: dict) -> None:
        """Epoch ``epoch`` is done and checkpointed; ``record`` is its metrics line."""

    def skip(self, summary: RunSummary) -> None:
        """The run had completed before; nothing was run."""

    def failed(self, summary: RunSummary) -> None:
        """The run ended as failed (its reason in ``summary.reason``)."""

    def done(self, summary: RunSummary) -> None:
        """The run completed."""


class StopAfter(RunObserver):
    """Raises KeyboardInterrupt (as Ctrl-C would) once epoch ``epoch`` is checkpointed:
    a stopped run for the resume checks of the tests and ``benchmarks/gpu_check.py``."""

    def __init__(self, epoch: int):
        self.at = epoch

    def epoch(self, epoch: int, record: dict) -> None:
        if epoch == self.at:
            raise KeyboardInterrupt
