"""DDA: the filter, the augmenters, the harness's augmented feed and cache, the
extra-module contract, and a tiny randomly initialised diffusion pipeline built here
and loaded from a temporary directory with the hub offline (tests marked
``needs_diffusers`` skip without the ``dda`` extra)."""
from __future__ import annotations

import dataclasses
import importlib.util
import json
import math
import sys

import pytest
import torch

from dfkd_bench import harness, store
from dfkd_bench.augment import ClassicalAugmenter, cache_key, output_seeds
from dfkd_bench.cli import main
from dfkd_bench.errors import UserError
from dfkd_bench.harness import Session
from dfkd_bench.report import write_report
from dfkd_bench.methods.dda import DDA, DDAConfig, cosine_keep, rotate_batch
from tests.helpers import StopAfter, checkpoint, method_context, same_tensors, smoke_spec, student_state

needs_diffusers = pytest.mark.skipif(
    importlib.util.find_spec("diffusers") is None or importlib.util.find_spec("transformers") is None,
    reason='needs the dda extra (diffusers, transformers): pip install -e ".[dda]"')
PLUGIN = ["--plugin", "tests.plugins.tiny"]
TINY = ["--dataset", "tiny", "--pair", "cnn_s-cnn_s", "--device", "cpu"]


# --- filter and rotation -----------------------------------------------------------------
def test_the_filter_keeps_exactly_the_augmentations_at_or_above_tau():
    src = torch.tensor([[1.0, 0, 0, 0, 0], [0, 1.0, 0, 0, 0]])
    # cosines with source 0: 3/4 exactly (norm 4), just below, 1, -1; source 1: 0, 3/4, 0.8, 0.6
    aug = torch.tensor([[3.0, 2, 1, 1, 1], [3.0, 2, 1, 1, 1.001], [2.0, 0, 0, 0, 0], [-1.0, 0, 0, 0, 0],
                        [0.0, 0, 1, 0, 0], [2.0, 3, 1, 1, 1], [0.0, 4, 3, 0, 0], [4.0, 3, 0, 0, 0]])
    keep, sims = cosine_keep(src, aug, k=4, tau=0.75)
    expected = torch.tensor([0.75, 3 / math.sqrt(16.002001), 1, -1, 0, 0.75, 0.8, 0.6])
    assert torch.allclose(sims, expected, atol=1e-6)
    assert keep.tolist() == [True, False, True, False, False, True, True, False]


def test_rotate_batch_turns_each_image_by_its_own_quarter_turns():
    x = torch.arange(2 * 4 * 4, dtype=torch.float32).view(2, 1, 4, 4).repeat(2, 1, 1, 1)
    out = rotate_batch(x, torch.tensor([0, 1, 2, 3]))
    for i, r in enumerate([0, 1, 2, 3]):
        assert torch.equal(out[i], torch.rot90(x[i], r, dims=(1, 2)))


def test_the_method_filter_uses_the_teachers_penultimate_features():
    ctx = method_context()
    dda = DDA(DDAConfig(tau=0.999, augment="classical", k=2), ctx)
    src = torch.randn(3, 1, 8, 8)
    other = torch.randn(3, 1, 8, 8) * 5 + 3
    aug = torch.stack([src[0], other[0], other[1], src[1], src[2], other[2]])
    keep, logs = dda.filter_augmentations(src, aug, 2)
    assert keep[[0, 3, 4]].all()  # an augmentation identical to its source is kept
    assert set(logs) == {"sim_q10", "sim_q25", "sim_q50", "sim_q75", "sim_q90"}
    off = DDA(DDAConfig(filter=False, augment="classical"), ctx)
    assert off.filter_augmentations(src, aug, 2)[0].all()


# --- classical augmenter --------------------------------------------------------------------
def test_the_classical_augmenter_makes_k_seeded_variations_per_image():
    a = ClassicalAugmenter(k=3, ops=2, magnitude=15)
    images = (torch.rand(4, 3, 16, 16) * 255).to(torch.uint8)
    seeds = [output_seeds(cache_key(a.identity(), im), 3) for im in images]
    out = a(images, None, seeds)
    assert out.shape == (12, 3, 16, 16) and out.dtype == torch.uint8
    assert torch.equal(out, a(images, None, seeds))  # a pure function of (image, seeds)
    assert not torch.equal(out[0], out[1])  # the variations of one image differ
    assert len({s for group in seeds for s in group}) == 12


