from __future__ import annotations

import os
import sys
from pathlib import Path

import pytest
import torch

ROOT = Path(__file__).resolve().parents[1]
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))

from dfkd_bench.registry import discover_methods  # noqa: E402

discover_methods()
# Two threads, as on the CI machine; DFKD_TEST_THREADS=1 for a suite pinned to one core
# beside other work (two threads on one core are pathologically slow).
torch.set_num_threads(int(os.environ.get("DFKD_TEST_THREADS", "2")))


@pytest.fixture()
def cache(tmp_path, monkeypatch):
    """An empty teacher/data cache for the test, via the environment variable."""
    path = tmp_path / "cache"
    monkeypatch.setenv("DFKD_BENCH_CACHE", str(path))
    return path


def save_random_tiny_teacher(head_scale: float = 1.0) -> None:
    """A random (untrained) cnn_s teacher for the ``tiny`` data set into the zoo: BN
    running statistics come from a few train-mode passes over random inputs so the
    BN-statistics loss has something real to match; ``head_scale`` multiplies its last
    layer's weights."""
    from dfkd_bench.models import build_model
    from dfkd_bench.teachers import save_teacher
    from tests.plugins import tiny  # noqa: F401  (registers the tiny data set)

    torch.manual_seed(0)
    teacher = build_model("cnn_s", 4, 1)
    teacher.fc.weight.data *= head_scale
    teacher.train()
    with torch.no_grad():
        for _ in range(3):
            teacher(torch.randn(16, 1, 8, 8))
    note = "random test teacher" + (f", head x{head_scale:g}" if head_scale != 1 else "")
    save_teacher(teacher, "tiny", "cnn_s", top1=25.0, recipe={"note": note})


@pytest.fixture()
def tiny_zoo(cache):
    """The ``tiny`` data set with a random (untrained) cnn_s teacher in the zoo."""
    save_random_tiny_teacher()
    return cache
