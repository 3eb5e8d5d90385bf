"""Segmentation data sets from folders the user provides: ``nyuv2`` (the SSD-KD paper's
Table 3 set) and ``segfolder:PATH`` (any paired image/label folder).

Both give a ``DataBundle`` with ``task="segmentation"``: uint8 images N x C x H x W and
uint8 label maps N x H x W holding class ids, ``IGNORE_INDEX`` (255) for unlabelled
pixels. Images are decoded with ``data.decode_images`` and the result is kept in the same
tensor cache as every other data set (``data._cached_tensors``), keyed by the folder's
file listing (and for NYUv2 the resolution), so later loads read one file.

Label PNGs are read as the class ids they store (mode L or P: a palette PNG's indices, not
its colours; 16-bit greyscale where every id fits in 8 bits), never converted to RGB.
"""
from __future__ import annotations

import hashlib
import os
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F

from .data import (IMAGE_EXTENSIONS, DataBundle, DecodeProgress, _cached_tensors, _listing_key, channel_stats,
                   decode_images)
from .errors import UserError
from .paths import data_dir
from .registry import DATASETS
from .segmentation import IGNORE_INDEX

# --- NYUv2 ---------------------------------------------------------------------------

# The 13 classes of Couprie et al. (ICLR 2013) in the order of their label ids 1..13, as the
# nyuv2-meta-data / SceneNet mapping the DFKD reference code uses lists them.
NYU13_CLASSES = ("bed", "books", "ceiling", "chair", "floor", "furniture", "objects", "picture", "sofa", "table",
                 "tv", "wall", "window")
# The side every NYUv2 image and label map is resized to unless ``nyuv2:SIZE`` says otherwise.
# 128 is the references' synthetic and training resolution (DFAD's and Fast's NYUv2
# generators make 128 x 128 images; Fast trains on 128 x 128 crops), a quarter of the
# DeepLabV3-ResNet50 teacher's cost at 256, and it keeps the 1,449 images at 71 MB of uint8.
# Square because the generators make square images, so real and synthetic inputs agree.
NYUV2_SIZE = 128
NYUV2_FOLDERS = ("NYUv2", "nyuv2")
NYUV2_LAYOUT = "image/{train,test}/*.png and seg13/{train,test}/*.png (13-class label PNGs, same file names)"
NYUV2_WHERE = ("the labelled NYU Depth V2 set (nyu_depth_v2_labeled.mat, from the NYU Depth Dataset V2 page) "
               "extracted with the reference code's 13-class mapping (extract_nyuv2.py of VainF's "
               "nyuv2-python-toolkit); see README, Segmentation")
_DECODE_CHUNK = 128  # images decoded at full size at a time before resizing (480 x 640 x 3: 118 MB)


@DATASETS.register("nyuv2")
def load_nyuv2(name: str = "nyuv2", root=None, download: bool = False, cache=None,
               progress: DecodeProgress | None = None) -> DataBundle:
    """NYUv2 (13 classes; 795 train / 654 test indoor scenes) from a folder you provide, in
    the DFKD reference code's layout, resized to 128 x 128 (nyuv2:SIZE for another side).

    The folder is ``<data-root>/NYUv2`` (or ``nyuv2``, or ``--data-root`` itself) holding
    ``image/{train,test}/*.png`` and ``seg13/{train,test}/*.png``. Labels are mapped to
    0..12 with 255 for unlabelled pixels; both stored conventions are read (see
    ``nyu13_label_map``). Every image and label map is resized whole (bilinear with
    antialiasing; nearest for labels), 480 x 640 to SIZE x SIZE, so every labelled pixel
    stays in the test split, as in the references' full-image evaluation."""
    size = nyuv2_size(name)
    base = data_dir(root)
    folder = locate_nyuv2(root)
    if folder is None:
        raise UserError(f"nyuv2 not found: expected {base / NYUV2_FOLDERS[0]} (or {base / NYUV2_FOLDERS[1]}, or {base} "
                        f"itself) to hold {NYUV2_LAYOUT}; get {NYUV2_WHERE}, then pass --data-root DIR naming "
                        f"the folder or the one above it")
    splits = {split: _paired_files(folder / "image" / split, folder / "seg13" / split) for split in ("train", "test")}
    files = [f for images, labels in splits.values() for f in images + labels]
    key = hashlib.sha256(f"{_listing_key(folder, files)} nyu13 size {size}".encode()).hexdigest()

    def build() -> dict:
        out: dict = {"class_names": list(NYU13_CLASSES)}
        values: set[int] = set()
        for split, (images, labels) in splits.items():
            out[f"{split}_images"], raw, seen = _decode_pairs(images, labels, f"decoding nyuv2/{split}", progress,
                                                              size=size, channels=3)
            out[f"{split}_labels"] = raw
            values |= seen
        lut, out["label_note"] = nyu13_label_map(values, folder)
        for split in splits:
            out[f"{split}_labels"] = lut[out[f"{split}_labels"].long()]
        out["mean"], out["std"] = channel_stats(out["train_images"])
        return out

    tensors = _cached_tensors("nyuv2", key, build, cache)
    return DataBundle(
        name="nyuv2" if size == NYUV2_SIZE else f"nyuv2:{size}", train_images=tensors["train_images"],
        train_labels=tensors["train_labels"], test_images=tensors["test_images"], test_labels=tensors["test_labels"],
        num_classes=len(NYU13_CLASSES), mean=tuple(tensors["mean"]), std=tuple(tensors["std"]),
        crop_padding=size // 8, flip=True, class_names=NYU13_CLASSES,
        source=f"NYUv2 at {folder.resolve()}, resized to {size}x{size}; {tensors['label_note']}", task="segmentation",
    )


