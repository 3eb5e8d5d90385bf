"""The shared teacher zoo: one checkpoint per (data set, architecture), used by every
method so all of them distil from the very same file.

Files live under ``<cache>/teachers/<dataset>/<arch>.pt`` in the public layout (a
dict whose ``state_dict`` holds the weights) with ``<arch>.json`` beside it: test
top-1, training recipe, sha256 and date. Loading never executes code from a file.
"""
from __future__ import annotations

import dataclasses
import datetime as dt
import hashlib
import math
import pickle
import zipfile
from dataclasses import dataclass
from pathlib import Path
from typing import Callable

import torch
import torch.nn.functional as F
from torch import nn

from .data import DataBundle, Normalizer, random_crop_flip
from .errors import UserError
from .models import build_model
from .paths import cache_dir
from .store import atomic_torch_save, atomic_write_json, read_json


@dataclass
class TrainRecipe:
    """Supervised training recipe shared by teachers and the ``scratch`` baseline."""

    epochs: int = 200
    batch_size: int = 128
    lr: float = 0.1
    momentum: float = 0.9
    nesterov: bool = True
    weight_decay: float = 5e-4
    label_smoothing: float = 0.0
    schedule: str = "cosine"  # cosine | onecycle

    @classmethod
    def for_dataset(cls, name: str) -> "TrainRecipe":
        if name == "digits":
            # Seconds on a laptop CPU and about 98% test top-1 for cnn_m.
            return cls(epochs=30, batch_size=64, lr=0.05)
        return cls()


def teacher_dir(dataset: str, root: str | Path | None = None) -> Path:
    safe = dataset.replace("/", "_").replace(":", "_")
    return cache_dir(root) / "teachers" / safe


def teacher_paths(dataset: str, arch: str, root=None) -> tuple[Path, Path]:
    d = teacher_dir(dataset, root)
    stem = arch.replace(":", "_").replace("/", "_")
    return d / f"{stem}.pt", d / f"{stem}.json"


def sha256_file(path: Path) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as fh:
        for chunk in iter(lambda: fh.read(1 << 20), b""):
            h.update(chunk)
    return h.hexdigest()


@torch.no_grad()
def evaluate_top1(model: nn.Module, images: torch.Tensor, labels: torch.Tensor, normalizer: Normalizer,
                  batch_size: int = 500) -> float:
    """Top-1 (%) of ``model`` on uint8 ``images``; restores the model's train/eval mode."""
    was_training = model.training
    model.eval()
    correct = 0
    for i in range(0, len(labels), batch_size):
        x = normalizer.from_uint8(images[i:i + batch_size])
        correct += (model(x).argmax(1) == labels[i:i + batch_size]).sum().item()
    model.train(was_training)
    return 100.0 * correct / max(1, len(labels))


def make_optimizer(model: nn.Module, recipe: TrainRecipe, steps_total: int):
    opt = torch.optim.SGD(model.parameters(), lr=recipe.lr, momentum=recipe.momentum,
                          nesterov=recipe.nesterov, weight_decay=recipe.weight_decay)
    if recipe.schedule == "onecycle":
        sched = torch.optim.lr_scheduler.OneCycleLR(opt, max_lr=recipe.lr, total_steps=steps_total,
                                                    pct_start=0.25)
    else:
        sched = torch.optim.lr_scheduler.CosineAnnealingLR(opt, T_max=steps_total)
    return opt, sched


def train_supervised(model: nn.Module, data: DataBundle, recipe: TrainRecipe, device: torch.device,
                     on_epoch: Callable[[int, float], None] | None = None) -> float:
    """Train ``model`` on the real training split with crop-and-flip on tensors; returns
    the final test top-1."""
    model.to(device).train()
    normalizer = Normalizer(data.mean, data.std, device)
    x_all, y_all = data.train_images.to(device), data.train_labels.to(device)
    n = len(y_all)
    steps = math.ceil(n / recipe.batch_size)
    opt, sched = make_optimizer(model, recipe, steps * recipe.epochs)
    for epoch in range(recipe.epochs):
        perm = torch.randperm(n).to(device)
        for i in range(steps):
            idx = perm[i * recipe.batch_size:(i + 1) * recipe.batch_size]
            x = random_crop_flip(normalizer.from_uint8(x_all[idx]), data.crop_padding, data.flip)
            loss = F.cross_entropy(model(x), y_all[idx], label_smoothing=recipe.label_smoothing)
            opt.zero_grad(set_to_none=True)
            loss.backward()
            opt.step()
            sched.step()
        if on_epoch:
            on_epoch(epoch, float(loss))
    return evaluate_top1(model, data.test_images.to(device), data.test_labels.to(device), normalizer)


