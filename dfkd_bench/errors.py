"""Errors for users (one line, exit code 2) as opposed to errors for programmers."""
from __future__ import annotations

import errno


class UserError(Exception):
    """Bad input from the user: the CLI prints the message on one line and exits with 2."""


class Diverged(RuntimeError):
    """A method produced a non-finite loss; the run is recorded as failed."""


class Terminated(KeyboardInterrupt):
    """SIGTERM (``kill``, a batch scheduler's time limit) while the CLI runs: handled like
    Ctrl-C, so the run is recorded as interrupted and resumes on the next call."""


class NoSpaceLeft(OSError):
    """A write failed because its disk (or the user's quota there) is full; the file it
    replaces is intact. An ``OSError`` with ``errno`` ENOSPC whose text names the folder,
    not torch's ``unexpected pos 832 vs 726``."""

    def __init__(self, message: str):
        super().__init__(errno.ENOSPC, message)
        self.message = message

    def __str__(self) -> str:
        return self.message


class RunLocked(Exception):
    """Another process holds the run directory's lock; the run was skipped."""


def interruption(exc: BaseException) -> str | None:
    """How ``exc`` stopped a run when it is an interruption, not a failure (the run keeps
    its checkpoint and resumes), else None: Ctrl-C, SIGTERM, and a Slurm job's
    preemption or time limit as submitit delivers them (its handler checkpoints and
    requeues with ``SystemExit``, or raises ``UncompletedJobError`` when it will not
    requeue, e.g. after ``max_num_timeout`` time limits). Named, not imported: submitit
    is an optional extra."""
    if isinstance(exc, Terminated):
        return "SIGTERM"
    if isinstance(exc, KeyboardInterrupt):
        return "Ctrl-C"
    if isinstance(exc, SystemExit):
        return "the job's exit on preemption or time limit"
    kind = type(exc)
    if kind.__name__ == "UncompletedJobError" and kind.__module__.startswith("submitit"):
        return f"the job was not requeued: {str(exc).splitlines()[0] if str(exc) else 'submitit'}"
    return None