load_nyuv2.task = "segmentation"  # read at planning time (tasks.dataset_task), before any data loads


def nyuv2_size(name: str) -> int:
    """The side of ``nyuv2`` (``NYUV2_SIZE``) or ``nyuv2:SIZE``: a multiple of 8 (the
    DeepLabV3 nets' output stride) from 8 to 1024."""
    arg = name.split(":", 1)[1] if ":" in name else ""
    if not arg:
        return NYUV2_SIZE
    if not arg.isdigit() or not 8 <= int(arg) <= 1024 or int(arg) % 8:
        raise UserError(f"{name!r}: expected nyuv2 or nyuv2:SIZE, SIZE the side in pixels every image is resized to, "
                        f"a multiple of 8 from 8 to 1024 (default {NYUV2_SIZE})")
    return int(arg)


def locate_nyuv2(root) -> Path | None:
    """The folder under ``root`` (``--data-root``) that holds NYUv2's ``image/`` and ``seg13/``
    splits: ``<root>/NYUv2``, ``<root>/nyuv2``, then ``root`` itself."""
    base = data_dir(root)
    for candidate in (*(base / n for n in NYUV2_FOLDERS), base):
        if all((candidate / kind / split).is_dir() for kind in ("image", "seg13") for split in ("train", "test")):
            return candidate
    return None


def nyu13_label_map(values: set[int], folder: Path) -> tuple[torch.Tensor, str]:
    """A 256-entry lookup table from the stored label values to 0..12 / 255, and a note
    saying which convention it read. NYUv2's 13-class PNGs come in two conventions:

    - 0..12 the classes, 255 unlabelled: the nyuv2-python-toolkit's extraction (it stores
      the 1..13 ids minus one, so the unlabelled 0 wraps to 255), read as-is by Fast's
      ``NYUv2`` class. Kept as it is.
    - 0 unlabelled, 1..13 the classes: the nyuv2-meta-data label PNGs that DFAD's
      ``NYUv2`` class reads and maps through ``[255, 0, 1, ..., 12]``. Shifted down by one,
      0 to 255.

    The convention is the set's, decided from every value in both splits: a 13 means the
    second (in it the window class, 13, is in a great many images), else the first. A set
    holding both 13 and 255, or any other value, is refused."""
    other = sorted(v for v in values if v > 13 and v != IGNORE_INDEX)
    if other or (13 in values and IGNORE_INDEX in values):
        found = f"values {other[:5]}" if other else "both 13 and 255"
        raise UserError(f"{folder}/seg13 holds {found}; expected the 13-class ids, either 0..12 with 255 for "
                        f"unlabelled pixels or 1..13 with 0 for unlabelled pixels")
    lut = torch.arange(256, dtype=torch.uint8)
    if 13 in values:
        lut = torch.full((256,), IGNORE_INDEX, dtype=torch.uint8)
        lut[1:14] = torch.arange(13, dtype=torch.uint8)
        return lut, "labels stored 1..13 with 0 unlabelled, read as 0..12 with 255 unlabelled"
    return lut, "labels stored 0..12 with 255 unlabelled"


# --- segfolder:PATH ------------------------------------------------------------------

