"""Segmentation as a task of the one harness (issue 34): label maps move with their images,
the embedded ``shapes`` set is registered and deterministic, a teacher trains on it, the
real-data baselines run end to end with mIoU recorded, a method without a segmentation reading is refused
at plan time and the report names the metric."""
from __future__ import annotations

import pytest
import torch

from dfkd_bench import harness, report
from dfkd_bench.cli import main
from dfkd_bench.data import (DataBundle, _apply_crop_flip, load_dataset, random_crop_flip,
                             random_crop_flip_with_labels, shapes_bundle)
from dfkd_bench.errors import UserError
from dfkd_bench.pairs import resolve_pair
from dfkd_bench.plan import plan_runs
from dfkd_bench.registry import DATASETS
from dfkd_bench.segmentation import IGNORE_INDEX, SHAPE_CLASSES
from dfkd_bench.tasks import CLASSIFICATION, SEGMENTATION, dataset_task
from dfkd_bench.teachers import Normalizer, TrainRecipe, evaluator_for, train_teacher, verify

TINY = "tiny-shapes"


def tiny_shapes(name: str = TINY, root=None, download: bool = False) -> DataBundle:
    """48 train and 24 test 16 x 16 shapes images: the task's test size."""
    return shapes_bundle(48, 24, 16, name=TINY)


tiny_shapes.task = "segmentation"
if TINY not in DATASETS:
    DATASETS.register(TINY, tiny_shapes)


def test_crop_and_flip_move_the_label_map_with_its_image():
    # A 1 x 1 x 2 x 3 image and its label map, cropped with padding 1 at a known offset.
    x = torch.arange(6, dtype=torch.float32).reshape(1, 1, 2, 3) + 1
    y = torch.tensor([[[0, 1, 2], [3, 4, 0]]], dtype=torch.uint8)
    g = torch.Generator().manual_seed(0)
    for _ in range(20):
        state = g.get_state()
        xs, ys = random_crop_flip_with_labels(x, y, 1, True, g)
        g.set_state(state)
        assert torch.equal(xs, random_crop_flip(x, 1, True, g))  # the same draws as the image-only crop
        # Every label moved to where its pixel went: pixel value v - 1 is the index of label v's source.
        moved = xs[0, 0] != 0
        assert torch.equal(ys[0][moved], y.flatten()[(xs[0, 0][moved] - 1).long()])
        assert bool((ys[0][~moved] == IGNORE_INDEX).all())  # padding is unlabelled
    # Exact cases: the window at offsets (0, 0) without a flip moves everything down-right by
    # one, image and labels alike; at (1, 1) with a flip both are mirrored.
    shifted = (torch.tensor([0]), torch.tensor([0]), torch.tensor([False]))
    assert torch.equal(_apply_crop_flip(x, 1, shifted)[0, 0], torch.tensor([[0., 0., 0.], [0., 1., 2.]]))
    assert torch.equal(_apply_crop_flip(y[:, None], 1, shifted, IGNORE_INDEX)[0, 0],
                       torch.tensor([[255, 255, 255], [255, 0, 1]], dtype=torch.uint8))
    mirrored = (torch.tensor([1]), torch.tensor([1]), torch.tensor([True]))
    assert torch.equal(_apply_crop_flip(x, 1, mirrored)[0, 0], x[0, 0].flip(1))
    assert torch.equal(_apply_crop_flip(y[:, None], 1, mirrored, IGNORE_INDEX)[0, 0], y[0].flip(1))


def test_classification_keeps_its_labels_and_its_crop():
    x, labels = torch.rand(4, 1, 6, 6), torch.arange(4)
    a, b = torch.Generator().manual_seed(3), torch.Generator().manual_seed(3)
    xs, ys = CLASSIFICATION.crop_flip(x, labels, 2, True, a)
    assert torch.equal(xs, random_crop_flip(x, 2, True, b)) and ys is labels