def test_cache_keys_depend_on_the_image_and_the_settings():
    a, b = ClassicalAugmenter(k=1), ClassicalAugmenter(k=2)
    image = torch.zeros(3, 4, 4, dtype=torch.uint8)
    other = image.clone()
    other[0, 0, 0] = 1
    keys = {cache_key(a.identity(), image), cache_key(a.identity(), other), cache_key(b.identity(), image)}
    assert len(keys) == 3 and cache_key(a.identity(), image) == cache_key(a.identity(), image.clone())


def test_the_image_cache_writes_atomically_and_treats_a_torn_file_as_a_miss(tmp_path):
    cache = store.ImageCache(tmp_path / "aug")
    images = torch.arange(12, dtype=torch.uint8).view(1, 3, 2, 2)
    cache.put("ab" + "0" * 62, images, {"seconds": 1.5})
    got, meta = cache.get("ab" + "0" * 62)
    assert torch.equal(got, images) and meta == {"seconds": 1.5}
    assert cache.get("cd" + "0" * 62) is None
    f = tmp_path / "aug" / "ab" / ("ab" + "0" * 62 + ".pt")
    f.write_bytes(f.read_bytes()[:20])
    assert cache.get("ab" + "0" * 62) is None
    assert not list((tmp_path / "aug").rglob("*.tmp*"))


# --- the harness: augmented feed, extra modules, resume -------------------------------------
def test_a_classical_dda_run_fills_the_pool_with_kept_augmentations_and_times_the_phase(tiny_zoo, tmp_path):
    summary = harness.run(smoke_spec("dda", tmp_path, epochs=2, k=2, tau=-1.0))
    assert summary.completed and summary.seconds["augmentation"] > 0
    assert summary.label == "dda-smoke [RandAugment x2]"
    epochs = [r for r in store.RunDir(tmp_path, summary.name).read_metrics() if r["event"] == "epoch"]
    # tau -1 keeps everything: each round adds 16 images and their 32 augmentations
    assert [r["aug_made"] for r in epochs] == [32.0, 32.0] and [r["aug_kept_fraction"] for r in epochs] == [1.0, 1.0]
    assert [r["pool_size"] for r in epochs] == [48, 96]
    for r in epochs:
        assert r["aug_sim_q10"] <= r["aug_sim_q50"] <= r["aug_sim_q90"]


def test_the_harness_trains_and_checkpoints_the_methods_heads(tiny_zoo, tmp_path):
    spec = smoke_spec("dda", tmp_path, epochs=2)
    summary = harness.run(spec)
    state = checkpoint(summary, tmp_path)["trainer"]
    assert set(k.split(".")[0] for k in state["modules"]) == {"align_head", "rotation_head"}
    fresh = DDA(spec.method_config, method_context())
    assert not torch.equal(state["modules"]["align_head.weight"], fresh.align_head.weight)
    n_student = sum(1 for _ in fresh.ctx.student.parameters())
    assert len(state["optimizer"]["param_groups"][0]["params"]) == n_student + 2 + 4  # + heads' weights and biases
    off = harness.run(smoke_spec("dda", tmp_path, epochs=2, ss=0.0, align=0.0))
    assert "modules" not in checkpoint(off, tmp_path)["trainer"]


def test_a_dda_run_resumed_after_an_interrupt_matches_the_uninterrupted_one(tiny_zoo, tmp_path):
    full = harness.run(smoke_spec("dda", tmp_path / "full", epochs=3))
    with pytest.raises(KeyboardInterrupt):
        harness.run(smoke_spec("dda", tmp_path / "cut", epochs=3), StopAfter(0))
    resumed = harness.run(smoke_spec("dda", tmp_path / "cut", epochs=3))
    assert resumed.final_top1 == full.final_top1
    assert same_tensors(student_state(full, tmp_path / "full"), student_state(resumed, tmp_path / "cut"))
    a, b = checkpoint(full, tmp_path / "full")["trainer"], checkpoint(resumed, tmp_path / "cut")["trainer"]
    assert same_tensors(a["modules"], b["modules"])


