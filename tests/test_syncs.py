"""Issue 32, item 2: host-device synchronisations per KD step, counted on the CPU path
(which runs the same code as CUDA) as the reads a GPU would wait for, by the marginal
method: a run with twice the KD steps an epoch minus a run with the steps, over the
steps added, so per-epoch reads (logs, the checkpoint) cancel out."""
from __future__ import annotations

import pytest
import torch

from dfkd_bench import harness, syncs
from dfkd_bench.timing import PhaseClock
from tests.helpers import smoke_spec

EPOCHS, STEPS = 2, 3


def reads_and_steps(method: str, double: bool, out) -> tuple[int, int]:
    """(reads, KD steps) of a short run; ``double``: twice the KD steps an epoch (twice the
    passes where a data scale sets the steps)."""
    spec = smoke_spec(method, out, epochs=EPOCHS, warmup_epochs=0, eval_every=EPOCHS)
    key = "kd_passes" if spec.run.data_scale else "kd_steps"
    base = spec.run.kd_passes if spec.run.data_scale else STEPS
    spec = smoke_spec(method, out, epochs=EPOCHS, warmup_epochs=0, eval_every=EPOCHS,
                      **{key: base * (2 if double else 1)})
    with syncs.counting() as count:
        harness.run(spec)
    return count.total, EPOCHS * spec.run.steps_per_epoch()


def per_kd_step(method: str, tmp_path) -> float:
    (r1, s1), (r2, s2) = reads_and_steps(method, False, tmp_path / "a"), reads_and_steps(method, True, tmp_path / "b")
    assert s2 > s1
    return (r2 - r1) / (s2 - s1)


@pytest.mark.parametrize("method", ["deepinv", "fast", "ssdkd", "cmi", "dda"])
def test_a_pool_feed_kd_step_reads_the_device_at_most_once(tiny_zoo, tmp_path, method):
    # the one read left: the loss's finiteness, checked every step so a NaN never reaches the
    # optimiser (before issue 32 also: a CPU randperm and three crop/flip draws copied over,
    # and two synchronises from a clock phase around the step)
    assert per_kd_step(method, tmp_path) <= 1


@pytest.mark.parametrize("method", ["dafl", "dfad", "zskt", "dfq"])
def test_an_online_feed_kd_step_reads_the_device_at_most_once(tiny_zoo, tmp_path, method):
    # a generator step every KD step: its loss terms stay on the device, summed there and read
    # once an epoch (before: one read a generator step, converting them to floats)
    assert per_kd_step(method, tmp_path) <= 1


def test_the_counter_leaves_out_only_the_optimisers_host_step_counter():
    w = torch.nn.Parameter(torch.ones(3))
    opt = torch.optim.Adam([w])
    with syncs.counting() as count:
        w.sum().backward()
        opt.step()  # Adam reads state["step"], a CPU tensor on CUDA too (not capturable)
    assert count.total == 0
    with syncs.counting() as count:
        opt.state[w]["step"].item()  # the same tensor read by anyone else counts
    assert count.total == 1


def test_the_counter_counts_reads_and_restores_the_tensor_methods():
    x = torch.ones(3)
    with syncs.counting() as count:
        x.sum().item()
        bool(x.all())
        float(x[0])
        x.tolist()
    assert count.total == 4 and count.by_kind == {"item": 1, "__bool__": 1, "__float__": 1, "tolist": 1}
    assert torch.Tensor.item.__name__ == "item"


def test_the_cuda_clock_records_events_and_synchronises_once_when_read(monkeypatch):
    """The clock's CUDA branch without a GPU: events and synchronise are stand-ins that
    count, with a fake timeline of 1 ms an event."""
    made, synced = [], []

    class Event:
        def __init__(self, enable_timing=False):
            self.t = None

        def record(self):
            self.t = len(made)
            made.append(self)

        def elapsed_time(self, end):
            return float(end.t - self.t)

    monkeypatch.setattr(torch.cuda, "Event", Event)
    monkeypatch.setattr(torch.cuda, "synchronize", lambda *a: synced.append(1))
    clock = PhaseClock(torch.device("cuda"))
    for _ in range(100):
        with clock.phase("distillation"):
            with clock.phase("synthesis"):
                pass
    assert not synced and len(made) == 400  # four edges a step, no synchronise
    seconds = clock.seconds
    # 2 ms of distillation and 1 of synthesis a step; the gap between steps is in no phase
    assert synced == [1] and seconds["distillation"] == pytest.approx(0.2) and seconds["synthesis"] == pytest.approx(0.1)
    assert clock.seconds["synthesis"] == pytest.approx(0.1) and synced == [1]  # read again: nothing pending
