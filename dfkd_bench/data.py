"""Data sets as uint8 tensors decoded once, normalisation, and augmentation on tensors.

Every data set is a ``DataBundle`` of uint8 NCHW tensors; batches are normalised and
augmented on whatever device holds them, so no per-image PIL work sits in the loop.
Image files (torchvision's pickled CIFAR batches, or an ImageFolder of JPEG/PNG files)
are decoded once into a tensor file under ``<cache>/data/tensors/``, keyed by the
source's path and file listing, and later loads read that file.
"""
from __future__ import annotations

import hashlib
import inspect
import math
import multiprocessing
import os
import warnings
from concurrent.futures import ProcessPoolExecutor, as_completed
from dataclasses import dataclass
from pathlib import Path
from typing import Callable

import numpy as np
import torch
import torch.nn.functional as F

from .errors import UserError
from .paths import cache_dir, data_dir
from .registry import DATASETS
from .store import atomic_torch_save


@dataclass
class DataBundle:
    name: str
    train_images: torch.Tensor  # uint8 N,C,H,W
    train_labels: torch.Tensor  # int64 N
    test_images: torch.Tensor
    test_labels: torch.Tensor
    num_classes: int
    mean: tuple[float, ...]
    std: tuple[float, ...]
    crop_padding: int = 4
    flip: bool = True
    class_names: tuple[str, ...] = ()
    # Where the pixels came from ("torchvision batches at ...", "ImageFolder at ..."),
    # recorded beside teachers: a JPEG copy of CIFAR scores a little below the official one.
    source: str = ""
    # A hash of the decoded content (images, labels, classes): a teacher records the data
    # it was trained on, so changed data is never silently paired with a stale teacher.
    fingerprint: str = ""
    # What the labels are (``dfkd_bench.tasks``): "classification" (a class id per image)
    # or "segmentation" (an N x H x W label map per split, 255 for unlabelled pixels).
    task: str = "classification"

    def content_fingerprint(self) -> str:
        h = hashlib.blake2b(digest_size=16)
        h.update(f"{self.num_classes}\n{self.class_names}\n".encode())
        for t in (self.train_images, self.train_labels, self.test_images, self.test_labels):
            h.update(f"{tuple(t.shape)} {t.dtype}\n".encode())
            h.update(t.detach().cpu().contiguous().numpy().tobytes())
        return h.hexdigest()

    @property
    def image_shape(self) -> tuple[int, int, int]:
        return tuple(self.train_images.shape[1:])

    def to(self, device: torch.device) -> "DataBundle":
        for attr in ("train_images", "train_labels", "test_images", "test_labels"):
            setattr(self, attr, getattr(self, attr).to(device))
        return self


class Normalizer:
    """Maps [0,1] images to the normalised space the models expect, and back."""

    def __init__(self, mean, std, device: torch.device | str = "cpu"):
        self.mean = torch.tensor(mean, dtype=torch.float32, device=device).view(1, -1, 1, 1)
        self.std = torch.tensor(std, dtype=torch.float32, device=device).view(1, -1, 1, 1)

    def __call__(self, x01: torch.Tensor) -> torch.Tensor:
        return (x01 - self.mean) / self.std

    def from_uint8(self, x: torch.Tensor) -> torch.Tensor:
        return self(x.float() / 255.0)

    def denormalize(self, x: torch.Tensor) -> torch.Tensor:
        """Back to [0,1] pixels (the inverse of ``__call__``)."""
        return x.float() * self.std + self.mean

    def clamp(self, x: torch.Tensor) -> torch.Tensor:
        """Clamp a normalised image to the range that [0,1] pixels map to."""
        lo, hi = (0 - self.mean) / self.std, (1 - self.mean) / self.std
        return torch.maximum(torch.minimum(x, hi), lo)