def test_dda_config_errors_stop_the_plan(tiny_zoo, tmp_path):
    with pytest.raises(UserError, match="tau=2.0; expected a cosine similarity"):
        smoke_spec("dda", tmp_path, tau=2.0)
    with pytest.raises(UserError, match=r"augment=diffusion needs a diffusers pipeline: --set dda.model="):
        smoke_spec("dda", tmp_path, augment="diffusion")


@pytest.mark.parametrize("problem", ["no-extra", "no-model", "not-a-dir"])
def test_missing_extra_or_model_is_a_one_line_exit_2_before_anything_is_written(problem, capsys, tmp_path,
                                                                                 monkeypatch, tiny_zoo):
    sets = ["--set", "dda.augment=diffusion"]
    if problem == "no-extra":
        monkeypatch.setitem(sys.modules, "diffusers", None)  # import diffusers raises ImportError
        sets += ["--set", f"dda.model={tmp_path}"]
        message = 'needs the optional packages diffusers and transformers (diffusers is missing): pip install -e ".[dda]"'
    elif problem == "not-a-dir":
        sets += ["--set", f"dda.model={tmp_path / 'nope'}"]
        message = "is not a directory; expected a local diffusers pipeline directory"
    else:
        message = "needs a diffusers pipeline: --set dda.model=<local directory>"
    out = tmp_path / "results"
    code = main([*PLUGIN, "run", "--methods", "dda:smoke", *TINY, *sets, "--out", str(out)])
    err = capsys.readouterr().err
    if problem == "no-extra" or importlib.util.find_spec("diffusers") is not None:
        assert code == 2 and message in err and len(err.strip().splitlines()) == 1
    else:  # without the extra, every diffusion run stops at the missing package first
        assert code == 2 and "pip install -e \".[dda]\"" in err
    assert not out.exists()


# --- a real diffusers pipeline, tiny and random ---------------------------------------------
@pytest.fixture(scope="module")
def tiny_pipeline(tmp_path_factory):
    from dfkd_bench.augment import build_tiny_pipeline
    return build_tiny_pipeline(tmp_path_factory.mktemp("pipe") / "tiny-variation", "variation")


@pytest.fixture()
def offline(monkeypatch):
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    monkeypatch.setenv("HF_HUB_DISABLE_TELEMETRY", "1")


def diffusion_spec(out, pipe, epochs=2, **changes):
    return smoke_spec("dda", out, epochs=epochs, augment="diffusion", model=str(pipe), diffusion_steps=2, k=2,
                      tau=-1.0, **changes)


@needs_diffusers
def test_the_diffusion_augmenter_loads_from_a_local_directory_offline(tiny_pipeline, offline):
    from dfkd_bench.augment import DiffusionAugmenter
    a = DiffusionAugmenter(str(tiny_pipeline), "variation", k=3, device=torch.device("cpu"), steps=2, guidance=3.0,
                           strength=0.5, prompt="", batch=2)
    images = (torch.rand(3, 1, 8, 8) * 255).to(torch.uint8)
    seeds = [output_seeds(cache_key(a.identity(), im), 3) for im in images]
    out = a(images, None, seeds)
    assert out.shape == (9, 1, 8, 8) and out.dtype == torch.uint8 and out.device == images.device
    assert a.calls == 1 and a.flops_per_output > 0 and a.resolution == 32
    assert out.float().std() > 0 and not torch.equal(out[0], out[1])  # k different variations
    assert torch.equal(out, a(images, None, seeds))  # seeded per output: the same bytes again


