"""Where the project keeps its user-level cache (teachers, decoded data sets)."""
from __future__ import annotations

import os
from pathlib import Path

CACHE_ENV = "DFKD_BENCH_CACHE"
DATA_ENV = "DFKD_BENCH_DATA"


def cache_dir(override: str | os.PathLike | None = None) -> Path:
    """``override`` (a flag) beats ``$DFKD_BENCH_CACHE`` beats ``~/.cache/dfkd-bench``."""
    if override:
        return Path(override).expanduser()
    if os.environ.get(CACHE_ENV):
        return Path(os.environ[CACHE_ENV]).expanduser()
    base = os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache"
    return Path(base) / "dfkd-bench"


def data_dir(override: str | os.PathLike | None = None) -> Path:
    """Root under which named data sets live (``<root>/cifar10`` ...)."""
    if override:
        return Path(override).expanduser()
    if os.environ.get(DATA_ENV):
        return Path(os.environ[DATA_ENV]).expanduser()
    return cache_dir() / "data"