# The normalisation the shared public teacher checkpoints were trained with (the
# reference code's constants). CIFAR-10's std differs from the training split's measured
# std (0.2470, 0.2435, 0.2616) that this project trains its own teachers with: a public
# teacher fed the measured statistics sees inputs scaled by about 0.8.
PUBLIC_NORMALIZATION = {
    "cifar10": ((0.4914, 0.4822, 0.4465), (0.2023, 0.1994, 0.2010)),
    "cifar100": ((0.5071, 0.4867, 0.4408), (0.2675, 0.2565, 0.2761)),
}
NORMALIZATION_CHOICES = "'public' (the public checkpoints' values), 'dataset' (the data set's own) or 'M,M,M/S,S,S'"


def format_normalization(mean, std) -> str:
    """``M,M,M/S,S,S``: the form ``--normalization`` accepts."""
    return ",".join(f"{m:g}" for m in mean) + "/" + ",".join(f"{s:g}" for s in std)


def parse_normalization(text: str, data: "DataBundle") -> tuple[str, tuple[float, ...], tuple[float, ...]]:
    """``--normalization``: ``public``, ``dataset`` or explicit ``MEAN/STD`` lists with one
    value per image channel. Returns (name, mean, std); a bad value is a UserError."""
    channels = data.image_shape[0]
    if text == "public":
        if data.name not in PUBLIC_NORMALIZATION:
            raise UserError(f"--normalization public: no public values are known for {data.name} (known: "
                            f"{', '.join(PUBLIC_NORMALIZATION)}); pass 'dataset' or 'M,M,M/S,S,S'")
        mean, std = PUBLIC_NORMALIZATION[data.name]
        return "public", mean, std
    if text == "dataset":
        return "dataset", tuple(data.mean), tuple(data.std)
    try:
        mean_text, std_text = text.split("/")
        mean = tuple(float(v) for v in mean_text.split(","))
        std = tuple(float(v) for v in std_text.split(","))
    except ValueError:
        raise UserError(f"--normalization {text!r} is not understood; accepted: {NORMALIZATION_CHOICES}") from None
    if len(mean) != channels or len(std) != channels:
        raise UserError(f"--normalization {text!r} has {len(mean)} means and {len(std)} stds; {data.name} images "
                        f"have {channels} channel(s), so give {channels} of each")
    if not all(s > 0 for s in std) or not all(math.isfinite(v) for v in mean + std):
        raise UserError(f"--normalization {text!r}: every std must be a positive number and every mean finite")
    return "explicit", mean, std


def _crop_flip_draws(n: int, padding: int, flip: bool, device: torch.device,
                     generator: torch.Generator | None) -> tuple:
    """Per-sample (row offset, column offset, flip) draws, ``None`` where not drawn. The
    draws happen where the batch is (a CPU ``generator``: on the CPU, then moved), so a
    CUDA step waits for no host draw."""
    where = device if generator is None else "cpu"
    oy = ox = mask = None
    if padding:
        oy = torch.randint(0, 2 * padding + 1, (n,), generator=generator, device=where).to(device)
        ox = torch.randint(0, 2 * padding + 1, (n,), generator=generator, device=where).to(device)
    if flip:
        mask = (torch.rand(n, generator=generator, device=where) < 0.5).to(device)
    return oy, ox, mask


def _apply_crop_flip(x: torch.Tensor, padding: int, draws: tuple, fill: float = 0) -> torch.Tensor:
    """Crop (after padding with ``fill``) and flip an N x C x H x W batch as ``draws`` say."""
    oy, ox, mask = draws
    n, _, h, w = x.shape
    if oy is not None:
        padded = F.pad(x, (padding,) * 4, value=fill)
        rows = (oy[:, None] + torch.arange(h, device=x.device))[:, None, :, None]
        cols = (ox[:, None] + torch.arange(w, device=x.device))[:, None, None, :]
        batch = torch.arange(n, device=x.device)[:, None, None, None]
        chans = torch.arange(x.shape[1], device=x.device)[None, :, None, None]
        x = padded[batch, chans, rows, cols]
    if mask is not None:
        x = torch.where(mask[:, None, None, None], x.flip(3), x)
    return x


