"""Issue 33, item 1: long work shows its progress where a newcomer meets it. A missing
teacher trained inside `run` or `sweep` shows its epochs and the time left, as `teachers
train` does, and a GPU-scale pair about to train or run on the CPU is warned about first,
with what it costs here, measured."""
from __future__ import annotations

import re

import pytest
import torch

from dfkd_bench import estimate, harness, sweep
from dfkd_bench.pairs import Pair
from dfkd_bench.plan import plan_runs
from dfkd_bench.teachers import TrainRecipe
from tests.test_cli import PLUGIN, run_cli

GPU_SCALE_TINY = Pair("cnn_s", "cnn_s", "a test stand-in; GPU scale", in_channels=1)


@pytest.fixture()
def short_recipe(monkeypatch):
    monkeypatch.setattr(TrainRecipe, "for_dataset", classmethod(lambda cls, name: cls(epochs=3, batch_size=32)))
    monkeypatch.setattr(harness, "_SAID", set())


def test_run_warns_of_a_gpu_scale_pair_on_the_cpu_then_shows_the_teachers_epochs(capsys, tmp_path, cache,
                                                                                short_recipe, monkeypatch):
    monkeypatch.setattr(harness, "resolve_pair", lambda name, dataset, *args: GPU_SCALE_TINY)
    code, out, err = run_cli(capsys, *PLUGIN, "run", "--methods", "kd", "--dataset", "tiny", "--pair", "cnn_s-cnn_s",
                             "--epochs", "2", "--device", "cpu", "--set", "batch_size=8", "--set", "kd_steps=2",
                             "--out", str(tmp_path / "r"))
    assert code == 0, err
    flat = " ".join(out.split())
    assert re.search(r"cnn_s-cnn_s is a GPU-scale pair \(`dfkd-bench list`\) and this run is on the CPU: measured "
                     r"here, training its missing cnn_s teacher \(3 epochs\) about \d+ s; the run's 4 student steps "
                     r"at least \d+ s", flat), flat
    for epoch in (1, 2, 3):
        assert f"cnn_s teacher epoch {epoch}/3: loss" in flat
    assert re.search(r"cnn_s teacher epoch 1/3: .* s, about \d+ s left", flat)
    assert flat.index("GPU-scale pair") < flat.index("teacher epoch 1/3")
    # once a process: the teacher is in the zoo now, and the warning is not said again
    code, out, _ = run_cli(capsys, *PLUGIN, "run", "--methods", "kd", "--dataset", "tiny", "--pair", "cnn_s-cnn_s",
                           "--epochs", "2", "--device", "cpu", "--set", "batch_size=8", "--set", "kd_steps=2",
                           "--seeds", "1", "--out", str(tmp_path / "r"))
    assert code == 0 and "GPU-scale" not in out and "teacher epoch" not in out


def test_a_pair_not_labelled_gpu_scale_is_not_warned_about(capsys, tmp_path, cache, short_recipe):
    code, out, _ = run_cli(capsys, *PLUGIN, "run", "--methods", "kd", "--dataset", "tiny", "--pair", "cnn_s-cnn_s",
                           "--epochs", "2", "--device", "cpu", "--set", "batch_size=8", "--set", "kd_steps=2",
                           "--out", str(tmp_path / "r"))
    assert code == 0 and "GPU-scale" not in out and "cnn_s teacher epoch 3/3" in " ".join(out.split())


def test_a_sweep_trains_a_missing_teacher_with_its_epochs_reported(tmp_path, cache, short_recipe, monkeypatch):
    monkeypatch.setattr(harness, "resolve_pair", lambda name, dataset, *args: GPU_SCALE_TINY)
    specs = plan_runs(["kd"], dataset="tiny", pair="cnn_s-cnn_s", preset="smoke", seeds=[0, 1], epochs=None,
                      device="cpu", sets=[], out=tmp_path / "r")
    said, events = [], []
    sweep.prepare_teachers(specs, True, said.append,
                           lambda arch, epochs: (lambda event, info: events.append((arch, epochs, event))))
    assert [e for e in events if e[2] == "epoch"] == [("cnn_s", 3, "epoch")] * 3  # one teacher, trained once
    assert len(said) == 2 and "GPU-scale pair" in said[0] and "training it now" in said[1]


def test_step_seconds_leaves_the_random_stream_as_it_was_and_drops_the_gradients():
    model = torch.nn.Sequential(torch.nn.Conv2d(1, 4, 3), torch.nn.BatchNorm2d(4), torch.nn.Flatten())
    before = torch.get_rng_state()
    seconds = estimate.step_seconds(model, 4, (1, 8, 8))
    assert seconds > 0 and torch.equal(torch.get_rng_state(), before)
    assert all(p.grad is None for p in model.parameters())
    assert [estimate.human(s) for s in (42, 600, 3 * 3600, 5 * 86400)] == ["42 s", "10 min", "3.0 h", "5.0 days"]
