"""Issue 32, item 5: a pool grows by writing its new rows into a preallocated store that
doubles when full (a few allocations over a run), not by copying itself every round, and
holds exactly what appending by concatenation held."""
from __future__ import annotations

import torch

from dfkd_bench.pool import PriorityReplay, SamplePool


def reference(adds, capacity):
    images = torch.cat(adds)
    return images[-capacity:] if capacity else images


def test_an_unbounded_pool_allocates_logarithmically_and_keeps_every_row_in_order():
    pool, adds, stores = SamplePool(), [], set()
    for i in range(200):
        batch = torch.full((8, 1, 2, 2), float(i))
        adds.append(batch)
        pool.add(batch, torch.full((8,), i))
        stores.add(pool._store["images"].data_ptr())
    assert torch.equal(pool.images, reference(adds, 0)) and len(pool) == 1600
    assert torch.equal(pool.labels, torch.arange(200).repeat_interleave(8))
    assert len(stores) <= 9  # 8 rows doubling to 1,600: 9 stores, where concatenation made 200


def test_a_bounded_pool_evicts_the_oldest_and_reuses_its_store():
    pool, adds, stores = SamplePool(capacity=50), [], set()
    for i in range(300):
        batch = torch.randn(7, 3, 2, 2)
        adds.append(batch)
        pool.add(batch)
        stores.add(pool._store["images"].data_ptr())
        assert torch.equal(pool.images, reference(adds, 50))
    assert len(pool) == 50 and len(stores) <= 6  # compacted in place once it stopped growing
    assert pool._store["images"].shape[0] <= 2 * (50 + 7) * 2


def test_priorities_are_updated_in_the_store_and_survive_growth_and_a_checkpoint():
    buf = PriorityReplay(capacity=20)
    for i in range(10):
        buf.add(torch.randn(4, 1, 2, 2), meta={"priority": torch.full((4,), float(i)),
                                               "teacher_class": torch.full((4,), i % 3)})
        buf.update_priorities(torch.tensor([0, 0]), torch.tensor([100.0, 200.0]))
    assert buf.priorities[0] == 150.0 and len(buf) == 20  # the mean of a duplicate's two values
    state, fixed = buf.state_dict(), buf.take_unsaved()
    assert state["priorities"].untyped_storage().nbytes() == 20 * 4  # a copy, not the whole store
    again = PriorityReplay(capacity=20)
    again.restore(fixed, state)
    assert torch.equal(again.images, buf.images) and torch.equal(again.priorities, buf.priorities)
    again.add(torch.randn(4, 1, 2, 2))  # grows on from a restored store
    assert torch.equal(again.images[:16], buf.images[4:])


def test_kd_batches_reach_the_method_channels_last():
    """Issue 32, item 4: the student step hands the method its batch in the models' layout."""
    from contextlib import nullcontext

    from dfkd_bench.config import RunConfig
    from dfkd_bench.harness import StudentTrainer
    from dfkd_bench.method import Batch
    from dfkd_bench.precision import FastPath

    seen = []
    student = torch.nn.Sequential(torch.nn.Conv2d(3, 4, 3), torch.nn.Flatten(), torch.nn.LazyLinear(2))
    student(torch.randn(1, 3, 8, 8))

    class Ctx:
        run, device, fast_path = RunConfig(), torch.device("cpu"), FastPath("cpu", "fp32")

    class Recording:
        ctx = Ctx()

        def student_modules(self):
            return {}

        def distill_loss(self, batch):
            seen.append(batch.images.is_contiguous(memory_format=torch.channels_last))
            return {"loss": student(batch.images).sum()}

        def after_distill_step(self, batch, losses):
            pass

    trainer = StudentTrainer(student, Recording(), 4, lambda phase: nullcontext())
    trainer.step(Batch(torch.randn(5, 3, 8, 8)), 0)  # an NCHW batch from a feed
    assert seen == [True]