def random_crop_flip(x: torch.Tensor, padding: int, flip: bool, generator: torch.Generator | None = None) -> torch.Tensor:
    """Per-sample random crop after zero padding, and random horizontal flip, batched."""
    return _apply_crop_flip(x, padding, _crop_flip_draws(len(x), padding, flip, x.device, generator))


def random_crop_flip_with_labels(x: torch.Tensor, labels: torch.Tensor, padding: int, flip: bool,
                                 generator: torch.Generator | None = None,
                                 fill: int = 255) -> tuple[torch.Tensor, torch.Tensor]:
    """``random_crop_flip`` of images and their N x H x W label maps with the same crop
    and flip per sample; the label pixels the padding brings in are ``fill``."""
    draws = _crop_flip_draws(len(x), padding, flip, x.device, generator)
    return _apply_crop_flip(x, padding, draws), _apply_crop_flip(labels[:, None], padding, draws, fill)[:, 0]


DecodeProgress = Callable[[str, int, int], None]  # (title, images decoded, total)


def load_dataset(name: str, root: str | Path | None = None, download: bool = False,
                 cache: str | Path | None = None, progress: DecodeProgress | None = None) -> DataBundle:
    """``name`` is a registered data set, optionally ``kind:ARGUMENT`` (``imagefolder:PATH``).

    ``cache`` overrides the cache directory and ``progress`` hears about a first decode,
    for loaders that decode files (they take ``cache`` and ``progress`` keywords);
    loaders registered by plugins may leave them out."""
    loader = DATASETS.get(name.split(":", 1)[0])
    kwargs = {"name": name, "root": root, "download": download}
    params = inspect.signature(loader).parameters
    for key, value in (("cache", cache), ("progress", progress)):
        if value is not None and key in params:
            kwargs[key] = value
    bundle = loader(**kwargs)
    bundle.fingerprint = bundle.fingerprint or bundle.content_fingerprint()
    return bundle


@DATASETS.register("digits")
def load_digits(name: str = "digits", root=None, download: bool = False) -> DataBundle:
    """scikit-learn's bundled 8x8 handwritten digits (1,797 images, 10 classes),
    upsampled to 16x16, with a fixed stratified 80/20 train/test split (seed 0)."""
    from sklearn.datasets import load_digits as sk_digits
    from sklearn.model_selection import train_test_split

    bunch = sk_digits()
    images = torch.tensor(bunch.images, dtype=torch.float32).unsqueeze(1) / 16.0
    images = F.interpolate(images, size=(16, 16), mode="bilinear", align_corners=False)
    images = (images.clamp(0, 1) * 255).round().to(torch.uint8)
    labels = torch.tensor(bunch.target, dtype=torch.int64)
    idx = torch.arange(len(labels)).numpy()
    tr, te = train_test_split(idx, test_size=0.2, random_state=0, stratify=bunch.target)
    tr, te = torch.from_numpy(tr), torch.from_numpy(te)
    train = images[tr].float() / 255
    mean = (float(train.mean()),)
    std = (float(train.std()),)
    return DataBundle(
        name="digits", train_images=images[tr], train_labels=labels[tr], test_images=images[te],
        test_labels=labels[te], num_classes=10, mean=mean, std=std, crop_padding=2, flip=False,
        class_names=tuple(str(i) for i in range(10)),
    )


# The embedded segmentation set: small enough that a CPU trains its teacher in a minute.
SHAPES_TRAIN, SHAPES_TEST, SHAPES_SIZE = 2000, 500, 32


