"""The teacher zoo for segmentation (issue 34, item 6): ``teachers import`` of a segmentation
state dict measures and records mIoU, reading the file weights-only; a class-count mismatch
of a per-pixel head is named; ``teachers train --task`` is a check that agrees with the
data set's task, or one line and exit code 2."""
from __future__ import annotations

import pytest
import torch

from dfkd_bench.cli import main
from dfkd_bench.data import load_dataset
from dfkd_bench.models import build_model
from dfkd_bench.teachers import Normalizer, evaluator_for, teacher_metadata, teacher_paths
from tests.test_segmentation_task import TINY  # registers the tiny shapes set


def _cli(capsys, *argv) -> tuple[int, str, str]:
    code = main(list(argv))
    out, err = capsys.readouterr()
    return code, out, err.strip()


def test_import_of_a_segnet_state_dict_records_miou_read_weights_only(cache, tmp_path, capsys, monkeypatch):
    torch.manual_seed(0)
    model = build_model("segnet_m", 5)
    path = tmp_path / "segnet_m_shapes.pt"
    torch.save(model.state_dict(), path)  # a bare state dict
    calls = []
    real_load = torch.load

    def recording_load(*args, **kwargs):
        calls.append(kwargs.get("weights_only"))
        return real_load(*args, **kwargs)

    monkeypatch.setattr(torch, "load", recording_load)
    code, out, err = _cli(capsys, "teachers", "import", str(path), "--dataset", "shapes", "--arch", "segnet_m",
                          "--normalization", "dataset", "--task", "segmentation", "--device", "cpu")
    assert code == 0, err
    assert calls and all(w is True for w in calls)  # every load of the file (and the data cache) weights-only
    meta = teacher_metadata("shapes", "segnet_m")
    data = load_dataset("shapes")
    expected = evaluator_for(data, Normalizer(data.mean, data.std)).scores(model.eval())["miou"]
    assert meta["metric"] == "mIoU" and meta["top1"] == pytest.approx(expected, abs=1e-3)
    assert meta["recipe"] == {"imported": True} and meta["normalization"]["name"] == "dataset"
    assert "test mIoU" in " ".join(out.split())
    code, out, _ = _cli(capsys, "teachers", "verify", "--dataset", "shapes", "--arch", "segnet_m", "--device", "cpu")
    assert code == 0 and "ok:" in out and "test mIoU" in " ".join(out.split())


def test_a_segmentation_checkpoint_for_another_class_count_is_named_in_one_line(cache, tmp_path, capsys):
    path = tmp_path / "seven.pt"
    torch.save({"state_dict": build_model("segnet_m", 7).state_dict()}, path)
    code, _, err = _cli(capsys, "teachers", "import", str(path), "--dataset", TINY, "--arch", "segnet_m",
                        "--device", "cpu")
    assert code == 2 and len(err.splitlines()) == 1
    assert "is a 7-class segnet_m (classifier.weight has shape (7, 16, 1, 1)), but tiny-shapes has 5 classes" in err
    assert not teacher_paths(TINY, "segnet_m")[0].exists()


def test_teachers_train_task_agrees_with_the_data_set_or_stops_in_one_line(cache, capsys):
    code, out, err = _cli(capsys, "teachers", "train", "--dataset", TINY, "--arch", "segnet_s", "--task",
                          "segmentation", "--epochs", "1", "--device", "cpu", "--precision", "fp32")
    assert code == 0, err
    meta = teacher_metadata(TINY, "segnet_s")
    assert meta["metric"] == "mIoU" and "test mIoU" in " ".join(out.split())
    for dataset, task, actual in ((TINY, "classification", "segmentation"), ("digits", "segmentation",
                                                                              "classification")):
        code, _, err = _cli(capsys, "teachers", "train", "--dataset", dataset, "--arch", "segnet_s", "--task", task,
                            "--force", "--device", "cpu")
        assert code == 2 and len(err.splitlines()) == 1
        assert f"--task {task}: data set {dataset} is a {actual} set" in err and f"--task {actual}" in err
    code, _, err = _cli(capsys, "teachers", "train", "--dataset", TINY, "--arch", "segnet_s", "--task", "detection")
    assert code == 2 and len(err.splitlines()) == 1 and "invalid choice: 'detection'" in err
    assert teacher_metadata(TINY, "segnet_s")["sha256"] == meta["sha256"]  # the refusals wrote nothing
    assert not teacher_paths("digits", "segnet_s")[0].exists()
