"""Feeds and checkpoints: pool images written once as shards (a checkpoint's size does
not grow with the pool), evicted shards removed, format-1 checkpoints resumed exactly,
phases nesting on the clock, and the BN-statistics loss against a hand-computed value."""
from __future__ import annotations

import shutil
from pathlib import Path

import pytest
import torch
from torch import nn

from dfkd_bench import harness, store, timing
from dfkd_bench.events import RunObserver
from dfkd_bench.inversion import BNStatsHook, bn_hooks, bn_loss
from dfkd_bench.registry import METHODS
from tests.helpers import checkpoint, smoke_spec, student_state

LEGACY = Path(__file__).resolve().parent / "fixtures" / "legacy-v1"


class ShardWatch(RunObserver):
    """After each epoch: the shard files and their modification times, and the
    checkpoint's size."""

    def __init__(self, rundir: Path):
        self.rundir, self.seen = rundir, []

    def epoch(self, epoch, record):
        shards = {f.name: f.stat().st_mtime_ns for f in sorted((self.rundir / store.POOL_DIR).iterdir())}
        self.seen.append((shards, (self.rundir / store.CHECKPOINT).stat().st_size))


def test_pool_images_are_written_once_and_the_checkpoint_does_not_grow(tiny_zoo, tmp_path):
    spec = smoke_spec("deepinv", tmp_path / "r", epochs=4)
    name = harness.run_name(harness.resolved_config(spec, torch.device("cpu")))
    watch = ShardWatch(tmp_path / "r" / name)
    summary = harness.run(spec, watch)
    assert [sorted(s) for s, _ in watch.seen] == [[f"shard-{i:06d}.pt" for i in range(k + 1)] for k in range(4)]
    for earlier, later in zip(watch.seen, watch.seen[1:]):  # an old shard is never rewritten
        assert all(later[0][f] == mtime for f, mtime in earlier[0].items())
    sizes = [size for _, size in watch.seen]
    assert max(sizes) - min(sizes) < 2048  # the pool grew 16 -> 64 images; the checkpoint did not
    state = checkpoint(summary, tmp_path / "r")["feed"]
    assert state["pool"] == {"capacity": 0, "size": 64} and [n for _, n in state["shards"]] == [16] * 4
    path = tmp_path / "r" / name / "pool" / "shard-000002.pt"
    shard = torch.load(path, weights_only=True)
    assert shard["images"].shape == (16, 1, 8, 8) and shard["labels"].shape == (16,)
    assert path.stat().st_size < 2 * 16 * 64 * 4  # its own 16 images, not the 48-image pool they were cut from


def test_shards_of_evicted_samples_are_removed(tiny_zoo, tmp_path):
    # SSD-KD's smoke buffer holds 24; 16 new samples an epoch: a shard whose samples are
    # all evicted goes once neither the checkpoint nor the previous one names it.
    summary = harness.run(smoke_spec("ssdkd", tmp_path / "r", epochs=4))
    rundir = tmp_path / "r" / summary.name
    state = checkpoint(summary, tmp_path / "r")["feed"]
    assert state["shards"] == [("shard-000002.pt", 16), ("shard-000003.pt", 16)]
    previous = torch.load(rundir / store.PREVIOUS_CHECKPOINT, weights_only=True)["feed"]
    assert previous["shards"] == [("shard-000001.pt", 16), ("shard-000002.pt", 16)]
    assert sorted(f.name for f in (rundir / "pool").iterdir()) == [f"shard-00000{i}.pt" for i in (1, 2, 3)]
    assert state["pool"]["size"] == 24 and state["pool"]["priorities"].shape == (24,)


# The fixture's deepinv ran before issue 12 gave DeepInv the reference's ADI term and jsdiv;
# both ran before issue 16 made channels_last the default layout (NCHW arithmetic).
@pytest.mark.parametrize("method,changes", [("deepinv", {"steps": 3, "synth_batch": 16, "student_bn": 0.0,
                                                         "adv_div": "js"}), ("kd", {})])
def test_a_format_1_checkpoint_resumes_to_the_uninterrupted_result(method, changes, tiny_zoo, tmp_path):
    """A run interrupted by the code before issue 10 (fixtures/legacy-v1) resumes under
    today's code and ends exactly where an uninterrupted run of today's code ends."""
    def spec(out):
        return smoke_spec(method, out, preset=None, epochs=4, batch_size=8, kd_steps=3, channels_last=False,
                          precision="fp32", **changes)

    full = harness.run(spec(tmp_path / "full"))
    (old,) = LEGACY.glob(f"tiny__cnn_s-cnn_s__{method}__*")
    cut = tmp_path / "cut"
    shutil.copytree(old, cut / full.name)  # deepinv's run name changed with its config since
    assert "format" not in torch.load(cut / full.name / store.CHECKPOINT, weights_only=True)
    resumed = harness.run(spec(cut))
    assert resumed.status == "completed" and resumed.final_top1 == full.final_top1
    # The fixture's first epochs were computed on another CPU (an AVX-512 Xeon): its kernels
    # round differently from other ISAs' at about 1e-7 (measured 2e-7 and 9e-7 on an AVX2
    # EPYC). A resume that lost any state (a momentum buffer, the RNG) is off by far more.
    a, b = student_state(full, tmp_path / "full"), student_state(resumed, cut)
    assert a.keys() == b.keys() and all(torch.allclose(a[k], b[k], rtol=0, atol=1e-5) for k in a)
    assert resumed.costs == full.costs
    epochs = [(r["event"], r["epoch"]) for r in store.RunDir(cut, full.name).read_metrics()]
    assert epochs == [("epoch", 0), ("epoch", 1), ("resume", 1), ("epoch", 2), ("epoch", 3)]


