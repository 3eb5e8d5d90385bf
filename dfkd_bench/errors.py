"""Errors for users (one line, exit code 2) as opposed to errors for programmers."""


class UserError(Exception):
    """Bad input from the user: the CLI prints the message on one line and exits with 2."""


class Diverged(RuntimeError):
    """A method produced a non-finite loss; the run is recorded as failed."""


class Terminated(KeyboardInterrupt):
    """SIGTERM (``kill``, a batch scheduler's time limit) while the CLI runs: handled like
    Ctrl-C, so the run is recorded as interrupted and resumes on the next call."""


class RunLocked(Exception):
    """Another process holds the run directory's lock; the run was skipped."""
