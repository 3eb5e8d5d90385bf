"""Segmentation data sets from folders (issue 34, item 3): ``nyuv2`` in the DFKD reference
code's layout (both stored label conventions mapped to 0..12 with 255 unlabelled, resized
to a fixed side) and ``segfolder:PATH`` (paired image and label folders), on tiny PNG
folders made here; every bad folder is one line."""
from __future__ import annotations

import numpy as np
import pytest
import torch
from PIL import Image

from dfkd_bench import segdata
from dfkd_bench.cli import main
from dfkd_bench.data import load_dataset
from dfkd_bench.errors import UserError
from dfkd_bench.registry import DATASETS
from dfkd_bench.segdata import NYU13_CLASSES
from dfkd_bench.tasks import dataset_task


def _image(seed: int, size=(16, 16)) -> np.ndarray:
    return np.random.default_rng(seed).integers(0, 256, (*size, 3), dtype=np.uint8)


def _blocks(values: list[int], size=(16, 16)) -> np.ndarray:
    """A label map of 2 x 2 blocks cycling through ``values``: halving it (nearest) gives
    exactly one value a block."""
    h, w = size
    small = np.resize(np.array(values, dtype=np.uint8), (h // 2) * (w // 2)).reshape(h // 2, w // 2)
    return small.repeat(2, 0).repeat(2, 1)


def _write(path, array: np.ndarray) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    Image.fromarray(array).save(path)


def make_nyu(root, counts=(3, 2), values=(0, 5, 12, 255), size=(16, 16)) -> dict:
    """``root/NYUv2`` in the reference layout: 5-digit PNG names, label PNGs of ``values``."""
    labels = {}
    for split, n in zip(("train", "test"), counts):
        for i in range(n):
            name = f"{i * 7 + (0 if split == 'train' else 1):05d}.png"
            _write(root / "NYUv2" / "image" / split / name, _image(i + 10 * len(split), size))
            labels[split, i] = _blocks(list(values)[i % len(values):] + list(values)[:i % len(values)], size)
            _write(root / "NYUv2" / "seg13" / split / name, labels[split, i])
    return labels


def test_nyuv2_and_segfolder_are_registered_segmentation_sets():
    assert "nyuv2" in DATASETS and "segfolder" in DATASETS
    assert dataset_task("nyuv2") == dataset_task("nyuv2:256") == dataset_task("segfolder:/x") == "segmentation"


def test_nyuv2_keeps_toolkit_labels_and_resizes_to_the_side_asked(tmp_path):
    raw = make_nyu(tmp_path / "data")
    data = load_dataset("nyuv2:8", tmp_path / "data", cache=tmp_path / "cache")
    assert (data.name, data.task, data.num_classes, data.class_names) == ("nyuv2:8", "segmentation", 13, NYU13_CLASSES)
    assert data.train_images.shape == (3, 3, 8, 8) and data.test_images.shape == (2, 3, 8, 8)
    assert data.train_labels.shape == (3, 8, 8) and data.train_labels.dtype == torch.uint8
    # 0..12 and 255 as stored (the nyuv2-python-toolkit's convention); nearest halving keeps each block
    assert torch.equal(data.test_labels[1], torch.from_numpy(raw["test", 1][1::2, 1::2]))
    assert set(data.train_labels.unique().tolist()) == {0, 5, 12, 255}
    assert data.crop_padding == 1 and "labels stored 0..12 with 255 unlabelled" in data.source
    full = load_dataset("nyuv2:16", tmp_path / "data", cache=tmp_path / "cache")  # no resize: the pixels as stored
    assert torch.equal(full.train_images[0], torch.from_numpy(_image(0 + 10 * 5)).permute(2, 0, 1))
    assert torch.equal(full.train_labels[2], torch.from_numpy(raw["train", 2]))


def test_nyuv2_with_zero_unlabelled_is_shifted_to_0_12_and_255(tmp_path):
    raw = make_nyu(tmp_path / "data", values=(0, 1, 7, 13))  # nyuv2-meta-data / DFAD: 0 unlabelled, 1..13
    data = load_dataset("nyuv2:8", tmp_path / "data", cache=tmp_path / "cache")
    expected = torch.from_numpy(raw["train", 1][1::2, 1::2]).long()
    expected = torch.where(expected == 0, torch.tensor(255), expected - 1).to(torch.uint8)
    assert torch.equal(data.train_labels[1], expected)
    assert set(data.train_labels.unique().tolist()) == {255, 0, 6, 12}
    assert "labels stored 1..13 with 0 unlabelled" in data.source


def test_nyuv2_default_side_and_the_folder_named_directly(tmp_path):
    make_nyu(tmp_path / "data", counts=(2, 1))
    data = load_dataset("nyuv2", tmp_path / "data" / "NYUv2", cache=tmp_path / "cache")  # --data-root = the folder
    assert data.name == "nyuv2" and data.train_images.shape == (2, 3, 128, 128)
    assert data.test_labels.shape == (1, 128, 128) and data.crop_padding == 16


def test_nyuv2_is_decoded_once_then_read_from_the_cache(tmp_path, monkeypatch):
    make_nyu(tmp_path / "data")
    first = load_dataset("nyuv2:8", tmp_path / "data", cache=tmp_path / "cache")

    def no_decoding(*args, **kwargs):
        raise AssertionError("decoded again")

    monkeypatch.setattr(segdata, "decode_images", no_decoding)
    again = load_dataset("nyuv2:8", tmp_path / "data", cache=tmp_path / "cache")
    assert torch.equal(again.train_labels, first.train_labels) and again.fingerprint == first.fingerprint


@pytest.mark.parametrize("values, found", [((0, 5, 13, 255), "both 13 and 255"), ((0, 5, 40), "values [40]")])
def test_nyuv2_labels_of_neither_convention_are_one_line(tmp_path, values, found):
    make_nyu(tmp_path / "data", values=values)
    with pytest.raises(UserError) as err:
        load_dataset("nyuv2:8", tmp_path / "data", cache=tmp_path / "cache")
    assert len(str(err.value).splitlines()) == 1 and f"seg13 holds {found}" in str(err.value)


def test_a_missing_nyuv2_is_one_line_naming_the_layout_and_where_to_get_it(tmp_path, capsys):
    with pytest.raises(UserError) as err:
        load_dataset("nyuv2", tmp_path / "nothing")
    text = str(err.value)
    assert len(text.splitlines()) == 1
    assert "image/{train,test}/*.png and seg13/{train,test}/*.png" in text and "NYU Depth V2" in text
    assert "13-class mapping" in text and "--data-root" in text
    code = main(["teachers", "train", "--dataset", "nyuv2", "--arch", "segnet_m", "--data-root",
                 str(tmp_path / "nothing"), "--cache-dir", str(tmp_path / "cache"), "--device", "cpu"])
    err_text = capsys.readouterr().err.strip()
    assert code == 2 and len(err_text.splitlines()) == 1 and "nyuv2 not found" in err_text
    assert not (tmp_path / "cache").exists()


@pytest.mark.parametrize("name", ["nyuv2:7", "nyuv2:0", "nyuv2:big", "nyuv2:2048"])
def test_a_bad_nyuv2_side_is_one_line(tmp_path, name):
    with pytest.raises(UserError, match="expected nyuv2 or nyuv2:SIZE, SIZE the side in pixels"):
        load_dataset(name, tmp_path)


def test_nyuv2_images_without_labels_or_with_bad_labels_are_one_line(tmp_path):
    make_nyu(tmp_path / "a")
    (tmp_path / "a" / "NYUv2" / "seg13" / "test" / "00001.png").unlink()
    with pytest.raises(UserError, match=r"1 image\(s\) of .*image/test have no label map .*00001.png needs"):
        load_dataset("nyuv2:8", tmp_path / "a", cache=tmp_path / "cache")
    make_nyu(tmp_path / "b")
    _write(tmp_path / "b" / "NYUv2" / "seg13" / "train" / "00007.png", np.zeros((8, 16), np.uint8))
    with pytest.raises(UserError, match=r"label map .*00007.png is 16x8 pixels but its image .* is 16x16"):
        load_dataset("nyuv2:8", tmp_path / "b", cache=tmp_path / "cache")
    make_nyu(tmp_path / "c")
    _write(tmp_path / "c" / "NYUv2" / "seg13" / "train" / "00007.png", _image(3))
    with pytest.raises(UserError, match=r"label map .*00007.png is a RGB image; expected a single-channel PNG"):
        load_dataset("nyuv2:8", tmp_path / "c", cache=tmp_path / "cache")


# --- segfolder:PATH ------------------------------------------------------------------

def make_segfolder(root, counts=(4, 2), values=(0, 1, 2, 255), test_split="test", size=(16, 12)) -> dict:
    labels = {}
    for split, n in zip(("train", test_split), counts):
        for i in range(n):
            labels[split, i] = _blocks(list(values)[i:] + list(values)[:i], size)
            _write(root / "images" / split / f"img{i}.jpg" if i % 2 else root / "images" / split / f"img{i}.png",
                   _image(i, size))
            _write(root / "labels" / split / f"img{i}.png", labels[split, i])
    return labels


def test_segfolder_reads_pairs_with_classes_from_the_largest_id(tmp_path):
    raw = make_segfolder(tmp_path / "set")
    data = load_dataset(f"segfolder:{tmp_path / 'set'}", cache=tmp_path / "cache")
    assert data.task == "segmentation" and data.num_classes == 3 and data.class_names == ("0", "1", "2")
    assert data.train_images.shape == (4, 3, 16, 12) and data.test_images.shape == (2, 3, 16, 12)
    assert data.train_labels.shape == (4, 16, 12) and data.train_labels.dtype == torch.uint8
    assert torch.equal(data.test_labels[1], torch.from_numpy(raw["test", 1]))  # 255 stays unlabelled
    assert torch.equal(data.train_images[0], torch.from_numpy(_image(0, (16, 12))).permute(2, 0, 1))
    assert data.crop_padding == 2 and "classes 0..2 from the largest label id" in data.source
    assert data.name == f"segfolder:{(tmp_path / 'set').resolve()}"


def test_segfolder_takes_classes_txt_val_for_test_and_palette_labels(tmp_path):
    root = tmp_path / "set"
    make_segfolder(root, test_split="val", values=(0, 1))
    (root / "classes.txt").write_text("road\nsky\ncar\n\n")
    palette = _blocks([2, 255, 0])  # a palette PNG: its indices are the ids, whatever its colours
    im = Image.frombytes("P", palette.shape[::-1], palette.tobytes())
    im.putpalette([255, 0, 0, 0, 255, 0, 0, 0, 255] * 85 + [0, 0, 0])
    im.save(root / "labels" / "val" / "img0.png")
    _write(root / "images" / "val" / "img0.png", _image(0))
    (root / "labels" / "val" / "img1.png").unlink()
    (root / "images" / "val" / "img1.jpg").unlink()
    for i in range(4):  # one size throughout
        _write(root / "images" / "train" / (f"img{i}.jpg" if i % 2 else f"img{i}.png"), _image(i))
        _write(root / "labels" / "train" / f"img{i}.png", _blocks([0, 1]))
    data = load_dataset(f"segfolder:{root}", cache=tmp_path / "cache")
    assert data.class_names == ("road", "sky", "car") and data.num_classes == 3
    assert len(data.test_labels) == 1 and torch.equal(data.test_labels[0], torch.from_numpy(palette))
    assert "3 classes from classes.txt" in data.source


def test_bad_segfolders_are_one_line(tmp_path, capsys):
    with pytest.raises(UserError, match=r"data set 'segfolder' needs a folder: segfolder:PATH"):
        load_dataset("segfolder")
    with pytest.raises(UserError, match=r"expected .*/images/train/ and .*/images/test/ \(or val/\) of images"):
        load_dataset(f"segfolder:{tmp_path / 'none'}")
    root = tmp_path / "set"
    make_segfolder(root, values=(0, 1, 5))
    (root / "classes.txt").write_text("a\nb\n")
    with pytest.raises(UserError, match=r"holds class id 5, but .*classes.txt names 2 classes"):
        load_dataset(f"segfolder:{root}", cache=tmp_path / "cache")
    blank = tmp_path / "blank"
    make_segfolder(blank, values=(255,))
    with pytest.raises(UserError, match="no labelled pixel in any label map"):
        load_dataset(f"segfolder:{blank}", cache=tmp_path / "cache")
    code = main(["teachers", "train", "--dataset", f"segfolder:{root}", "--arch", "segnet_s", "--cache-dir",
                 str(tmp_path / "cache2"), "--device", "cpu"])
    err = capsys.readouterr().err.strip()
    assert code == 2 and len(err.splitlines()) == 1 and "holds class id 5" in err
    assert not (tmp_path / "cache2" / "teachers").exists()
