"""Atomic writes, the pool, config overrides and presets."""
from __future__ import annotations

import json
import os
from dataclasses import dataclass
from pathlib import Path

import pytest
import torch

from dfkd_bench import store
from dfkd_bench.config import RunConfig, apply_changes, load_preset_file, parse_set_options
from dfkd_bench.errors import UserError
from dfkd_bench.pool import SamplePool
from dfkd_bench.timing import CostCounter


def test_crash_during_write_leaves_previous_file_intact(tmp_path, monkeypatch):
    path = tmp_path / "summary.json"
    store.atomic_write_json(path, {"status": "completed", "top1": 90.0})

    def crash(fd):
        raise OSError("disk gone")

    monkeypatch.setattr(os, "fsync", crash)
    with pytest.raises(OSError):
        store.atomic_write_json(path, {"status": "running"})
    assert json.loads(path.read_text()) == {"status": "completed", "top1": 90.0}
    assert [p.name for p in tmp_path.iterdir()] == ["summary.json"]


def test_atomic_writes_get_the_mode_an_ordinary_write_would(tmp_path):
    plain = tmp_path / "plain.txt"
    plain.write_text("x")
    atomic = tmp_path / "atomic.json"
    store.atomic_write_json(atomic, {"a": 1})
    assert (atomic.stat().st_mode & 0o777) == (plain.stat().st_mode & 0o777)  # not mkstemp's 0600


def test_crash_during_checkpoint_save_leaves_previous_checkpoint(tmp_path, monkeypatch):
    run = store.RunDir(tmp_path, "run")
    run.create()
    run.save_checkpoint({"epoch": 1, "w": torch.ones(3)})

    def crash(obj, f, *a, **k):
        with open(f, "wb") as fh:
            fh.write(b"half a checkpo")
        raise RuntimeError("killed mid-save")

    monkeypatch.setattr(torch, "save", crash)
    with pytest.raises(RuntimeError):
        run.save_checkpoint({"epoch": 2, "w": torch.zeros(3)})
    assert run.load_checkpoint()["epoch"] == 1
    assert sorted(p.name for p in run.path.iterdir()) == ["checkpoint.pt"]


def test_unreadable_metrics_lines_are_moved_aside_and_valid_records_kept(tmp_path):
    """A junk first line, a non-UTF-8 line and a torn last line: every valid record up
    to the checkpoint's epoch stays, exactly the later ones go, the bad lines are kept
    in a .corrupt file with a warning."""
    run = store.RunDir(tmp_path, "run")
    run.create()
    path = run.file(store.METRICS)
    path.write_bytes(b"junk\n" + b'{"event": "epoch", "epoch": 0}\n' + b"\xff\xfe\n" + b'{"event": "epoch", "epoch": 1}\n'
                     + b'{"event": "epoch", "epoch": 2}\n{"event": "epo')
    assert [r["epoch"] for r in run.read_metrics()] == [0, 1, 2]
    warnings = []
    run.prepare_metrics(1, warnings.append)
    assert [r["epoch"] for r in run.read_metrics()] == [0, 1]
    (aside,) = tmp_path.glob("run/metrics.jsonl.corrupt-*")
    assert aside.read_bytes() == b"junk\n\xff\xfe\n" + b'{"event": "epo\n'
    assert len(warnings) == 1 and "3 unreadable line(s)" in warnings[0] and aside.name in warnings[0]


def test_without_a_checkpoint_earlier_records_are_moved_aside(tmp_path):
    run = store.RunDir(tmp_path, "run")
    run.create()
    for epoch in range(3):
        run.append_metrics({"event": "epoch", "epoch": epoch})
    warnings = []
    run.prepare_metrics(None, warnings.append)
    assert run.read_metrics() == [] and "starts over" in warnings[0]
    (aside,) = tmp_path.glob("run/metrics.jsonl.stale-*")
    assert aside.read_text().count("\n") == 3


def test_unwritable_output_directory_is_a_user_error(tmp_path):
    blocker = tmp_path / "file"
    blocker.write_text("x")
    with pytest.raises(UserError, match="cannot be written"):
        store.ensure_writable_dir(blocker / "results")


def test_pool_evicts_oldest_and_never_exceeds_capacity():
    pool = SamplePool(capacity=5)
    for start in range(0, 12, 3):
        pool.add(torch.arange(start, start + 3).float().view(3, 1, 1, 1))
        assert len(pool) <= 5
    assert pool.images.flatten().tolist() == [7, 8, 9, 10, 11]
    images, labels, meta = pool.sample(4)
    assert images.shape == (4, 1, 1, 1) and labels is None
    assert len(set(images.flatten().tolist())) == 4  # no replacement when the pool is big enough