def test_an_unknown_checkpoint_format_is_refused_in_one_line():
    from dfkd_bench.errors import UserError

    with pytest.raises(UserError, match="checkpoint format 9 is not one this version reads.*--force"):
        harness.upgrade_checkpoint({"format": 9})


def test_phases_nest_and_re_entering_the_running_phase_changes_nothing(monkeypatch):
    ticks = iter(range(100))
    monkeypatch.setattr(timing.time, "perf_counter", lambda: float(next(ticks)))
    clock = timing.PhaseClock(torch.device("cpu"))
    with clock.phase("distillation"):  # t=0
        with clock.phase("synthesis"):  # t=1: distillation +1
            pass  # t=2: synthesis +1
        with clock.phase("distillation"):
            pass
    # t=3: distillation +1
    assert clock.seconds == {"synthesis": 1.0, "augmentation": 0.0, "distillation": 2.0, "evaluation": 0.0,
                             "checkpoint": 0.0, "startup": 0.0}
    assert clock.train_seconds == 3.0 and clock.total_seconds == 3.0


def test_bn_statistics_loss_golden_value():
    """||batch mean - running mean||_2 + ||batch var - running var||_2 on a BN layer whose
    input has a known mean and (biased) variance per channel."""
    bn = nn.BatchNorm2d(2).eval()
    bn.running_mean.copy_(torch.tensor([0.0, 1.0]))
    bn.running_var.copy_(torch.tensor([1.0, 1.0]))
    net = nn.Sequential(nn.Identity(), bn)
    (hook,) = bn_hooks(net, "test")
    x = torch.empty(2, 2, 2, 2)
    x[:, 0] = 1.0  # mean 1, var 0
    x[:, 1] = torch.tensor([[3.0, -1.0], [3.0, -1.0]])  # mean 1, var 4
    x.requires_grad_(True)
    net(x)
    expected = torch.tensor(1.0 ** 2 + 0.0 ** 2).sqrt() + torch.tensor((0 - 1.0) ** 2 + (4 - 1.0) ** 2).sqrt()
    assert bn_loss([hook]).item() == pytest.approx(expected.item(), abs=1e-6)  # 1 + sqrt(10)
    # bn_mmt: the batch statistics are blended with the moving average first
    blended = BNStatsHook(bn, momentum=0.5)
    blended.avg_mean, blended.avg_var = torch.tensor([0.0, 1.0]), torch.tensor([1.0, 1.0])
    net(x)
    # mean (0.5, 1), var (0.5, 2.5) against running (0, 1), (1, 1)
    assert blended.loss.item() == pytest.approx(0.5 + (0.5 ** 2 + 1.5 ** 2) ** 0.5, abs=1e-6)


def test_a_teacher_without_batchnorm_is_a_user_error():
    from dfkd_bench.errors import UserError

    with pytest.raises(UserError, match="deepinv: the teacher has no BatchNorm2d layers"):
        bn_hooks(nn.Sequential(nn.Conv2d(1, 2, 3)), "deepinv")


def test_a_missing_pool_shard_is_one_line_naming_force(tiny_zoo, tmp_path):
    from dfkd_bench.errors import UserError
    from tests.helpers import StopAfter

    spec = smoke_spec("deepinv", tmp_path / "r", epochs=3)
    with pytest.raises(KeyboardInterrupt):
        harness.run(spec, StopAfter(1))
    rundir = harness.run_dir(spec)
    (rundir.path / "pool" / "shard-000000.pt").unlink()
    with pytest.raises(UserError, match="pool shard .* cannot be read .*--force"):
        harness.run(spec)
    spec.force = True
    assert harness.run(spec).status == "completed"


def test_a_resumed_run_keeps_the_previous_checkpoints_shards_too(tiny_zoo, tmp_path):
    from tests.helpers import StopAfter

    spec = smoke_spec("ssdkd", tmp_path / "r", epochs=4)
    with pytest.raises(KeyboardInterrupt):
        harness.run(spec, StopAfter(2))
    summary = harness.run(spec)
    pool = tmp_path / "r" / summary.name / "pool"
    assert sorted(f.name for f in pool.iterdir()) == [f"shard-00000{i}.pt" for i in (1, 2, 3)]  # as uninterrupted


SYNTHESISING = [name for name, cls in METHODS.items()
                if cls.__module__.startswith("dfkd_bench.") and cls.mode != "real"]


@pytest.mark.parametrize("name", SYNTHESISING)
def test_the_student_is_in_the_mode_its_method_declares_during_synthesis(name, tiny_zoo, tmp_path, monkeypatch):
    """Issue 30: DFAD's and ZSKT's games run the student in train mode, as their own code
    does; every other method's synthesis sees it in eval mode. Read at every synthesis
    call of a real run, warm-up steps included."""
    cls = METHODS.get(name)
    seen = []
    for hook in ("synthesize", "warmup_step"):
        original = getattr(cls, hook)

        def recorded(self, *args, original=original):
            seen.append(self.ctx.student.training)
            return original(self, *args)

        monkeypatch.setattr(cls, hook, recorded)
    harness.run(smoke_spec(name, tmp_path / "r", warmup_epochs=1, epochs=2))
    assert len(seen) > 1 and set(seen) == {name in ("dfad", "zskt")}
