"""The harness end to end on a tiny data set: every registered method runs, runs are
deterministic, resume after an interruption reaches the same result, divergence is
recorded, completed runs are not repeated."""
from __future__ import annotations

import dataclasses
import json

import pytest
import torch

from dfkd_bench import harness, store
from dfkd_bench.config import RunConfig
from dfkd_bench.registry import METHODS

METHOD_NAMES = METHODS.names()  # collected before any test registers extra methods


# A smoke-test budget for whichever of these fields a method's config has: the
# mechanism runs end to end, only smaller (defaults are sized for the digits quickstart).
SMOKE_BUDGET = {"steps": 3, "synth_batch": 16, "bank_size": 64, "n_neg": 16}


def spec_for(method: str, out, seed: int = 0, epochs: int = 2, **run_changes) -> harness.RunSpec:
    cls = METHODS.get(method)
    run = RunConfig(epochs=epochs, batch_size=8, kd_steps=3, device="cpu", **run_changes)
    fields = {f.name for f in dataclasses.fields(cls.config_cls)}
    method_config = cls.config_cls(**{k: v for k, v in SMOKE_BUDGET.items() if k in fields})
    return harness.RunSpec(method=method, dataset="tiny", pair="cnn_s-cnn_s", seed=seed, run=run,
                           method_config=method_config, out=out)


def student_state(summary: dict, out) -> dict:
    return store.RunDir(out, summary["name"]).load_checkpoint()["student"]


@pytest.mark.parametrize("method", METHOD_NAMES)
def test_every_registered_method_runs(method, tiny_zoo, tmp_path):
    summary = harness.run(spec_for(method, tmp_path / "r"), announce=lambda m: None)
    assert summary["status"] == "completed", summary["reason"]
    assert summary["epochs_done"] == 2
    assert 0.0 <= summary["final_top1"] <= 100.0
    assert summary["student_forward_images"] > 0 and summary["student_backward_images"] > 0
    assert summary["student_flops_per_image"] > 0 and summary["training_flops"] > 0
    assert set(summary["seconds"]) == {"synthesis", "distillation", "evaluation", "other"}
    run_dir = tmp_path / "r" / summary["name"]
    for name in (store.CONFIG, store.ENVIRONMENT, store.METRICS, store.SUMMARY, store.CHECKPOINT):
        assert (run_dir / name).exists(), name
    epochs = [r for r in store.RunDir(tmp_path / "r", summary["name"]).read_metrics() if r["event"] == "epoch"]
    assert [r["epoch"] for r in epochs] == [0, 1]


def test_same_seed_same_result(tiny_zoo, tmp_path):
    a = harness.run(spec_for("deepinv", tmp_path / "a"), announce=lambda m: None)
    b = harness.run(spec_for("deepinv", tmp_path / "b"), announce=lambda m: None)
    assert a["final_top1"] == b["final_top1"]
    sa, sb = student_state(a, tmp_path / "a"), student_state(b, tmp_path / "b")
    assert all(torch.equal(sa[k], sb[k]) for k in sa)


def test_different_seeds_differ(tiny_zoo, tmp_path):
    a = harness.run(spec_for("kd", tmp_path / "r", seed=0), announce=lambda m: None)
    b = harness.run(spec_for("kd", tmp_path / "r", seed=1), announce=lambda m: None)
    assert a["name"] != b["name"]
    sa, sb = student_state(a, tmp_path / "r"), student_state(b, tmp_path / "r")
    assert not all(torch.equal(sa[k], sb[k]) for k in sa)


@pytest.mark.parametrize("method", ["deepinv", "kd"])
def test_resume_after_interrupt_matches_uninterrupted(method, tiny_zoo, tmp_path):
    full = harness.run(spec_for(method, tmp_path / "full", epochs=4), announce=lambda m: None)

    def interrupt_after_epoch_1(event, info):
        if event == "epoch" and info["epoch"] == 1:
            raise KeyboardInterrupt

    out = tmp_path / "cut"
    with pytest.raises(KeyboardInterrupt):
        harness.run(spec_for(method, out, epochs=4), progress=interrupt_after_epoch_1, announce=lambda m: None)
    cut = json.loads((out / full["name"] / store.SUMMARY).read_text())
    assert cut["status"] == "interrupted" and "resume" in cut["reason"]
    env_path = out / full["name"] / store.ENVIRONMENT
    first_env = json.loads(env_path.read_text())
    env_path.write_text(json.dumps({**first_env, "hostname": "the-first-machine"}))
    events = []
    resumed = harness.run(spec_for(method, out, epochs=4), progress=lambda e, i: events.append((e, i)),
                          announce=lambda m: None)
    assert ("start", {"name": full["name"], "epochs": 4, "start_epoch": 2}) in events
    assert resumed["status"] == "completed"
    assert resumed["final_top1"] == full["final_top1"]
    assert resumed["student_forward_images"] == full["student_forward_images"]
    sa, sb = student_state(full, tmp_path / "full"), student_state(resumed, out)
    assert all(torch.equal(sa[k], sb[k]) for k in sa)
    records = store.RunDir(out, full["name"]).read_metrics()
    assert [r["epoch"] for r in records if r["event"] == "epoch"] == [0, 1, 2, 3]
    # the environment the run started in is kept; the resuming one is logged with the resume
    assert json.loads(env_path.read_text())["hostname"] == "the-first-machine"
    resume = [r for r in records if r["event"] == "resume"]
    assert len(resume) == 1 and resume[0]["epoch"] == 1 and resume[0]["environment"]["hostname"] == first_env["hostname"]