@DATASETS.register("segfolder")
def load_segfolder(name: str, root=None, download: bool = False, cache=None,
                   progress: DecodeProgress | None = None) -> DataBundle:
    """segfolder:PATH, any paired segmentation folder: images/<split>/NAME.<ext> with labels/<split>/NAME.png.

    Splits are ``train`` and ``test`` (``val`` stands in for a missing ``test``). A label
    PNG holds one class id per pixel (mode L or P), 255 for unlabelled pixels, and has its
    image's size; all images are of one size. The classes are the lines of
    ``PATH/classes.txt`` where there is one (a label id beyond them is refused), else
    0..the largest id found in either split. Mean and std are measured on the train split."""
    arg = name.split(":", 1)[1] if ":" in name else ""
    if not arg:
        raise UserError("data set 'segfolder' needs a folder: segfolder:PATH (PATH holds images/train/, "
                        "labels/train/, images/test/ and labels/test/)")
    folder = Path(arg).expanduser()
    if not folder.is_absolute() and not folder.is_dir() and (data_dir(root) / folder).is_dir():
        folder = data_dir(root) / folder
    test = next((s for s in ("test", "val") if (folder / "images" / s).is_dir()), None)
    if not all((folder / kind / split).is_dir() for kind in ("images", "labels") for split in ("train", test or "test")):
        raise UserError(f"segfolder:{arg}: expected {folder}/images/train/ and {folder}/images/test/ (or val/) of "
                        f"images, and {folder}/labels/train/ and labels/test/ of label PNGs with the same names")
    splits = {split: _paired_files(folder / "images" / folder_split, folder / "labels" / folder_split)
              for split, folder_split in (("train", "train"), ("test", test))}
    classes_file = folder / "classes.txt"
    class_names = _read_classes(classes_file) if classes_file.is_file() else None
    files = [f for images, labels in splits.values() for f in images + labels]
    key = _listing_key(folder, files + ([str(classes_file)] if class_names is not None else []))

    def build() -> dict:
        out: dict = {}
        values: set[int] = set()
        for split, (images, labels) in splits.items():
            out[f"{split}_images"], out[f"{split}_labels"], seen = _decode_pairs(
                images, labels, f"decoding {folder.name}/{split}", progress)
            values |= seen
        ids = sorted(values - {IGNORE_INDEX})
        if not ids:
            raise UserError(f"segfolder:{arg}: no labelled pixel in any label map (every pixel is 255, unlabelled)")
        if class_names is None:
            out["class_names"] = [str(c) for c in range(ids[-1] + 1)]
            out["classes_from"] = f"classes 0..{ids[-1]} from the largest label id"
        else:
            if ids[-1] >= len(class_names):
                raise UserError(f"segfolder:{arg}: a label map holds class id {ids[-1]}, but {classes_file} names "
                                f"{len(class_names)} classes (ids 0..{len(class_names) - 1}, 255 unlabelled)")
            out["class_names"] = class_names
            out["classes_from"] = f"{len(class_names)} classes from classes.txt"
        if out["train_images"].shape[2:] != out["test_images"].shape[2:]:
            raise UserError(f"segfolder:{arg}: train images are {tuple(out['train_images'].shape[2:])} pixels but "
                            f"test images {tuple(out['test_images'].shape[2:])}; resize them to one size")
        if {out["train_images"].shape[1], out["test_images"].shape[1]} == {1, 3}:  # grey beside colour: colour
            for split in ("train", "test"):
                out[f"{split}_images"] = out[f"{split}_images"].expand(-1, 3, -1, -1).contiguous()
        out["mean"], out["std"] = channel_stats(out["train_images"])
        return out

    tensors = _cached_tensors("segfolder", key, build, cache)
    height = tensors["train_images"].shape[2]
    return DataBundle(
        name=f"segfolder:{folder.resolve()}", train_images=tensors["train_images"],
        train_labels=tensors["train_labels"], test_images=tensors["test_images"], test_labels=tensors["test_labels"],
        num_classes=len(tensors["class_names"]), mean=tuple(tensors["mean"]), std=tuple(tensors["std"]),
        crop_padding=max(1, height // 8), flip=True, class_names=tuple(tensors["class_names"]),
        source=f"paired segmentation folder at {folder.resolve()} ({tensors['classes_from']})", task="segmentation",
    )


load_segfolder.task = "segmentation"


def _read_classes(path: Path) -> list[str]:
    names = [line.strip() for line in path.read_text(errors="replace").splitlines() if line.strip()]
    if not names or len(names) > IGNORE_INDEX:
        raise UserError(f"{path} names {len(names)} classes; expected one class name a line, 1 to {IGNORE_INDEX} "
                        f"of them (id 255 marks unlabelled pixels)")
    return names


# --- shared: paired listings and decoding -------------------------------------------

def _paired_files(image_dir: Path, label_dir: Path) -> tuple[list[str], list[str]]:
    """Every image of ``image_dir`` (sorted) and its label ``label_dir/<same stem>.png``;
    an image without its label is refused, naming it."""
    images = sorted(os.path.join(image_dir, n) for n in os.listdir(image_dir) if n.lower().endswith(IMAGE_EXTENSIONS))
    if not images:
        raise UserError(f"{image_dir} holds no images ({', '.join(IMAGE_EXTENSIONS)})")
    labels = [os.path.join(label_dir, Path(f).stem + ".png") for f in images]
    missing = [f for f, lab in zip(images, labels) if not os.path.isfile(lab)]
    if missing:
        raise UserError(f"{len(missing)} image(s) of {image_dir} have no label map in {label_dir} (e.g. "
                        f"{Path(missing[0]).name} needs {label_dir / (Path(missing[0]).stem + '.png')})")
    return images, labels


def _decode_pairs(images: list[str], labels: list[str], title: str, progress: DecodeProgress | None,
                  size: int | None = None, channels: int | None = None) -> tuple[torch.Tensor, torch.Tensor, set[int]]:
    """Images (uint8 N x C x H x W, via ``decode_images``) and their label maps (uint8
    N x H x W), a chunk at a time, each map checked against its image's size; with
    ``size`` both are resized to size x size (images bilinear with antialiasing, labels
    nearest), and with ``channels`` grey images are repeated to that many channels.
    Returns them with the set of label values seen."""
    report = progress or (lambda title, done, total: None)
    xs, ys, values = [], [], set()
    for start in range(0, len(images), _DECODE_CHUNK):
        x = decode_images(images[start:start + _DECODE_CHUNK], title,
                          progress=lambda t, done, total, start=start: report(t, start + done, len(images)))
        y = _read_label_maps(labels[start:start + _DECODE_CHUNK], x.shape[2:], images[start:start + _DECODE_CHUNK])
        values |= set(torch.unique(y).tolist())
        if channels is not None and x.shape[1] != channels:
            x = x.expand(-1, channels, -1, -1)
        if size is not None and tuple(x.shape[2:]) != (size, size):
            x = F.interpolate(x.float(), size=(size, size), mode="bilinear", align_corners=False, antialias=True)
            x = x.round().clamp(0, 255).to(torch.uint8)
            y = F.interpolate(y[:, None].float(), size=(size, size), mode="nearest-exact")[:, 0].to(torch.uint8)
        xs.append(x.contiguous())
        ys.append(y)
    widths = {x.shape[1:] for x in xs}
    if len(widths) > 1:  # chunks of different sizes or channel counts (decode_images checks within one)
        raise UserError(f"{Path(images[0]).parent}: images differ in size or channels ({', '.join(map(str, widths))}); "
                        f"a segmentation folder needs one image size")
    return torch.cat(xs), torch.cat(ys), values


def _read_label_maps(files: list[str], shape: torch.Size, images: list[str]) -> torch.Tensor:
    """Label PNGs as their stored ids (uint8 N x H x W), each of its image's size."""
    from PIL import Image

    out = torch.empty(len(files), *shape, dtype=torch.uint8)
    for i, (path, image) in enumerate(zip(files, images)):
        try:
            with Image.open(path) as im:
                mode = im.mode
                arr = np.asarray(im) if mode in ("L", "P", "I", "I;16") else None
        except Exception as exc:  # noqa: BLE001  (any unreadable file becomes one user error)
            raise UserError(f"cannot read label map {path} ({type(exc).__name__}: {str(exc)[:120]})") from None
        if arr is None:
            raise UserError(f"label map {path} is a {mode} image; expected a single-channel PNG of class ids "
                            f"(mode L or P), 255 for unlabelled pixels")
        if arr.size and int(arr.max()) > 255:
            raise UserError(f"label map {path} holds the value {int(arr.max())}; class ids must fit in 0..255")
        if arr.shape != tuple(shape):
            raise UserError(f"label map {path} is {arr.shape[1]}x{arr.shape[0]} pixels but its image {image} is "
                            f"{shape[1]}x{shape[0]}; a label map has its image's size")
        out[i] = torch.from_numpy(arr.astype(np.uint8))
    return out