def test_unbounded_pool_grows():
    pool = SamplePool()
    for _ in range(3):
        pool.add(torch.zeros(4, 1, 2, 2), torch.zeros(4, dtype=torch.long))
    assert len(pool) == 12 and pool.labels.shape == (12,)


@dataclass
class ToyConfig:
    steps: int = 10
    lr_g: float = 1e-3
    meta: str = "maml"
    reset: bool = True
    lr: float = 0.5  # shares a name with RunConfig.lr


def test_overrides_are_typed_and_scoped():
    run, cfg = apply_changes(RunConfig(), ToyConfig(), parse_set_options(
        ["steps=3", "lr_g=2e-3", "reset=false", "epochs=7", "run.lr=0.2", "method.lr=0.9", "meta=reptile"]), "--set")
    assert (cfg.steps, cfg.lr_g, cfg.reset, cfg.meta, cfg.lr) == (3, 2e-3, False, "reptile", 0.9)
    assert (run.epochs, run.lr) == (7, 0.2)
    _, cfg = apply_changes(RunConfig(), ToyConfig(), {"lr": 0.1}, "preset")
    assert cfg.lr == 0.1  # a bare key goes to the method first


@pytest.mark.parametrize("changes, message", [
    ({"stepz": "3"}, "unknown key 'stepz'"),
    ({"steps": "three"}, "expected a value of type int"),
    ({"reset": "maybe"}, "expected a value of type bool"),
    ({"epochs": 2.5}, "expected a value of type int"),
    ({"gpu.lr": "1"}, "unknown scope"),
])
def test_bad_overrides_are_user_errors(changes, message):
    with pytest.raises(UserError, match=message):
        apply_changes(RunConfig(), ToyConfig(), changes, "--set")


@pytest.mark.parametrize("item", ["steps", "=3", "steps=", "steps 3"])
def test_malformed_set_is_rejected(item):
    with pytest.raises(UserError, match="malformed --set"):
        parse_set_options([item])


def test_preset_file_is_yaml_changes(tmp_path):
    good = tmp_path / "p.yaml"
    good.write_text("steps: 4\nepochs: 3\n")
    run, cfg = apply_changes(RunConfig(), ToyConfig(), load_preset_file(good), "preset")
    assert cfg.steps == 4 and run.epochs == 3
    bad = tmp_path / "bad.yaml"
    bad.write_text("- a list\n")
    with pytest.raises(UserError, match="mapping"):
        load_preset_file(bad)


def test_steps_per_epoch_follow_the_data_scale():
    assert RunConfig(kd_steps=400).steps_per_epoch() == 400
    assert RunConfig(data_scale=5000, batch_size=256).steps_per_epoch() == 20  # ceil(5000/256)
    assert RunConfig(data_scale=256, batch_size=128, kd_passes=20).steps_per_epoch() == 40
    assert RunConfig(kd_steps=7, kd_passes=3).steps_per_epoch() == 7  # passes count only with a data scale
    with pytest.raises(UserError, match="kd_passes=0; expected a positive integer"):
        RunConfig(kd_passes=0).validate()


def test_a_field_at_its_neutral_value_keeps_committed_run_names():
    """Runs recorded before ``kd_passes`` existed keep their folder names: the committed
    study's config.json has no such field, and resolving it again at the neutral value
    gives the same run section and the same name hash."""
    from dfkd_bench.config import run_identity
    from dfkd_bench.harness import run_name
    runs = sorted((Path(__file__).parents[1] / "reports" / "cpu-study" / "runs").glob("*/config.json"))
    assert runs, "the committed study records are missing"
    for path in runs[:5]:
        recorded = json.loads(path.read_text())
        # the name hashes the config as planned, before the teacher is loaded
        resolved = {k: v for k, v in recorded.items() if k not in ("teacher_sha256", "teacher_normalization")}
        assert "kd_passes" not in resolved["run"]
        again = {**resolved, "run": run_identity(RunConfig(**resolved["run"]))}
        assert again == resolved and run_name(again) == path.parent.name
    changed = run_identity(RunConfig(**{**resolved["run"], "kd_passes": 20}))
    assert changed["kd_passes"] == 20 and run_name({**resolved, "run": changed}) != path.parent.name


def test_cost_counter_counts_forward_backward_and_flops():
    model = torch.nn.Sequential(torch.nn.Linear(10, 5))
    counter = CostCounter()
    counter.watch("m", model)
    model(torch.randn(4, 10)).sum().backward()
    with torch.no_grad():
        model(torch.randn(3, 10))
    with counter.pause():
        model(torch.randn(100, 10))
    s = counter.summary()
    assert s["m_flops_per_image"] == 2 * 10 * 5  # one multiply-add per weight
    assert (s["m_forward_images"], s["m_backward_images"]) == (7, 4)
    assert s["training_flops"] == 100 * (7 + 2 * 4)
