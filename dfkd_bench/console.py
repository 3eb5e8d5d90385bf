"""The one console (stdout), error console (stderr) and progress bar of the command
line, and the observer that draws a run's progress on that bar."""
from __future__ import annotations

import statistics
import sys

from rich.console import Console
from rich.markup import escape
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn

from .errors import UserError
from .estimate import human
from .events import RunObserver
from .summary import RunSummary

# Piped output (CI logs, files) gets a table wide enough to read instead of rich's 80.
console = Console(width=None if sys.stdout.isatty() else 140)
err_console = Console(stderr=True, width=None if sys.stderr.isatty() else 200)


class Bar(Progress):
    """A progress display that leaves its last state on screen, unless a ``UserError``
    ends it: then it is cleared, so the one-line error stands alone (no ``runs 0/1``
    above it)."""

    cleared = False

    def __exit__(self, exc_type, exc_val, exc_tb):
        if exc_type is not None and issubclass(exc_type, UserError):
            self.cleared = self.live.transient = True
        return super().__exit__(exc_type, exc_val, exc_tb)

    def stop(self) -> None:
        if not self.cleared:
            super().stop()
        elif not self.disable:
            self.live.stop()  # and not the blank line rich ends a log's display with


def progress_bar(on: Console = console) -> Progress:
    """The bar every long job shows: description, bar, n/total, an ``info`` field, time."""
    return Bar(TextColumn("{task.description}"), BarColumn(), MofNCompleteColumn(),
               TextColumn("{task.fields[info]}"), TimeElapsedColumn(), console=on, transient=False)


class TeacherProgress:
    """A teacher's training on ``bar`` (``teachers train``, and a missing teacher trained
    inside ``run`` or ``sweep``): an epochs task and a steps task, and a line an epoch
    with the time left at this process's median epoch time."""

    def __init__(self, bar: Progress, arch: str, epochs: int, state: str = "", prefix: str = ""):
        self.bar, self.total, self.state, self.prefix = bar, epochs, state, prefix
        self.epochs = bar.add_task(f"  {prefix}epochs", total=epochs, info=f"training {arch}")
        self.steps = bar.add_task(f"  {prefix}  steps", total=1, info="")
        self.seconds: list[float] = []
        self.metric = "top-1"  # the task's main metric, as the "start" event names it

    def __call__(self, event: str, info: dict) -> None:
        if event == "start":
            self.metric = info.get("metric", self.metric)
            if info["resumed_epochs"]:
                where = f" from {self.state}" if self.state else ""
                self.bar.console.print(f"{self.prefix}resuming{where}: {info['resumed_epochs']}/{self.total} "
                                       "epochs done", highlight=False)
                self.bar.update(self.epochs, completed=info["resumed_epochs"])
            self.bar.update(self.steps, total=info["steps"], completed=0)
        elif event == "step":
            self.bar.update(self.steps, completed=info["step"])
        elif event == "epoch":
            self.seconds.append(info["seconds"] + info.get("eval_seconds", 0.0))
            left = (self.total - info["epoch"] - 1) * statistics.median(self.seconds)
            test = f", test {self.metric} {info['top1']:.2f}%" if "top1" in info else ""
            eta = f", about {human(left)} left" if left > 0 else ""
            self.bar.console.print(
                f"{self.prefix}epoch {info['epoch'] + 1}/{self.total}: loss {info['loss']:.4f}, train {self.metric} "
                f"{info['train_top1']:.2f}%{test}, lr {info['lr']:.4g}, {info['seconds']:.0f} s{eta}",
                highlight=False)
            self.bar.update(self.epochs, completed=info["epoch"] + 1, info=(test.lstrip(", ") + eta).lstrip(", "))


class DataProgress(RunObserver):
    """Decode progress of a data set read for the first time, as tasks on ``bar``."""

    def __init__(self, bar: Progress):
        self.bar = bar
        self._tasks: dict[str, int] = {}

    def data_progress(self, title: str, done: int, total: int) -> None:
        if title not in self._tasks:
            self._tasks[title] = self.bar.add_task(f"  {title}", total=total, info="")
        self.bar.update(self._tasks[title], completed=done)

    def message(self, text: str) -> None:
        self.bar.console.print(f"[yellow]{escape(text)}", highlight=False)

    def teacher_progress(self, arch: str, epochs: int) -> TeacherProgress:
        return TeacherProgress(self.bar, arch, epochs, prefix=f"{arch} teacher ")


class RunDisplay(DataProgress):
    """One run's line on the bar: epochs done, top-1 or what became of it."""

    def __init__(self, bar: Progress, label: str, epochs: int, metric: str = "top-1"):
        super().__init__(bar)
        self.task = bar.add_task(f"  {label}", total=epochs, info="")
        self.metric = metric  # the task's main metric (top-1, mIoU)

    def start(self, name: str, epochs: int, start_epoch: int) -> None:
        # said until the first epoch ends, or the run does (a resume with no epoch left)
        self.bar.update(self.task, completed=start_epoch, info=f"resumed at epoch {start_epoch}" if start_epoch else "")

    def epoch(self, epoch: int, record: dict) -> None:
        top1 = record.get("top1")
        self.bar.update(self.task, completed=epoch + 1, info="" if top1 is None else f"{self.metric} {top1:.2f}%")

    def skip(self, summary: RunSummary) -> None:
        self.bar.update(self.task, completed=summary.epochs, info="already completed (use --force to redo)")

    def failed(self, summary: RunSummary) -> None:
        self.stopped(f"failed: {summary.reason}")

    def done(self, summary: RunSummary) -> None:
        top1 = summary.final_top1
        self.bar.update(self.task, completed=summary.epochs, info="completed" if top1 is None else f"{self.metric} {top1:.2f}%")

    def stopped(self, why: str) -> None:
        """The run ended without completing (an error the harness raised, a lock)."""
        self.bar.update(self.task, info=f"[red]{escape(why)}")