def shapes_bundle(n_train: int = SHAPES_TRAIN, n_test: int = SHAPES_TEST, size: int = SHAPES_SIZE,
                  name: str = "shapes") -> DataBundle:
    """``segmentation.make_shapes`` as a segmentation ``DataBundle``: the train split from
    seed 0, the test split from seed 1 (generated apart, so no test image is a train one)."""
    from .segmentation import SHAPE_CLASSES, make_shapes

    # Thousands of tiny tensor operations: one thread (the same numbers), since spinning up
    # more for each costs tens of times the work on a busy machine (22 s for 0.8 s measured).
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        train_images, train_labels = make_shapes(n_train, size, seed=0)
        test_images, test_labels = make_shapes(n_test, size, seed=1)
    finally:
        torch.set_num_threads(threads)
    mean, std = channel_stats(train_images)
    return DataBundle(
        name=name, train_images=train_images, train_labels=train_labels, test_images=test_images,
        test_labels=test_labels, num_classes=len(SHAPE_CLASSES), mean=tuple(mean), std=tuple(std),
        crop_padding=size // 8, flip=True, class_names=SHAPE_CLASSES, source=f"generated (make_shapes, {size} px)",
        task="segmentation",
    )


@DATASETS.register("shapes")
def load_shapes(name: str = "shapes", root=None, download: bool = False) -> DataBundle:
    """Embedded semantic segmentation: 2,000 train and 500 test 32x32 images of filled
    shapes (disc, square, triangle, ring) over textured backgrounds, a label per pixel
    (5 classes with the background), generated deterministically in about a second."""
    return shapes_bundle()


load_shapes.task = "segmentation"  # read at planning time (tasks.dataset_task), before any data loads


# --- CIFAR through torchvision or an ImageFolder copy ------------------------------

@dataclass(frozen=True)
class _CifarSpec:
    num_classes: int
    batches_folder: str  # torchvision's folder name under its root
    mean: tuple[float, ...]
    std: tuple[float, ...]


CIFAR = {
    # Per-channel statistics of the official training splits.
    "cifar10": _CifarSpec(10, "cifar-10-batches-py", (0.4914, 0.4822, 0.4465), (0.2470, 0.2435, 0.2616)),
    "cifar100": _CifarSpec(100, "cifar-100-python", (0.5071, 0.4865, 0.4409), (0.2673, 0.2564, 0.2762)),
}

IMAGE_EXTENSIONS = (".jpg", ".jpeg", ".png", ".ppm", ".pgm", ".bmp", ".tif", ".tiff", ".webp")
CACHE_FORMAT = 1  # bump when the cached tensors' layout changes, so old files are not read
_TENSOR_KEYS = ("train_images", "train_labels", "test_images", "test_labels")


def _torchvision_class(name: str):
    from torchvision.datasets import CIFAR10, CIFAR100

    return CIFAR10 if name == "cifar10" else CIFAR100


def locate_cifar(name: str, root: str | Path | None) -> tuple[str, Path] | None:
    """Which layout holds ``name`` under ``root``: ``("torchvision", dir)`` where ``dir``
    holds ``cifar-10-batches-py`` (torchvision's ``root``), or ``("imagefolder", dir)``
    where ``dir`` holds ``train/<class>/`` and ``test/<class>/``. ``<root>/<name>`` is
    looked at first, then ``root`` itself, so ``--data-root`` may name either."""
    base = data_dir(root)
    for candidate in (base / name, base):
        if (candidate / CIFAR[name].batches_folder).is_dir():
            return "torchvision", candidate
        if (candidate / "train").is_dir() and _test_split_dir(candidate) is not None:
            return "imagefolder", candidate
    return None


