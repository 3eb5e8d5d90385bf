"""The data-free methods of Table 3 on segmentation (issue 34): each class-based term's
dense reading checked exactly on hand-made logits, and Fast, SSD-KD, DFAD and DAFL run
end to end on a tiny shapes set with mIoU and per-image class histograms recorded."""
from __future__ import annotations

import json
import math

import numpy as np
import pytest
import torch

from dfkd_bench import diagnostics, harness
from dfkd_bench.data import load_dataset
from dfkd_bench.inversion import (adversarial_kl_agree, information_entropy_loss, kd_loss, per_image,
                                  top_class_share)
from dfkd_bench.plan import plan_runs
from dfkd_bench.pool import PriorityReplay
from dfkd_bench.tasks import CLASSIFICATION, SEGMENTATION, TARGET_GRID, class_histograms
from dfkd_bench.teachers import TrainRecipe, train_teacher
from tests.test_segmentation_task import TINY
from tests.test_ssdkd import make


def dense_logits(classes: torch.Tensor, num_classes: int, scale: float = 5.0) -> torch.Tensor:
    """Logits N x C x H x W whose argmax is ``classes`` (N x H x W)."""
    return scale * torch.nn.functional.one_hot(classes, num_classes).permute(0, 3, 1, 2).float()


def test_class_histograms_count_each_images_pixels():
    classes = torch.tensor([[[0, 0], [1, 2]], [[2, 2], [2, 2]]])  # two 2 x 2 images
    hist = class_histograms(classes, 4)
    assert hist.tolist() == [[0.5, 0.25, 0.25, 0.0], [0.0, 0.0, 1.0, 0.0]]
    assert SEGMENTATION.teacher_classes(dense_logits(classes, 4)).tolist() == hist.tolist()
    assert CLASSIFICATION.teacher_classes(torch.eye(3)[[2, 0]]).tolist() == [2, 0]