def test_completed_run_is_not_repeated_unless_forced(tiny_zoo, tmp_path):
    first = harness.run(spec_for("kd", tmp_path / "r"), announce=lambda m: None)
    again = harness.run(spec_for("kd", tmp_path / "r"), announce=lambda m: None)
    assert again.get("skipped") and again["updated"] == first["updated"]
    forced_spec = spec_for("kd", tmp_path / "r")
    forced_spec.force = True
    forced = harness.run(forced_spec, announce=lambda m: None)
    assert not forced.get("skipped") and forced["final_top1"] == first["final_top1"]


def test_divergence_is_recorded_as_failed(tiny_zoo, tmp_path):
    from tests.plugins.tiny import Diverging

    spec = harness.RunSpec(method="diverging", dataset="tiny", pair="cnn_s-cnn_s", seed=0,
                           run=RunConfig(epochs=3, batch_size=8, kd_steps=2, device="cpu"),
                           method_config=Diverging.config_cls(at_epoch=1), out=tmp_path / "r")
    summary = harness.run(spec, announce=lambda m: None)
    assert summary["status"] == "failed"
    assert "non-finite" in summary["reason"] and "epoch 1" in summary["reason"]
    assert summary["epochs_done"] == 1


def test_data_scale_sets_steps_and_kd_subset_is_class_balanced(tiny_zoo, tmp_path):
    summary = harness.run(spec_for("kd", tmp_path / "r", data_scale=20), announce=lambda m: None)
    assert summary["steps_per_epoch"] == 3  # ceil(20 / 8)
    assert summary["student_forward_images"] == 2 * 20  # batches of 8, 8, 4: one pass over the subset
    labels = torch.arange(64) % 4
    idx = harness.balanced_subset(labels, 10, 4, seed=0)
    assert len(idx) == 10 and len(set(idx.tolist())) == 10
    assert torch.bincount(labels[idx], minlength=4).tolist() == [3, 3, 2, 2]


def test_warmup_epochs_only_synthesize(tiny_zoo, tmp_path):
    spec = spec_for("deepinv", tmp_path / "r", epochs=3, warmup_epochs=2)
    spec.method_config.adv = 0.0  # no student backward during synthesis
    summary = harness.run(spec, announce=lambda m: None)
    assert summary["status"] == "completed"
    assert summary["student_backward_images"] == 1 * 3 * 8  # only the last epoch distils
    records = [r for r in store.RunDir(tmp_path / "r", summary["name"]).read_metrics() if r["event"] == "epoch"]
    assert ["loss" in r for r in records] == [False, False, True]
    assert [r["pool_size"] for r in records] == [16, 32, 48]


def test_online_warmup_trains_only_the_generator(tiny_zoo, tmp_path):
    spec = spec_for("dfq", tmp_path / "r", epochs=2, warmup_epochs=1)
    spec.method_config.adv = 0.0  # no student forward in the generator's loss either
    summary = harness.run(spec, announce=lambda m: None)
    assert summary["status"] == "completed"
    assert summary["student_backward_images"] == 1 * 3 * 8  # only the second epoch distils
    rundir = store.RunDir(tmp_path / "r", summary["name"])
    gen = rundir.load_checkpoint()["method"]
    assert gen["calls"] == 3  # warm-up steps leave the distillation cadence alone
    # 3 warm-up steps (one per student-step slot), then the first distillation call's
    # step (g_every 10: the other two calls only draw samples)
    assert {float(s["step"]) for s in gen["optimizer"]["state"].values()} == {4.0}
    records = [r for r in rundir.read_metrics() if r["event"] == "epoch"]
    assert ["loss" in r for r in records] == [False, True]
    assert ["top1" in r for r in records] == [False, True]
    assert {"synth_bn", "synth_top_class"} <= set(records[0])