def test_shapes_is_registered_deterministic_and_a_segmentation_set():
    assert dataset_task("shapes") == "segmentation" and dataset_task("digits") == "classification"
    assert resolve_pair(None, "shapes", "cpu").name == "segnet_m-segnet_s"
    a, b = load_dataset("shapes"), load_dataset("shapes")
    assert a.fingerprint == b.fingerprint and torch.equal(a.train_labels, b.train_labels)
    assert a.train_images.shape == (2000, 3, 32, 32) and a.test_labels.shape == (500, 32, 32)
    assert a.num_classes == len(SHAPE_CLASSES) == 5 and a.task == "segmentation"
    assert set(a.train_labels.unique().tolist()) == set(range(5))
    assert not torch.equal(a.train_images[:500], a.test_images)  # the splits are generated apart


def test_segmentation_metric_counts_match_the_confusion_matrix():
    from dfkd_bench.segmentation import confusion_matrix, miou, pixel_accuracy

    g = torch.Generator().manual_seed(0)
    logits = torch.randn(3, 5, 4, 4, generator=g)
    labels = torch.randint(0, 5, (3, 4, 4), generator=g).to(torch.uint8)
    labels[0, 0] = IGNORE_INDEX
    cm = confusion_matrix(logits.argmax(1), labels, 5)
    got = SEGMENTATION.scores(SEGMENTATION.batch_counts(logits, labels, 5))
    assert got == {"miou": miou(cm), "pixel_accuracy": pixel_accuracy(cm)}


def test_a_teacher_trained_on_shapes_beats_chance_miou(cache):
    data = load_dataset(TINY)
    model, meta = train_teacher(data, "segnet_s", torch.device("cpu"), TrainRecipe(epochs=10, batch_size=16, lr=0.05),
                                precision="fp32", resumable=False)
    scores = evaluator_for(data, Normalizer(data.mean, data.std)).scores(model)
    # Chance: an all-background answer, the commonest, scores background IoU / 5 classes.
    background = float((data.test_labels == 0).float().mean()) * 100
    assert meta["metric"] == "mIoU" and meta["top1"] == pytest.approx(scores["miou"], abs=1e-3)
    assert scores["miou"] > background / len(SHAPE_CLASSES) + 15  # 45.1 against 16.0 when written
    assert scores["pixel_accuracy"] > background - 1
    checked = verify(TINY, "segnet_s", data=data)
    assert checked["ok"] and checked["metric"] == "mIoU"


@pytest.fixture()
def shapes_zoo(cache):
    data = load_dataset(TINY)
    train_teacher(data, "segnet_m", torch.device("cpu"), TrainRecipe(epochs=3, batch_size=16, lr=0.05),
                  precision="fp32", resumable=False)
    return cache


def test_kd_and_scratch_run_end_to_end_with_miou(shapes_zoo, tmp_path):
    specs = plan_runs(["kd", "scratch"], dataset=TINY, pair="segnet_m-segnet_s", preset="smoke", device="cpu",
                      sets={"precision": "fp32"}, out=tmp_path / "results")
    summaries = [harness.run(spec) for spec in specs]
    for s in summaries:
        assert s.completed and s.metric == "mIoU"
        assert 0 <= s.final_top1 <= 100 and s.teacher_top1 is not None
    rep = report.write_report(tmp_path / "results", tmp_path / "report")
    table = (tmp_path / "report" / f"table__{TINY}.md").read_text()
    assert "mIoU and train time" in table and "final test mIoU %" in table
    assert "mIoU %" in rep.rows[0] and "top-1 %" not in rep.rows[0]
    index = (tmp_path / "report" / "index.md").read_text()
    assert "Final student mIoU against train time" in index and "Student test mIoU at each" in index
    assert "mIoU" in (tmp_path / "report" / "comparison.md").read_text()


def test_a_data_free_method_is_refused_for_segmentation_in_one_line(tmp_path, capsys):
    with pytest.raises(UserError, match="method cmi does not support segmentation yet"):
        plan_runs(["cmi"], dataset="shapes", device="cpu", out=tmp_path / "r")
    code = main(["run", "--methods", "kd,deepinv", "--dataset", "shapes", "--device", "cpu",
                 "--out", str(tmp_path / "r")])
    err = capsys.readouterr().err.strip()
    assert code == 2 and len(err.splitlines()) == 1 and "deepinv does not support segmentation" in err
    assert not (tmp_path / "r").exists()