def _load_cifar(name: str, root, download: bool, cache, progress: DecodeProgress | None = None) -> DataBundle:
    spec = CIFAR[name]
    found = locate_cifar(name, root)
    if found is None:
        base = data_dir(root)
        if not download:
            raise UserError(
                f"{name} not found: expected {base / name} or {base} itself to hold {spec.batches_folder}/ "
                "(torchvision) or train/<class>/ and test/<class>/ image folders (ImageFolder); pass --download "
                "to fetch it with torchvision, or --data-root DIR naming a copy: the data set's own folder "
                f"(e.g. .../{name}-jpg holding train/ and test/) or the folder above it (holding {name}/)")
        found = ("torchvision", _download_cifar(name, base / name))
    elif download and found[0] == "torchvision":
        _download_cifar(name, found[1])  # verifies the md5s and re-fetches a damaged copy
    layout, where = found
    if layout == "torchvision":
        tensors = _cached_tensors(f"{name}-batches", _listing_key(where / spec.batches_folder),
                                  lambda: _read_torchvision(name, where), cache)
        source = f"torchvision batches at {(where / spec.batches_folder).resolve()}"
    else:
        tensors = _imagefolder_tensors(where, cache, expect_classes=(name, spec.num_classes), progress=progress)
        source = f"ImageFolder at {where.resolve()}"
    return DataBundle(
        name=name, train_images=tensors["train_images"], train_labels=tensors["train_labels"],
        test_images=tensors["test_images"], test_labels=tensors["test_labels"], num_classes=spec.num_classes,
        mean=spec.mean, std=spec.std, crop_padding=4, flip=True, class_names=tuple(tensors["class_names"]),
        source=source,
    )


def _download_cifar(name: str, tv_root: Path) -> Path:
    try:
        tv_root.mkdir(parents=True, exist_ok=True)
        _torchvision_class(name)(str(tv_root), train=True, download=True)
    except (OSError, RuntimeError) as exc:
        reason = (str(exc).strip().splitlines() or [type(exc).__name__])[0][:160]
        raise UserError(f"downloading {name} into {tv_root} failed ({reason}); "
                        f"check the network, or put a copy there and leave out --download") from None
    return tv_root


def _read_torchvision(name: str, tv_root: Path) -> dict:
    """torchvision checks every batch file's md5 before unpickling it, so a tampered or
    truncated file is refused rather than executed."""
    cls = _torchvision_class(name)
    try:
        splits = [cls(str(tv_root), train=train, download=False) for train in (True, False)]
    except RuntimeError as exc:
        raise UserError(f"{tv_root / CIFAR[name].batches_folder} fails torchvision's check ({exc}); delete it "
                        f"and fetch it again with --download") from None
    out: dict = {"class_names": list(splits[0].classes)}
    for prefix, split in zip(("train", "test"), splits):
        out[f"{prefix}_images"] = torch.from_numpy(split.data).permute(0, 3, 1, 2).contiguous()
        out[f"{prefix}_labels"] = torch.tensor(split.targets, dtype=torch.int64)
    return out


@DATASETS.register("cifar10")
def load_cifar10(name: str = "cifar10", root=None, download: bool = False, cache=None,
                 progress: DecodeProgress | None = None) -> DataBundle:
    """CIFAR-10 (10 classes, 32x32): torchvision's batches, or an ImageFolder copy."""
    return _load_cifar("cifar10", root, download, cache, progress)


@DATASETS.register("cifar100")
def load_cifar100(name: str = "cifar100", root=None, download: bool = False, cache=None,
                  progress: DecodeProgress | None = None) -> DataBundle:
    """CIFAR-100 (100 classes, 32x32): torchvision's batches, or an ImageFolder copy."""
    return _load_cifar("cifar100", root, download, cache, progress)


# --- ImageFolder -------------------------------------------------------------------