@needs_diffusers
def test_diffusion_is_timed_counted_and_cached_across_repeated_and_resumed_runs(tiny_zoo, tiny_pipeline, offline,
                                                                                   tmp_path, monkeypatch):
    from dfkd_bench.augment import DiffusionAugmenter
    calls = []
    original = DiffusionAugmenter._augment
    monkeypatch.setattr(DiffusionAugmenter, "_augment", lambda self, x, *a: calls.append(len(x)) or original(self, x, *a))
    first = harness.run(diffusion_spec(tmp_path / "a", tiny_pipeline))
    assert calls == [16, 16] and first.seconds["augmentation"] > 0
    c = first.costs
    assert c["diffusion_forward_images"] == 64 and c["diffusion_flops_per_image"] > 0
    others = sum(c[f"{m}_flops_per_image"] * (c[f"{m}_forward_images"] + 2 * c[f"{m}_backward_images"])
                 for m in ("teacher", "student", "generator"))
    assert first.training_flops == others + 64 * c["diffusion_flops_per_image"]
    assert first.label == "dda-smoke [diffusion variation x2]"

    # the same run again, forced: every image is read from the cache, nothing recomputed
    calls.clear()
    again = harness.run(dataclasses.replace(diffusion_spec(tmp_path / "a", tiny_pipeline), force=True))
    assert calls == [] and again.costs["diffusion_forward_images"] == 0
    assert again.costs["diffusion_cached_images"] == 64 and again.training_flops == first.training_flops
    assert same_tensors(student_state(first, tmp_path / "a"), student_state(again, tmp_path / "a"))
    rep = write_report(tmp_path / "a", tmp_path / "report", figures=False)
    costs = (tmp_path / "report" / "costs__tiny.md").read_text()
    assert "| augmentation s |" in costs and any(r["method"] == "dda-smoke [diffusion variation x2]" for r in rep.rows)
    assert "read from the augmentation cache (made by an earlier run)" in costs

    # a run killed after augmenting epoch 1 (before its checkpoint) reuses that work on resume
    monkeypatch.setenv("DFKD_BENCH_CACHE", str(tmp_path / "fresh-cache"))
    import shutil
    shutil.copytree(tiny_zoo, tmp_path / "fresh-cache", ignore=shutil.ignore_patterns("augmentations"))
    real_checkpoint = Session.checkpoint

    def dies_at_epoch_1(self, epoch, record):
        if epoch == 1:
            raise KeyboardInterrupt
        real_checkpoint(self, epoch, record)
    calls.clear()
    monkeypatch.setattr(Session, "checkpoint", dies_at_epoch_1)
    with pytest.raises(KeyboardInterrupt):
        harness.run(diffusion_spec(tmp_path / "b", tiny_pipeline, epochs=3))
    monkeypatch.setattr(Session, "checkpoint", real_checkpoint)
    resumed = harness.run(diffusion_spec(tmp_path / "b", tiny_pipeline, epochs=3))
    assert calls == [16, 16, 16]  # epochs 0 and 1 before the kill, epoch 2 after: epoch 1 came from the cache
    assert resumed.costs["diffusion_cached_images"] == 32 and resumed.costs["diffusion_forward_images"] == 64
    records = [r for r in store.RunDir(tmp_path / "b", resumed.name).read_metrics() if r["event"] == "epoch"]
    assert [r["aug_cache_hits"] for r in records] == [0.0, 16.0, 0.0]


@needs_diffusers
def test_a_diffusion_dda_run_through_the_cli(tiny_zoo, tiny_pipeline, offline, capsys, tmp_path):
    out = tmp_path / "results"
    code = main([*PLUGIN, "run", "--methods", "dda:smoke", *TINY, "--set", f"dda.model={tiny_pipeline}",
                 "--set", "dda.augment=diffusion", "--set", "dda.diffusion_steps=2", "--out", str(out)])
    text = capsys.readouterr().out
    assert code == 0 and "aug s" in text
    (summary,) = [json.loads(p.read_text()) for p in out.glob("*/summary.json")]
    assert summary["status"] == "completed" and summary["seconds"]["augmentation"] > 0
    assert summary["label"] == "dda-smoke [diffusion variation x1]" and summary["diffusion_forward_images"] == 32