def load_state_dict_file(path: Path) -> dict[str, torch.Tensor]:
    """Read a checkpoint safely (``weights_only``): a dict with ``state_dict`` (the public
    layout) or a bare state dict; strips a DataParallel ``module.`` prefix."""
    try:
        obj = torch.load(path, map_location="cpu", weights_only=True)
    except FileNotFoundError:
        raise UserError(f"checkpoint {path} does not exist") from None
    except (pickle.UnpicklingError, RuntimeError, EOFError, zipfile.BadZipFile, ValueError, OSError) as exc:
        first = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
        raise UserError(f"checkpoint {path} is corrupt or not a weights-only PyTorch file ({first[:160]})") from None
    state = obj.get("state_dict", obj) if isinstance(obj, dict) else None
    if not isinstance(state, dict) or not all(torch.is_tensor(v) for v in state.values()):
        raise UserError(f"checkpoint {path} holds no state dict (expected a dict with 'state_dict' of tensors)")
    return {k[len("module."):] if k.startswith("module.") else k: v for k, v in state.items()}


def load_weights(model: nn.Module, state: dict[str, torch.Tensor], arch: str, source: Path) -> None:
    """Strict load with a one-line error naming what does not match."""
    own = model.state_dict()
    missing = sorted(set(own) - set(state))
    unexpected = sorted(set(state) - set(own))
    if missing or unexpected:
        raise UserError(f"{source} does not match architecture {arch}: {len(missing)} missing keys "
                        f"(e.g. {missing[:2]}), {len(unexpected)} unexpected (e.g. {unexpected[:2]})")
    for k, v in state.items():
        if own[k].shape != v.shape:
            hint = " (wrong class count?)" if k.endswith(("weight", "bias")) and v.dim() <= 2 else ""
            raise UserError(f"{source} does not match {arch}: {k} has shape {tuple(v.shape)}, "
                            f"expected {tuple(own[k].shape)}{hint}")
    model.load_state_dict(state, strict=True)


def save_teacher(model: nn.Module, dataset: str, arch: str, top1: float, recipe: dict, root=None,
                 source: str = "trained") -> Path:
    ckpt, meta = teacher_paths(dataset, arch, root)
    ckpt.parent.mkdir(parents=True, exist_ok=True)
    atomic_torch_save(ckpt, {"state_dict": {k: v.detach().cpu() for k, v in model.state_dict().items()}})
    atomic_write_json(meta, {
        "dataset": dataset, "arch": arch, "top1": round(top1, 4), "recipe": recipe, "source": source,
        "sha256": sha256_file(ckpt), "date": dt.datetime.now(dt.timezone.utc).isoformat(timespec="seconds"),
        "torch": torch.__version__,
    })
    return ckpt


def teacher_metadata(dataset: str, arch: str, root=None) -> dict | None:
    _, meta = teacher_paths(dataset, arch, root)
    return read_json(meta) if meta.exists() else None


def load_teacher(data: DataBundle, arch: str, in_channels: int, root=None) -> nn.Module | None:
    """The zoo's teacher for (data set, arch), or None if there is none yet. The file's
    sha256 is checked against its metadata, so a swapped or damaged file is caught."""
    ckpt, _ = teacher_paths(data.name, arch, root)
    if not ckpt.exists():
        return None
    meta = teacher_metadata(data.name, arch, root)
    if meta and meta.get("sha256") and meta["sha256"] != sha256_file(ckpt):
        raise UserError(f"teacher {ckpt} does not match the sha256 in its metadata; "
                        f"re-create it with: dfkd-bench teachers train --dataset {data.name} --arch {arch}")
    model = build_model(arch, data.num_classes, in_channels)
    load_weights(model, load_state_dict_file(ckpt), arch, ckpt)
    return model


def get_or_train_teacher(data: DataBundle, arch: str, device: torch.device, root=None,
                         train_missing: bool = True, announce: Callable[[str], None] = print) -> tuple[nn.Module, dict]:
    """Teacher from the zoo; a missing one is trained (announcing the cost) or, with
    ``train_missing=False``, reported with the exact command that trains it."""
    in_channels = data.image_shape[0]
    model = load_teacher(data, arch, in_channels, root)
    if model is None:
        recipe = TrainRecipe.for_dataset(data.name)
        cmd = f"dfkd-bench teachers train --dataset {data.name} --arch {arch}"
        if not train_missing:
            raise UserError(f"no {arch} teacher for {data.name} in the zoo; train it with: {cmd}")
        announce(f"no {arch} teacher for {data.name} in the zoo: training it now "
                 f"({recipe.epochs} epochs over {len(data.train_labels)} images)")
        # Seeded apart from the run's own stream, so a teacher trained on first use does
        # not shift the random numbers of the run that asked for it.
        with torch.random.fork_rng(devices=[]):
            torch.manual_seed(0)
            model = build_model(arch, data.num_classes, in_channels)
            top1 = train_supervised(model, data, recipe, device)
        save_teacher(model, data.name, arch, top1, dataclasses.asdict(recipe), root)
    return model, teacher_metadata(data.name, arch, root) or {}
