"""Signals as the run store needs them: SIGTERM (``kill``, a scheduler's time limit)
raises ``Terminated`` so a run is recorded as interrupted, like Ctrl-C; a second Ctrl-C
while that is said is ignored; a sweep worker ends when its parent process dies."""
from __future__ import annotations

import multiprocessing
import os
import signal
import threading
from contextlib import contextmanager

from .errors import Terminated


def _raise_terminated(signum, frame):
    raise Terminated()


@contextmanager
def sigterm_as_interrupt():
    """Within the block SIGTERM raises ``Terminated`` (a KeyboardInterrupt), so a run
    stopped by ``kill`` or a scheduler's time limit is recorded as interrupted, like
    Ctrl-C, instead of staying "running"; the previous handler comes back after."""
    if threading.current_thread() is not threading.main_thread():
        yield  # signal handlers can only be set from the main thread
        return
    previous = signal.signal(signal.SIGTERM, _raise_terminated)
    try:
        yield
    finally:
        signal.signal(signal.SIGTERM, previous)


@contextmanager
def ignoring_sigint():
    if threading.current_thread() is not threading.main_thread():
        yield
        return
    previous = signal.signal(signal.SIGINT, signal.SIG_IGN)
    try:
        yield
    finally:
        signal.signal(signal.SIGINT, previous)


def terminate_with_parent() -> bool:
    """In a ``multiprocessing`` child: send this process SIGTERM as soon as its parent
    dies, ``kill -9`` included (the parent's end of the pipe ``parent_process`` waits
    on closes with it), so a worker never outlives the sweep that started it. With
    ``sigterm_as_interrupt`` the cell in hand is recorded as interrupted and resumes
    from its last checkpoint. Returns False outside a multiprocessing child."""
    parent = multiprocessing.parent_process()
    if parent is None:
        return False

    def watch() -> None:
        parent.join()
        os.kill(os.getpid(), signal.SIGTERM)

    threading.Thread(target=watch, name="parent-watch", daemon=True).start()
    return True