def test_random_class_maps_are_blocks_of_random_classes():
    g = torch.Generator().manual_seed(0)
    maps = SEGMENTATION.random_targets(64, 5, (8, 12), "cpu", generator=g)
    assert maps.shape == (64, 8, 12) and maps.dtype == torch.int64
    assert int(maps.min()) == 0 and int(maps.max()) == 4
    # constant inside each of the grid's cells (4 x 6 pixels at 8 x 12)
    cells = maps.reshape(64, TARGET_GRID, 8 // TARGET_GRID, TARGET_GRID, 12 // TARGET_GRID)
    assert bool((cells == cells[:, :, :1, :, :1]).all())
    # the classification draw is unchanged (the studies' random stream)
    a = CLASSIFICATION.random_targets(16, 10, (32, 32), "cpu", generator=torch.Generator().manual_seed(3))
    assert a.tolist() == torch.randint(10, (16,), generator=torch.Generator().manual_seed(3)).tolist()


def test_class_based_terms_read_every_pixel_as_a_prediction():
    classes = torch.tensor([[[0, 0], [0, 1]], [[1, 1], [1, 1]]])
    logits = dense_logits(classes, 2, scale=50.0)  # confident: one-hot probabilities
    # batch-mean pixel prediction: 3/8 class 0, 5/8 class 1
    p = torch.tensor([3 / 8, 5 / 8])
    assert information_entropy_loss(logits).item() == pytest.approx(float((p * p.log()).sum()), abs=1e-6)
    assert top_class_share(logits).item() == pytest.approx(5 / 8)
    # a flat dense prediction is the uniform one, as for a classifier
    assert information_entropy_loss(torch.zeros(2, 3, 4, 4)).item() == pytest.approx(-math.log(3))


def test_kd_per_pixel_and_per_image():
    torch.manual_seed(0)
    s, t = torch.randn(3, 4, 5, 5), torch.randn(3, 4, 5, 5)
    pixels = kd_loss(s, t, 2.0, reduction="none")
    assert pixels.shape == (3, 5, 5)
    flat = kd_loss(s.permute(0, 2, 3, 1).reshape(-1, 4), t.permute(0, 2, 3, 1).reshape(-1, 4), 2.0, reduction="none")
    assert torch.allclose(pixels.flatten(), flat, atol=1e-6)
    assert torch.allclose(per_image(pixels), flat.reshape(3, 25).mean(1), atol=1e-6)
    assert kd_loss(s, t, 2.0).item() == pytest.approx(flat.mean().item(), abs=1e-6)
    v = torch.tensor([1.0, 2.0])
    assert per_image(v) is v


def test_fast_adversarial_term_counts_agreeing_pixels():
    t = dense_logits(torch.tensor([[[0, 1]]]), 2, scale=3.0)  # one 1 x 2 image
    s = t.clone()
    s[0, :, 0, 1] = torch.tensor([1.0, 0.0])  # pixel 1 now disagrees (student says class 0)
    s[0, :, 0, 0] = torch.tensor([2.0, 0.0])  # pixel 0 agrees, with a smaller margin
    kl0 = kd_loss(s[0, :, 0, 0][None], t[0, :, 0, 0][None], 1.0).item()
    assert adversarial_kl_agree(s, t).item() == pytest.approx(-kl0 / 2, abs=1e-6)


def test_a_segmentation_buffer_shares_classes_by_pixels():
    buf = PriorityReplay(4)
    hists = torch.tensor([[1.0, 0.0, 0.0], [0.5, 0.5, 0.0]])
    buf.add(torch.zeros(2, 3, 2, 2), None, {"priority": torch.ones(2), "teacher_class": hists})
    shares = buf.class_share(torch.tensor([[[0, 1], [2, 0]]]))
    assert shares.tolist() == [[[0.75, 0.25], [0.0, 0.75]]]
    ids = PriorityReplay(4)
    ids.add(torch.zeros(4, 1), None, {"priority": torch.ones(4), "teacher_class": torch.tensor([0, 0, 1, 2])})
    assert ids.class_share(torch.tensor([0, 2, 3])).tolist() == [0.5, 0.25, 0.0]
    assert ids.class_share(torch.tensor([[0, 1]])).tolist() == [[0.5, 0.25]]


def test_ssdkd_phi_is_per_pixel_against_the_buffers_pixel_shares():
    method = make(gamma=2.0)
    method.buffer.add(torch.zeros(1, 3, 2, 2), None, {"priority": torch.ones(1),
                                            "teacher_class": torch.tensor([[0.75, 0.25, 0, 0, 0]])})
    logits = torch.zeros(1, 5, 1, 2)
    logits[0, 0, 0, 0] = 10.0  # pixel 0: class 0, confident
    logits[0, 1, 0, 1] = 1.0  # pixel 1: class 1, unsure
    prob = logits.softmax(1)
    phi = method.phi(logits)
    expected = torch.tensor([[[(1 - 0.75) * (1 - prob[0, 0, 0, 0]) ** 2, (1 - 0.25) * (1 - prob[0, 1, 0, 1]) ** 2]]])
    assert phi.shape == (1, 1, 2) and torch.allclose(phi, expected, atol=1e-6)


@pytest.fixture()
def shapes_teacher(cache):
    train_teacher(load_dataset(TINY), "segnet_m", torch.device("cpu"), TrainRecipe(epochs=3, batch_size=16, lr=0.05),
                  precision="fp32", resumable=False)
    return cache


@pytest.mark.parametrize("method", ["fast", "ssdkd", "dfad", "dafl", "noise"])
def test_table3_methods_run_end_to_end_on_segmentation(shapes_teacher, tmp_path, method):
    spec = plan_runs([method], dataset=TINY, pair="segnet_m-segnet_s", preset="smoke", device="cpu",
                     sets={"precision": "fp32"}, out=tmp_path / "runs")[0]
    summary = harness.run(spec)
    assert summary.completed and summary.metric == "mIoU" and 0 <= summary.final_top1 <= 100
    run_dir = tmp_path / "runs" / summary.name
    if method in ("fast", "ssdkd"):  # pool methods leave their pool's diagnostics
        arrays = diagnostics.read(run_dir)
        hist = arrays["class_histograms"]
        assert hist.shape[1] == 5 and np.allclose(hist.sum(1), 1.0, atol=1e-5)
        assert (arrays["classes"] == hist.argmax(1)).all()
        summary_json = json.loads((run_dir / diagnostics.DIAGNOSTICS_SUMMARY).read_text())
        assert len(summary_json["pixel_class_share"]) == 5 and 0 <= summary_json["normalised_entropy"] <= 1


def test_pool_figures_draw_pixel_class_shares_for_segmentation(tmp_path):
    from dfkd_bench.figures import Style, _histograms, class_shares

    hist = np.array([[1.0, 0.0, 0.0], [0.5, 0.25, 0.25]], dtype=np.float32)
    arrays = {"class_histograms": hist, "classes": np.array([0, 0]), "confidence": np.array([0.9, 0.6], np.float32),
              "class_names": np.array(["bg", "disc", "square"])}
    assert class_shares(arrays, 3).tolist() == [0.75, 0.125, 0.125]
    plain = {**arrays}
    del plain["class_histograms"]
    assert class_shares(plain, 3).tolist() == [1.0, 0.0, 0.0]  # per image: both images' class is 0
    fig = _histograms(arrays, "t", Style(color="#000000", marker="o"))
    by_class = fig.axes[0]
    assert [p.get_height() for p in by_class.patches] == pytest.approx([0.75, 0.125, 0.125])
    assert by_class.get_ylabel() == "share of the pool's pixels"


KILLED_RUN = """
import os, signal, sys
import tests.test_segmentation_task  # registers the tiny shapes set
from dfkd_bench import harness
from dfkd_bench.events import RunObserver
from dfkd_bench.plan import plan_runs

class Kill(RunObserver):
    def epoch(self, epoch, record):
        if epoch == 1:
            os.kill(os.getpid(), signal.SIGKILL)

spec = plan_runs([sys.argv[1]], dataset=sys.argv[2], pair="segnet_m-segnet_s", preset="smoke", device="cpu",
                 epochs=4, sets={"precision": "fp32"}, out=sys.argv[3])[0]
harness.run(spec, Kill())
"""


@pytest.mark.parametrize("method", ["ssdkd", "kd"])
def test_a_segmentation_run_killed_with_sigkill_resumes_exactly(shapes_teacher, tmp_path, method):
    import os
    import subprocess
    import sys

    from tests.helpers import same_tensors, student_state
    from tests.conftest import ROOT

    def spec(out):
        return plan_runs([method], dataset=TINY, pair="segnet_m-segnet_s", preset="smoke", device="cpu", epochs=4,
                         sets={"precision": "fp32"}, out=out)[0]

    full = harness.run(spec(tmp_path / "full"))
    killed = subprocess.run([sys.executable, "-c", KILLED_RUN, method, TINY, str(tmp_path / "cut")], cwd=ROOT,
                            env={**os.environ, "PYTHONPATH": str(ROOT)}, capture_output=True, text=True)
    assert killed.returncode == -9, killed.stderr[-2000:]
    cut = json.loads((tmp_path / "cut" / full.name / "summary.json").read_text())
    assert cut["status"] == "running" and cut["epochs_done"] == 2  # epochs 0 and 1 checkpointed, then killed
    resumed = harness.run(spec(tmp_path / "cut"))
    assert resumed.completed and resumed.metric == "mIoU"
    assert resumed.final_top1 == full.final_top1
    assert same_tensors(student_state(full, tmp_path / "full"), student_state(resumed, tmp_path / "cut"))


def test_a_long_pool_figure_title_stays_inside_the_figure():
    from dfkd_bench.figures import Style, _histograms

    arrays = {"classes": np.array([0, 1, 1]), "confidence": np.array([0.9, 0.6, 0.7], np.float32),
              "class_names": np.array(["bg", "disc"])}
    title = ("ssdkd-shapes, shapes: segnet_m → segnet_s, data scale 176: teacher's view of the final pool "
             "(176 images, seed 0, the first of seeds 0, 1, 2)")
    fig = _histograms(arrays, title, Style(color="#000000", marker="o"))
    fig.canvas.draw()
    box = fig._suptitle.get_window_extent()
    assert box.x0 >= 0 and box.x1 <= fig.bbox.width
