"""Counting the host reads of tensor values that are host-device synchronisations on
CUDA (``.item()``, ``bool()``, ``float()``, ``int()``, ``.tolist()``, ``.numpy()``), on any
device: the same code runs on the CPU path, so the CPU can count what a GPU would wait
for. ``benchmarks/speed.py`` reports the count per KD step and a test bounds it.

Counted as a GPU would see it: every tensor lives on the host on the CPU path, so the
one read known to stay on the host on CUDA too, an optimiser's step counter (torch keeps
``state["step"]`` on the CPU unless ``capturable``, and reads it in
``torch.optim.optimizer._get_value``), is left out; any other read of a host tensor would
still count."""
from __future__ import annotations

import sys
from contextlib import contextmanager
from dataclasses import dataclass, field

import torch
from torch.optim.optimizer import _get_value

READS = ("item", "__bool__", "__float__", "__int__", "tolist", "numpy")
_HOST_STEP_READ = _get_value.__code__


@dataclass
class SyncCount:
    total: int = 0
    by_kind: dict[str, int] = field(default_factory=dict)


@contextmanager
def counting():
    """Within the block, every host read of a tensor's value adds to the ``SyncCount``
    yielded; the tensor methods are restored after."""
    count = SyncCount()
    originals = {name: getattr(torch.Tensor, name) for name in READS}

    def wrap(name, original):
        def read(self, *args, **kwargs):
            if sys._getframe(1).f_code is not _HOST_STEP_READ:
                count.total += 1
                count.by_kind[name] = count.by_kind.get(name, 0) + 1
            return original(self, *args, **kwargs)
        return read

    for name, original in originals.items():
        setattr(torch.Tensor, name, wrap(name, original))
    try:
        yield count
    finally:
        for name, original in originals.items():
            setattr(torch.Tensor, name, original)
