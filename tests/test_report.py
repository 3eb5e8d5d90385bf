"""Issue 14: the run store's diagnostics and the report's tables (paper layout, costs,
speed-ups; markdown, CSV, LaTeX) and index, on runs made here and on synthetic trees
with known numbers."""
from __future__ import annotations

import json

import numpy as np
import pytest
import torch

from dfkd_bench import diagnostics, harness
from dfkd_bench.data import Normalizer
from tests.helpers import smoke_spec


def test_a_pool_run_leaves_the_teachers_view_of_its_final_pool(tiny_zoo, tmp_path):
    summary = harness.run(smoke_spec("deepinv", tmp_path / "r", epochs=3))
    run = tmp_path / "r" / summary.name
    arrays = diagnostics.read(run)
    assert arrays["classes"].shape == (48,) and arrays["confidence"].dtype == np.float32  # 3 epochs x 16 images
    assert ((arrays["confidence"] >= 0.25) & (arrays["confidence"] <= 1)).all()  # top of 4 classes
    assert arrays["sample_images"].shape == (48, 1, 8, 8) and arrays["sample_images"].dtype == np.uint8
    assert (arrays["sample_classes"] == arrays["classes"]).all()  # fewer than 64: every image, in order
    info = json.loads((run / diagnostics.DIAGNOSTICS_SUMMARY).read_text())
    assert sum(info["class_counts"]) == 48 and 0 <= info["normalised_entropy"] <= 1
    assert info["class_counts"] == np.bincount(arrays["classes"], minlength=4).tolist()


def test_an_online_run_has_no_pool_to_diagnose(tiny_zoo, tmp_path):
    summary = harness.run(smoke_spec("dafl", tmp_path / "r"))
    assert diagnostics.read(tmp_path / "r" / summary.name) is None


def test_pixels_round_trip_and_the_sample_is_fixed():
    norm = Normalizer((0.4, 0.5, 0.6), (0.2, 0.25, 0.3))
    pixels = torch.randint(0, 256, (5, 3, 4, 4), dtype=torch.uint8)
    assert torch.equal(diagnostics.to_pixels(norm.from_uint8(pixels), norm), pixels)
    assert diagnostics.sample_indices(1000, 5).tolist() == [0, 250, 500, 749, 999]
    assert diagnostics.sample_indices(3).tolist() == [0, 1, 2]


def test_summary_of_a_balanced_pool_has_entropy_one():
    arrays = {"classes": np.repeat(np.arange(4), 5), "confidence": np.linspace(0.3, 0.9, 20, dtype=np.float32),
              "class_names": np.array(["a", "b", "c", "d"])}
    info = diagnostics.summarize(arrays, 4)
    assert info["normalised_entropy"] == pytest.approx(1.0) and info["class_counts"] == [5, 5, 5, 5]
    assert info["confidence_quantiles"]["0.5"] == pytest.approx(0.6, abs=1e-4)