@DATASETS.register("imagefolder")
def load_imagefolder(name: str, root=None, download: bool = False, cache=None,
                     progress: DecodeProgress | None = None) -> DataBundle:
    """imagefolder:PATH, any folder of train/<class>/ and test/<class>/ images of one size.

    Classes are the sorted folder names (torchvision's ImageFolder order); ``val/`` stands
    in for a missing ``test/``; mean and std are measured on the train split."""
    arg = name.split(":", 1)[1] if ":" in name else ""
    if not arg:
        raise UserError("data set 'imagefolder' needs a folder: imagefolder:PATH (PATH holds train/ and test/)")
    folder = Path(arg).expanduser()
    if not folder.is_absolute() and not folder.is_dir() and (data_dir(root) / folder).is_dir():
        folder = data_dir(root) / folder
    if not (folder / "train").is_dir() or _test_split_dir(folder) is None:
        raise UserError(f"imagefolder:{arg}: expected {folder}/train/<class>/ and {folder}/test/<class>/ "
                        "folders of images")
    tensors = _imagefolder_tensors(folder, cache, progress=progress)
    height = tensors["train_images"].shape[2]
    return DataBundle(
        name=f"imagefolder:{folder.resolve()}", train_images=tensors["train_images"],
        train_labels=tensors["train_labels"], test_images=tensors["test_images"],
        test_labels=tensors["test_labels"], num_classes=len(tensors["class_names"]),
        mean=tuple(tensors["mean"]), std=tuple(tensors["std"]),
        # 4 px on 32x32 (the CIFAR setting) scales with the image.
        crop_padding=max(1, height // 8), flip=True, class_names=tuple(tensors["class_names"]),
        source=f"ImageFolder at {folder.resolve()}",
    )


def _test_split_dir(folder: Path) -> Path | None:
    for split in ("test", "val"):
        if (folder / split).is_dir():
            return folder / split
    return None


def _image_files(split_dir: Path, classes: list[str]) -> tuple[list[str], list[int]]:
    """Files in torchvision ImageFolder order: classes sorted, then paths sorted."""
    files, labels = [], []
    for label, cls in enumerate(classes):
        class_dir = split_dir / cls
        if not class_dir.is_dir():
            continue
        found = []
        for dirpath, _, names in os.walk(class_dir, followlinks=True):
            found.extend(os.path.join(dirpath, n) for n in names if n.lower().endswith(IMAGE_EXTENSIONS))
        found.sort()
        files.extend(found)
        labels.extend([label] * len(found))
    return files, labels


def _imagefolder_listing(folder: Path) -> tuple[list[str], dict[str, tuple[list[str], list[int]]]]:
    train_dir, test_dir = folder / "train", _test_split_dir(folder)
    classes = sorted(e.name for e in os.scandir(train_dir) if e.is_dir())
    if not classes:
        raise UserError(f"{train_dir} has no class folders; expected train/<class>/ images")
    unknown = sorted(e.name for e in os.scandir(test_dir) if e.is_dir() and e.name not in classes)
    if unknown:
        raise UserError(f"{test_dir} has class folders missing from train/: {', '.join(unknown[:5])}")
    splits = {"train": _image_files(train_dir, classes), "test": _image_files(test_dir, classes)}
    for split, (files, _) in splits.items():
        if not files:
            raise UserError(f"{folder}/{split} holds no images ({', '.join(IMAGE_EXTENSIONS)})")
    present = set(splits["train"][1])
    empty = [c for i, c in enumerate(classes) if i not in present]
    if empty:
        raise UserError(f"{train_dir}: class folder(s) {', '.join(empty[:5])} hold no images; every class needs "
                        f"training images ({', '.join(IMAGE_EXTENSIONS)}); remove the empty folders")
    return classes, splits


def _listing_key(folder: Path, files: list[str] | None = None) -> str:
    """Hash of the resolved folder and every file's relative path, size, mtime and inode:
    any added, removed, replaced, moved or touched file gives a new key, so a stale cache
    is never read."""
    folder = folder.resolve()
    if files is None:
        files = sorted(str(p) for p in folder.iterdir() if p.is_file()) if folder.is_dir() else []
    h = hashlib.sha256(f"format {CACHE_FORMAT}\n{folder}\n".encode())
    for f in files:
        st = os.stat(f)
        # the inode too: folders swapped in place keep every path, size and mtime
        h.update(f"{os.path.relpath(f, folder)}\t{st.st_size}\t{st.st_mtime_ns}\t{st.st_ino}\n".encode())
    return h.hexdigest()


def _imagefolder_tensors(folder: Path, cache, expect_classes: tuple[str, int] | None = None,
                         progress: DecodeProgress | None = None) -> dict:
    """``expect_classes`` (data set name, class count) is checked before anything is decoded."""
    classes, splits = _imagefolder_listing(folder)
    if expect_classes and len(classes) != expect_classes[1]:
        name, count = expect_classes
        raise UserError(f"{folder} has {len(classes)} class folders under train/, but {name} has {count}; "
                        f"point --data-root at a {name} copy")
    key = _listing_key(folder, splits["train"][0] + splits["test"][0])

    def build() -> dict:
        out: dict = {"class_names": classes}
        for split, (files, labels) in splits.items():
            out[f"{split}_images"] = decode_images(files, f"decoding {folder.name}/{split}", progress=progress)
            out[f"{split}_labels"] = torch.tensor(labels, dtype=torch.int64)
        channels = {out["train_images"].shape[1], out["test_images"].shape[1]}
        if channels == {1, 3}:  # a grey split beside a colour one: make both colour
            for split in ("train", "test"):
                out[f"{split}_images"] = out[f"{split}_images"].expand(-1, 3, -1, -1).contiguous()
        if out["train_images"].shape[2:] != out["test_images"].shape[2:]:
            raise UserError(f"{folder}: train images are {tuple(out['train_images'].shape[2:])} pixels but test "
                            f"images {tuple(out['test_images'].shape[2:])}; resize them to one size")
        out["mean"], out["std"] = channel_stats(out["train_images"])
        return out

    return _cached_tensors("imagefolder", key, build, cache)


def channel_stats(images: torch.Tensor, chunk: int = 4096) -> tuple[list[float], list[float]]:
    """Per-channel mean and std of uint8 NCHW images in [0,1], accumulated in float64
    chunk by chunk so 50,000 images never need a float copy of the whole split."""
    c = images.shape[1]
    total = torch.zeros(c, dtype=torch.float64)
    total_sq = torch.zeros(c, dtype=torch.float64)
    for i in range(0, len(images), chunk):
        x = images[i:i + chunk].to(torch.float64).div_(255.0).transpose(0, 1).reshape(c, -1)
        total += x.sum(1)
        total_sq += (x * x).sum(1)
    count = images.numel() / c
    mean = total / count
    std = (total_sq / count - mean * mean).clamp_min(0).sqrt()
    return [round(float(m), 4) for m in mean], [round(float(s), 4) for s in std]


# --- decoding image files ----------------------------------------------------------

def _decode_chunk(files: list[str]) -> list:
    """Worker: each file as an H,W,C uint8 array (C 1 for grey, else 3), or an
    ``("error", path, message)`` tuple (exceptions do not always pickle)."""
    from PIL import Image

    out = []
    for path in files:
        try:
            with Image.open(path) as im:
                mode = "L" if im.mode in ("1", "L", "LA", "I", "I;16", "F") else "RGB"
                arr = np.asarray(im.convert(mode))
        except Exception as exc:  # noqa: BLE001  (any unreadable file becomes one user error)
            return [("error", path, f"{type(exc).__name__}: {exc}")]
        out.append(arr[:, :, None] if arr.ndim == 2 else arr)
    return out


def _worker_count(n_files: int) -> int:
    # Below a few thousand files the pool's start-up costs more than it saves.
    if n_files < 2000:
        return 1
    return max(1, min(4, os.cpu_count() or 1))


def decode_images(files: list[str], title: str = "decoding", chunk: int = 500,
                  progress: DecodeProgress | None = None) -> torch.Tensor:
    """Decode image files into one uint8 N,C,H,W tensor, in a few worker processes (PIL
    holds the GIL for much of a small image's decode, so threads barely help), telling
    ``progress(title, done, total)`` after each chunk. Every image must have the same size."""
    report = progress or (lambda title, done, total: None)
    chunks = [files[i:i + chunk] for i in range(0, len(files), chunk)]
    workers = _worker_count(len(files))
    result: list[list | None] = [None] * len(chunks)
    done = 0
    if workers == 1:
        report(title, 0, len(files))
        for i, c in enumerate(chunks):
            result[i] = _decode_chunk(c)
            done += len(c)
            report(title, done, len(files))
    else:
        # fork starts workers without re-importing torch; they only run PIL and numpy.
        # Every job is submitted before the first report, so no worker is forked while
        # a display's refresh thread starts.
        methods = multiprocessing.get_all_start_methods()
        context = multiprocessing.get_context("fork" if "fork" in methods else None)
        with ProcessPoolExecutor(workers, mp_context=context) as pool:
            futures = {pool.submit(_decode_chunk, c): i for i, c in enumerate(chunks)}
            report(title, 0, len(files))
            for fut in as_completed(futures):
                i = futures[fut]
                result[i] = fut.result()
                done += len(chunks[i])
                report(title, done, len(files))
    first = None
    for part in result:
        for arr in part:
            if isinstance(arr, tuple):
                raise UserError(f"cannot decode image {arr[1]} ({arr[2][:160]})")
            if first is None:
                first = arr
    h, w = first.shape[:2]
    channels = 3 if any(a.shape[2] == 3 for part in result for a in part) else 1
    out = np.empty((len(files), h, w, channels), dtype=np.uint8)
    k = 0
    for part, names in zip(result, chunks):
        for arr, path in zip(part, names):
            if arr.shape[:2] != (h, w):
                raise UserError(f"image {path} is {arr.shape[1]}x{arr.shape[0]} pixels but {files[0]} is "
                                f"{w}x{h}; an ImageFolder data set needs one image size")
            out[k] = arr
            k += 1
    return torch.from_numpy(out).permute(0, 3, 1, 2).contiguous()


# --- the on-disk tensor cache ------------------------------------------------------

def tensor_cache_path(kind: str, key: str, cache=None) -> Path:
    return cache_dir(cache) / "data" / "tensors" / f"{kind}-{key[:20]}.pt"


def _valid_tensors(obj) -> bool:
    if not isinstance(obj, dict) or obj.get("format") != CACHE_FORMAT:
        return False
    if not all(torch.is_tensor(obj.get(k)) for k in _TENSOR_KEYS):
        return False
    ok_images = all(obj[f"{s}_images"].dtype == torch.uint8 and obj[f"{s}_images"].dim() == 4
                    for s in ("train", "test"))
    ok_labels = all(len(obj[f"{s}_labels"]) == len(obj[f"{s}_images"]) for s in ("train", "test"))
    return ok_images and ok_labels and isinstance(obj.get("class_names"), list)


def _cached_tensors(kind: str, key: str, build, cache=None) -> dict:
    """The decoded tensors for ``(kind, key)``: read from the cache, or built and
    written there. Writes go to a temporary file renamed into place, so two processes
    building at once both succeed (the last rename wins) and a reader never sees a
    partial file. A cache file that does not load is rebuilt."""
    path = tensor_cache_path(kind, key, cache)
    if path.exists():
        try:
            obj = torch.load(path, map_location="cpu", weights_only=True)
        except Exception:  # noqa: BLE001  (any unreadable cache file is simply rebuilt)
            obj = None
        if _valid_tensors(obj):
            return obj
        warnings.warn(f"data cache {path} is damaged or outdated; decoding the data set again", stacklevel=3)
    obj = {**build(), "format": CACHE_FORMAT}
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        atomic_torch_save(path, obj)
    except OSError as exc:
        warnings.warn(f"cannot write the data cache {path} ({exc.strerror or exc}); the data set will be "
                      "decoded again next time (set --cache-dir or DFKD_BENCH_CACHE to a writable folder)",
                      stacklevel=3)
    return obj
