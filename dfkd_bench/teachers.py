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
import json
import math
import pickle
import re
import time
import warnings
import zipfile
from dataclasses import dataclass
from pathlib import Path
from typing import Callable

import torch
from torch import nn

from .data import PUBLIC_NORMALIZATION, DataBundle, Normalizer, load_dataset, parse_normalization
from .errors import UserError
from .tasks import CLASSIFICATION, Classification, get_task
from .models import build_model
from .paths import cache_dir
from .precision import FastPath
from .precision import resolve as resolve_precision
from .store import atomic_torch_save, atomic_write_json, read_json

Progress = Callable[[str, dict], None]


@dataclass
class TrainRecipe:
    """Supervised training recipe shared by teachers and the ``scratch`` baseline.

    The defaults are the standard CIFAR recipe of the WRN paper (Zagoruyko & Komodakis,
    BMVC 2016: SGD with Nesterov momentum 0.9, lr 0.1, weight decay 5e-4, batch 128,
    200 epochs, crop and flip), with its step decay replaced by a cosine schedule over
    the same 200 epochs, which reaches the same or better accuracy without hand-placed
    milestones. On a GPU this recipe gives the published teacher accuracies
    (resnet34 95.7%, wrn40_2 94.9% on CIFAR-10). ``onecycle`` with fewer epochs trains
    a quick teacher at some cost in accuracy; a benchmark's teachers should match the
    literature's, so it is not the default.
    Label smoothing stays off: teachers trained with it transfer less "dark knowledge"
    through their logits (Mueller et al., NeurIPS 2019), and the published teachers
    were trained without it.
    """

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
        if name == "shapes":
            # A minute or two on a CPU for segnet_m (measured in the README's Segmentation section).
            return cls(epochs=20, batch_size=64, lr=0.05)
        if name.split(":", 1)[0] == "nyuv2":
            # DFAD's train_teacher_seg.py for DeepLabV3 on NYUv2: SGD lr 0.1, momentum 0.9,
            # weight decay 5e-4, batch 16, 200 epochs (its 795 images make 50 steps an epoch).
            return cls(epochs=200, batch_size=16, lr=0.1)
        # CIFAR-10/100 and ImageFolder data sets: the standard recipe above.
        return cls()

    def summary(self) -> str:
        """One line for tables: ``200 ep cosine lr 0.1 bs 128 wd 5e-4``."""
        text = (f"{self.epochs} ep {self.schedule} lr {self.lr:g} bs {self.batch_size} "
                f"wd {self.weight_decay:g}")
        return text + (f" ls {self.label_smoothing:g}" if self.label_smoothing else "")


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


class Evaluator:
    """The task's metric (top-1, or mIoU and pixel accuracy) of a model on a fixed test
    split: the images normalised once (in the run's layout; a split whose fp32 copy would
    exceed ``keep_bytes`` is normalised a batch at a time instead), each evaluation under
    ``torch.inference_mode`` and the run's precision in large batches (fp32 unless a fast
    path says otherwise), the counts summed on the device and read once."""

    def __init__(self, images: torch.Tensor, labels: torch.Tensor, normalizer: Normalizer,
                 fast_path: "FastPath | None" = None, batch_size: int = 256, keep_bytes: int = 2**30,
                 task: Classification = CLASSIFICATION, num_classes: int = 0):
        self.fast_path = fast_path or FastPath(images.device.type, "fp32")
        self.normalizer, self.labels, self.batch_size = normalizer, labels, batch_size
        self.task, self.num_classes = task, num_classes
        self.kept = images.numel() * 4 <= keep_bytes
        self.images = self._prepare(images) if self.kept else images

    def _prepare(self, uint8_images: torch.Tensor) -> torch.Tensor:
        return self.fast_path.images(self.normalizer.from_uint8(uint8_images))

    @torch.inference_mode()
    def scores(self, model: nn.Module) -> dict[str, float]:
        """Every metric of the task (``top1``; ``miou`` and ``pixel_accuracy``), in percent;
        restores the model's train/eval mode."""
        was_training = model.training
        model.eval()
        counts = self.task.zero_counts(self.num_classes, self.labels.device)
        try:
            with self.fast_path.autocast():
                for i in range(0, len(self.labels), self.batch_size):
                    x = self.images[i:i + self.batch_size]
                    out = model(x if self.kept else self._prepare(x))
                    counts += self.task.batch_counts(out, self.labels[i:i + self.batch_size], self.num_classes)
        finally:
            model.train(was_training)
        return self.task.scores(counts)

    def score(self, model: nn.Module) -> float:
        """The task's main metric (top-1 or mIoU, %)."""
        return self.scores(model)[self.task.metric_key]

    top1 = score  # the name the classification callers have always used


def evaluator_for(data: DataBundle, normalizer: Normalizer, fast_path: "FastPath | None" = None,
                  device: torch.device | None = None) -> Evaluator:
    """The evaluator of ``data``'s test split under its task (on ``device`` if given)."""
    images, labels = data.test_images, data.test_labels
    if device is not None:
        images, labels = images.to(device), labels.to(device)
    return Evaluator(images, labels, normalizer, fast_path, task=get_task(data.task), num_classes=data.num_classes)


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
                     progress: Progress | None = None, eval_every: int = 0,
                     precision: str = "auto", state_path: Path | None = None,
                     state_key: dict | None = None) -> float:
    """Train ``model`` on the real training split with crop-and-flip on tensors (moving
    label maps with their images for segmentation) and the task's loss; returns the final
    test score in the task's main metric (top-1 or mIoU).

    ``progress(event, info)`` is told ``"start"`` (epochs, steps per epoch, the metric's
    name), ``"step"`` (epoch, step) and ``"epoch"`` (epoch, mean loss, the main metric on
    the training batches as ``train_top1``, lr, seconds, and the test one as ``top1`` every
    ``eval_every`` epochs and at the end), so callers draw their own bars and logs. The run's fast path (``dfkd_bench.precision``) applies: channels_last on both
    devices, and ``precision`` (``auto``: bf16 where the device runs it natively) for
    the forward passes; the data stay on the device and losses are summed there, so
    no step waits for the host.

    With ``state_path``, the training state (weights, optimiser, schedule, random
    generators, the curve so far and the seconds spent) is written there atomically
    after every epoch, and a state already there is resumed from: a run killed at any
    point and started again ends with the same weights as one that never stopped (on the
    CPU; cuDNN's autotuned algorithms are not bit-reproducible on CUDA). The
    state must have been made under the same ``state_key`` (architecture, data, recipe,
    seed, precision); another is refused rather than mixed in.
    """
    emit = progress or (lambda event, info: None)
    fast = FastPath(device.type, resolve_precision(precision, device, fp16=False)[0])  # no gradient scaler here
    fast.prepare(model.to(device).train())
    normalizer = Normalizer(data.mean, data.std, device)
    x_all, y_all = data.train_images.to(device), data.train_labels.to(device)
    evaluator = evaluator_for(data, normalizer, fast, device)
    n = len(y_all)
    steps = math.ceil(n / recipe.batch_size)
    opt, sched = make_optimizer(model, recipe, steps * recipe.epochs)
    key = {**(state_key or {}), "precision": fast.precision}
    done, curve = 0, []
    if state_path is not None and Path(state_path).exists():
        done, curve = _resume_training_state(Path(state_path), key, model, opt, sched, device)
    emit("start", {"epochs": recipe.epochs, "steps": steps, "resumed_epochs": done, "metric": evaluator.task.metric})
    top1 = curve[-1].get("top1") if curve else None
    benchmark_before = torch.backends.cudnn.benchmark
    torch.backends.cudnn.benchmark = benchmark_before or device.type == "cuda"
    try:
        for epoch in range(done, recipe.epochs):
            started = time.perf_counter()
            loss_sum, counts = _supervised_epoch(model, opt, sched, x_all, y_all, normalizer, data, recipe,
                                                 fast, lambda i: emit("step", {"epoch": epoch, "step": i,
                                                                                "steps": steps}))
            task = evaluator.task
            info = {"epoch": epoch, "loss": loss_sum / n, "train_top1": task.scores(counts)[task.metric_key],
                    "lr": sched.get_last_lr()[0], "seconds": time.perf_counter() - started,
                    "threads": torch.get_num_threads()}
            last = epoch == recipe.epochs - 1
            top1 = None
            if last or (eval_every and (epoch + 1) % eval_every == 0):
                evaluated = time.perf_counter()
                top1 = evaluator.score(model)
                info.update(top1=top1, eval_seconds=time.perf_counter() - evaluated)
            curve.append(_rounded(info))
            if state_path is not None:
                _save_training_state(Path(state_path), key, epoch + 1, curve, model, opt, sched, device)
            emit("epoch", info)
    finally:
        torch.backends.cudnn.benchmark = benchmark_before
    if top1 is None:  # zero epochs, or resumed after the last one
        top1 = evaluator.score(model)
    return top1


_STATE_FORMAT = 1


def _rounded(info: dict) -> dict:
    """An epoch's record as the curve keeps it: floats to 4 decimals."""
    return {k: round(v, 4) if isinstance(v, float) else v for k, v in info.items()}


def _save_training_state(path: Path, key: dict, epochs_done: int, curve: list[dict], model: nn.Module,
                         opt, sched, device: torch.device) -> None:
    state = {"format": _STATE_FORMAT, "key": json.dumps(key, sort_keys=True, default=str),
             "epochs_done": epochs_done, "curve": json.dumps(curve),
             "model": model.state_dict(), "optimizer": opt.state_dict(), "scheduler": sched.state_dict(),
             "cpu_rng": torch.get_rng_state()}
    if device.type == "cuda":
        state["cuda_rng"] = torch.cuda.get_rng_state(device)
    path.parent.mkdir(parents=True, exist_ok=True)
    atomic_torch_save(path, state)


def _resume_training_state(path: Path, key: dict, model: nn.Module, opt, sched,
                           device: torch.device) -> tuple[int, list[dict]]:
    """Load a state written by ``_save_training_state`` into the fresh model, optimiser
    and schedule; returns (epochs done, curve). Refuses a state made under another key."""
    try:
        state = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as exc:  # noqa: BLE001 - any unreadable file gets the same advice
        raise UserError(f"the training state {path} does not load ({type(exc).__name__}: {exc}); "
                        f"delete it or pass --restart to start over") from exc
    if not isinstance(state, dict) or state.get("format") != _STATE_FORMAT:
        raise UserError(f"the training state {path} is not one this version writes (format "
                        f"{state.get('format') if isinstance(state, dict) else '?'}, expected {_STATE_FORMAT}); "
                        f"pass --restart to start over")
    theirs, ours = json.loads(state["key"]), json.loads(json.dumps(key, sort_keys=True, default=str))
    differ = sorted(k for k in set(theirs) | set(ours) if theirs.get(k) != ours.get(k))
    if differ:
        k = differ[0]
        raise UserError(f"the training state {path} was made with other settings ({k}: {theirs.get(k)!r} there, "
                        f"{ours.get(k)!r} now); run with the same settings to resume it, or pass --restart to "
                        f"start over")
    model.load_state_dict(state["model"])
    opt.load_state_dict(state["optimizer"])
    sched.load_state_dict(state["scheduler"])
    torch.set_rng_state(state["cpu_rng"])
    if device.type == "cuda" and "cuda_rng" in state:
        torch.cuda.set_rng_state(state["cuda_rng"], device)
    return int(state["epochs_done"]), json.loads(state["curve"])


def _supervised_epoch(model, opt, sched, x_all, y_all, normalizer, data, recipe, fast, step_done):
    """One pass over the training split in a random order; returns (loss sum, the task's
    metric counts), summed on the device and read once at the end."""
    n, device, task = len(y_all), y_all.device, get_task(data.task)
    loss_sum = torch.zeros((), device=device)
    counts = task.zero_counts(data.num_classes, device)
    perm = torch.randperm(n).to(device)
    for i in range(math.ceil(n / recipe.batch_size)):
        idx = perm[i * recipe.batch_size:(i + 1) * recipe.batch_size]
        x, y = task.crop_flip(normalizer.from_uint8(x_all[idx]), y_all[idx], data.crop_padding, data.flip)
        x = fast.images(x)
        with fast.autocast():
            logits = model(x)
        loss = task.loss(logits.float(), y, label_smoothing=recipe.label_smoothing)
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()
        sched.step()
        loss_sum += loss.detach() * len(idx)
        counts += task.batch_counts(logits.detach(), y, data.num_classes)
        step_done(i + 1)
    return loss_sum.item(), counts


def _numpy_safe_globals() -> list:
    """numpy scalars and arrays, which public checkpoints carry beside the weights (a
    best accuracy as ``np.float64``); they hold data only, and an object array's items
    still pass through the same restricted unpickler."""
    import numpy as np

    core = getattr(np, "_core", None) or np.core
    kinds = (np.float16, np.float32, np.float64, np.int8, np.int16, np.int32, np.int64, np.uint8, np.bool_)
    return [core.multiarray.scalar, core.multiarray._reconstruct, np.ndarray, np.dtype,
            *{type(np.dtype(k)) for k in kinds}]


def _unpickling_reason(exc: BaseException) -> str:
    """The informative part of a torch.load error, whose first lines are boilerplate."""
    text = str(exc)
    found = re.search(r"GLOBAL ([\w.]+)", text)
    if found:
        return f"it refers to {found.group(1)}, which a weights-only load refuses because it could run code"
    lines = [line.strip() for line in text.splitlines() if line.strip()]
    if "WeightsUnpickler error:" in text:
        tail = text.split("WeightsUnpickler error:", 1)[1].strip().splitlines()
        return f"unpickler: {tail[0].strip()[:120]}" if tail else "the weights-only unpickler refused it"
    return (lines[0] if lines else type(exc).__name__)[:160]


def load_state_dict_file(path: Path) -> dict[str, torch.Tensor]:
    """Read a checkpoint safely (``weights_only``): a dict with ``state_dict`` (the public
    layout) or a bare state dict; strips a DataParallel ``module.`` prefix."""
    try:
        with torch.serialization.safe_globals(_numpy_safe_globals()), warnings.catch_warnings():
            # A plain pickle (protocol > 2) draws a warning before the refusal we report.
            warnings.filterwarnings("ignore", message="Detected pickle protocol")
            obj = torch.load(path, map_location="cpu", weights_only=True)
    except FileNotFoundError:
        raise UserError(f"checkpoint {path} does not exist") from None
    except (pickle.UnpicklingError, RuntimeError, EOFError, zipfile.BadZipFile, ValueError, OSError) as exc:
        raise UserError(f"checkpoint {path} is corrupt or not a weights-only PyTorch file "
                        f"({_unpickling_reason(exc)})") from None
    state = obj.get("state_dict", obj) if isinstance(obj, dict) else None
    if not isinstance(state, dict) or not all(torch.is_tensor(v) for v in state.values()):
        raise UserError(f"checkpoint {path} holds no state dict (expected a dict with 'state_dict' of tensors)")
    return {k[len("module."):] if k.startswith("module.") else k: v for k, v in state.items()}


def _head_keys(model: nn.Module) -> set[str]:
    """State-dict keys of the classifier, whose first dimension is the class count: the
    last Linear, or in a net without one (a per-pixel classifier) the last convolution."""
    linears = [name for name, m in model.named_modules() if isinstance(m, nn.Linear)]
    heads = linears or [name for name, m in model.named_modules() if isinstance(m, nn.Conv2d)]
    return {f"{heads[-1]}.weight", f"{heads[-1]}.bias"} if heads else set()


def load_weights(model: nn.Module, state: dict[str, torch.Tensor], arch: str, source: Path,
                 dataset: str | None = None) -> None:
    """Strict load with a one-line error naming what does not match; a head with the
    wrong number of outputs is reported as a class-count mismatch."""
    own = model.state_dict()
    missing = sorted(set(own) - set(state))
    unexpected = sorted(set(state) - set(own))
    if missing or unexpected:
        raise UserError(f"{source} does not match architecture {arch}: {len(missing)} missing keys "
                        f"(e.g. {missing[:2]}), {len(unexpected)} unexpected (e.g. {unexpected[:2]})")
    wrong = [k for k, v in state.items() if own[k].shape != v.shape]
    if not wrong:
        model.load_state_dict(state, strict=True)
        return
    head = _head_keys(model)
    if set(wrong) <= head and all(state[k].shape[1:] == own[k].shape[1:] for k in wrong):
        k = sorted(wrong)[-1]
        target = f"{dataset} has" if dataset else "the model expects"
        raise UserError(f"{source} is a {state[k].shape[0]}-class {arch} ({k} has shape {tuple(state[k].shape)}), "
                        f"but {target} {own[k].shape[0]} classes; import it for a data set with "
                        f"{state[k].shape[0]} classes")
    k = wrong[0]
    raise UserError(f"{source} does not match architecture {arch}: {k} has shape {tuple(state[k].shape)}, "
                    f"expected {tuple(own[k].shape)} ({len(wrong)} tensors differ; is it another architecture?)")


def save_teacher(model: nn.Module, dataset: str, arch: str, top1: float, recipe: dict, root=None,
                 source: str = "trained", extra: dict | None = None) -> Path:
    """Write the checkpoint (public layout) and its metadata; ``extra`` adds fields such
    as the data source, device and training time."""
    ckpt, meta = teacher_paths(dataset, arch, root)
    ckpt.parent.mkdir(parents=True, exist_ok=True)
    atomic_torch_save(ckpt, {"state_dict": {k: v.detach().cpu() for k, v in model.state_dict().items()}})
    atomic_write_json(meta, {
        **(extra or {}),
        "dataset": dataset, "arch": arch, "top1": round(top1, 4), "recipe": recipe, "source": source,
        "sha256": sha256_file(ckpt), "date": dt.datetime.now(dt.timezone.utc).isoformat(timespec="seconds"),
        "torch": torch.__version__,
    })
    return ckpt


def teacher_metadata(dataset: str, arch: str, root=None) -> dict | None:
    _, meta = teacher_paths(dataset, arch, root)
    return read_json(meta) if meta.exists() else None


def list_teachers(root=None) -> list[dict]:
    """Metadata of every teacher in the zoo, sorted by data set and architecture; a
    metadata file that does not parse is listed with an ``error``."""
    base = cache_dir(root) / "teachers"
    found = []
    for meta in sorted(base.glob("*/*.json")) if base.is_dir() else []:
        try:
            entry = read_json(meta)
            if not isinstance(entry, dict):
                raise ValueError("not a JSON object")
        except (OSError, ValueError) as exc:
            entry = {"dataset": meta.parent.name, "arch": meta.stem, "error": f"unreadable metadata ({exc})"}
        entry["path"] = str(meta.with_suffix(".pt"))
        found.append(entry)
    return sorted(found, key=lambda e: (str(e.get("dataset")), str(e.get("arch"))))


def teacher_normalization(meta: dict | None, data: DataBundle) -> tuple[tuple[float, ...], tuple[float, ...]]:
    """The (mean, std) a teacher was trained with, as its metadata records it. A zoo
    teacher trained before normalisations were recorded was trained with the data set's
    own statistics; an imported one of that time was measured with them."""
    norm = (meta or {}).get("normalization")
    if norm:
        return tuple(norm["mean"]), tuple(norm["std"])
    return tuple(data.mean), tuple(data.std)


def teacher_normalizer(meta: dict | None, data: DataBundle, device: torch.device | str = "cpu") -> Normalizer:
    """The normaliser every model of a run uses: the teacher's own, so the teacher, the
    generator's output and the student all live in the space the teacher was trained in."""
    return Normalizer(*teacher_normalization(meta, data), device)


def _normalization_record(name: str, mean, std) -> dict:
    return {"normalization": {"name": name, "mean": [float(m) for m in mean], "std": [float(s) for s in std]}}


def load_teacher(data: DataBundle, arch: str, in_channels: int, root=None) -> nn.Module | None:
    """The zoo's teacher for (data set, arch), or None if there is none yet. The file's
    sha256 is checked against its metadata, so a swapped or damaged file is caught."""
    ckpt, _ = teacher_paths(data.name, arch, root)
    if not ckpt.exists():
        return None
    meta = teacher_metadata(data.name, arch, root)
    if meta and meta.get("sha256") and meta["sha256"] != sha256_file(ckpt):
        raise UserError(f"teacher {ckpt} does not match the sha256 in its metadata; "
                        f"re-create it with: dfkd-bench teachers train --dataset {data.name} --arch {arch} --force")
    model = build_model(arch, data.num_classes, in_channels)
    load_weights(model, load_state_dict_file(ckpt), arch, ckpt, data.name)
    return model


def training_state_path(dataset: str, arch: str, root=None) -> Path:
    """Where ``train_teacher`` keeps the state of a training in progress: beside the
    teacher it will become, as ``<arch>.partial.pt``."""
    ckpt, _ = teacher_paths(dataset, arch, root)
    return ckpt.with_suffix(".partial.pt")


def train_teacher(data: DataBundle, arch: str, device: torch.device, recipe: TrainRecipe | None = None,
                  root=None, seed: int = 0, progress: Progress | None = None, eval_every: int = 0,
                  resumable: bool = True, precision: str = "auto",
                  init_from: Path | None = None, model_options: dict | None = None) -> tuple[nn.Module, dict]:
    """Train ``arch`` on ``data`` with ``recipe`` (default: the data set's) and record it
    in the zoo. With ``init_from`` (a checkpoint of the same architecture, read
    weights-only) training starts from those weights instead of a fresh initialisation
    and runs the recipe's whole schedule again: a warm restart (SGDR, Loshchilov and
    Hutter 2017), recorded in the metadata with the source's sha256, top-1 and, where its
    metadata lies beside it, its recipe, curve and seconds. Seeded apart from the
    caller's random stream, so a teacher trained on a run's first use does not shift that run's random numbers. With ``resumable`` (the
    default) the training state is kept after every epoch (``training_state_path``) and
    a killed training resumes where it stopped, to the same weights; it is removed once
    the teacher is saved. The metadata records the curve, epoch by epoch, the precision
    (``precision``, resolved as a run's) and the thread count. ``model_options`` go to the
    architecture's builder (``{"pretrained_backbone": True}``: fine-tune from ImageNet
    weights) and are recorded too."""
    recipe = recipe or TrainRecipe.for_dataset(data.name)
    precision = resolve_precision(precision, device, fp16=False)[0]
    state_path = training_state_path(data.name, arch, root) if resumable else None
    key = {"dataset": data.name, "arch": arch, "data_fingerprint": data.fingerprint, "seed": seed,
           "recipe": dataclasses.asdict(recipe), "eval_every": eval_every}
    init_from = Path(init_from) if init_from is not None else None
    init = _init_record(init_from) if init_from is not None else None
    if init is not None:
        key["init_from"] = init["sha256"]
    if model_options:
        key["model_options"] = dict(model_options)
    curve: list[dict] = []

    def record(event: str, info: dict) -> None:
        if event == "epoch":
            curve.append(info)
        if progress:
            progress(event, info)

    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        model = build_model(arch, data.num_classes, data.image_shape[0], **(model_options or {}))
        if init is not None:
            load_weights(model, load_state_dict_file(init_from), arch, init_from, data.name)
        top1 = train_supervised(model, data, recipe, device, record, eval_every, precision, state_path=state_path,
                                state_key=key)
    history = _read_curve(state_path) if state_path is not None and state_path.exists() else curve
    model.to(memory_format=torch.contiguous_format)
    extra = {"data_source": data.source, "data_fingerprint": data.fingerprint, "seed": seed, "device": str(device),
             "precision": precision, "threads": torch.get_num_threads(),
             "train_seconds": round(sum(e["seconds"] + e.get("eval_seconds", 0.0) for e in history), 1),
             "curve": [_rounded(e) for e in history], "metric": get_task(data.task).metric,
             **({"init_from": init} if init is not None else {}),
             **({"model_options": dict(model_options)} if model_options else {}),
             **_normalization_record("dataset", data.mean, data.std)}
    save_teacher(model, data.name, arch, top1, dataclasses.asdict(recipe), root, extra=extra)
    if state_path is not None:
        state_path.unlink(missing_ok=True)
    return model, teacher_metadata(data.name, arch, root) or {}


def _init_record(path: Path) -> dict:
    """What a warm-started teacher records of the weights it started from: the file's
    sha256 and, from the metadata beside it (``<name>.json``) where there is one, its
    top-1, recipe, precision, seconds and curve."""
    if not path.is_file():
        raise UserError(f"--init-from {path}: no such checkpoint file")
    record: dict = {"path": str(path), "sha256": sha256_file(path)}
    meta_path = path.with_suffix(".json")
    if meta_path.is_file():
        try:
            meta = json.loads(meta_path.read_text())
        except (OSError, json.JSONDecodeError) as exc:
            raise UserError(f"--init-from {path}: its metadata {meta_path} does not read ({exc})") from None
        if meta.get("sha256") not in (None, record["sha256"]):
            raise UserError(f"--init-from {path} does not match the sha256 in {meta_path}; pass the file it describes")
        record.update({k: meta[k] for k in ("top1", "recipe", "precision", "train_seconds", "curve", "init_from")
                       if k in meta})
    return record


def _read_curve(state_path: Path) -> list[dict]:
    return json.loads(torch.load(state_path, map_location="cpu", weights_only=True)["curve"])


_ANNOUNCED: set[tuple] = set()  # teachers whose metadata caveats were said once in this process


def get_or_train_teacher(data: DataBundle, arch: str, device: torch.device, root=None,
                         train_missing: bool = True, announce: Callable[[str], None] = print,
                         progress_for: Callable[[str, int], Progress | None] | None = None
                         ) -> tuple[nn.Module, dict]:
    """Teacher from the zoo; a missing one is trained (announcing the cost, its progress
    to ``progress_for(arch, epochs)``'s callable) or, with ``train_missing=False``,
    reported with the exact command that trains it."""
    in_channels = data.image_shape[0]
    model = load_teacher(data, arch, in_channels, root)
    if model is None:
        recipe = TrainRecipe.for_dataset(data.name)
        cmd = f"dfkd-bench teachers train --dataset {data.name} --arch {arch}"
        if not train_missing:
            raise UserError(f"no {arch} teacher for {data.name} in the zoo; train it with: {cmd}")
        announce(f"no {arch} teacher for {data.name} in the zoo: training it now "
                 f"({recipe.epochs} epochs over {len(data.train_labels)} images)")
        progress = progress_for(arch, recipe.epochs) if progress_for is not None else None
        return train_teacher(data, arch, device, recipe, root, progress=progress)
    meta = teacher_metadata(data.name, arch, root) or {}
    recorded = meta.get("data_fingerprint")
    if recorded and data.fingerprint and recorded != data.fingerprint:
        raise UserError(f"the {arch} teacher for {data.name} in the zoo was made with other data than it holds "
                        f"now (data fingerprint {recorded[:12]} then, {data.fingerprint[:12]} now); train it anew "
                        f"with: dfkd-bench teachers train --dataset {data.name} --arch {arch} --force")
    if (data.name, arch, meta.get("sha256")) in _ANNOUNCED:
        return model, meta
    _ANNOUNCED.add((data.name, arch, meta.get("sha256")))
    if not recorded:
        announce(f"the {arch} teacher for {data.name} records no data fingerprint (it predates them); "
                 f"`dfkd-bench teachers verify --dataset {data.name} --arch {arch}` re-measures it on this data")
    if (meta.get("recipe") or {}).get("imported") and not meta.get("normalization"):
        announce(f"the imported {arch} teacher for {data.name} records no input normalisation (it predates them), "
                 f"so the data set's own is assumed; re-import it with `dfkd-bench teachers import ... --force "
                 f"--normalization public|dataset|M,M,M/S,S,S` to record the one it was trained with")
    return model, meta


def default_import_normalization(data: DataBundle) -> str:
    """The public checkpoints' values where they are known (CIFAR), else the data set's."""
    return "public" if data.name in PUBLIC_NORMALIZATION else "dataset"


def import_teacher(path: str | Path, dataset: str, arch: str, root=None, data_root=None, download: bool = False,
                   device: torch.device = torch.device("cpu"), data: DataBundle | None = None,
                   normalization: str | None = None) -> dict:
    """Copy a checkpoint in the public layout (a dict whose ``state_dict`` holds the
    weights, or a bare state dict) into the zoo after loading it strictly and measuring
    its test score in the data set's task's metric (top-1; mIoU for segmentation, recorded
    as ``metric``) under ``normalization`` (``parse_normalization``; default: the public
    checkpoints' values for CIFAR, else the data set's), which is recorded with it and
    used by every run with it. Nothing in the file is executed (``weights_only``
    loading). Returns the recorded metadata."""
    path = Path(path).expanduser()
    data = data or load_dataset(dataset, data_root, download, cache=root)
    norm_name, mean, std = parse_normalization(normalization or default_import_normalization(data), data)
    state = load_state_dict_file(path)
    model = build_model(arch, data.num_classes, data.image_shape[0])
    load_weights(model, state, arch, path, data.name)
    model.to(device)
    normalizer = Normalizer(mean, std, device)
    top1 = evaluator_for(data, normalizer, device=device).score(model)
    extra = {"source_sha256": sha256_file(path), "data_source": data.source, "data_fingerprint": data.fingerprint,
             "metric": get_task(data.task).metric,
             **_normalization_record(norm_name, mean, std)}
    save_teacher(model.cpu(), data.name, arch, top1, {"imported": True}, root, source=str(path.resolve()),
                 extra=extra)
    return teacher_metadata(data.name, arch, root)


def verify(dataset: str, arch: str, root=None, data_root=None, download: bool = False,
           device: torch.device = torch.device("cpu"), data: DataBundle | None = None,
           tolerance: float = 0.1) -> dict:
    """Check a zoo teacher: its file's sha256 against the metadata, a strict load, and
    its test score (top-1, or mIoU for segmentation) re-measured against the recorded one (within ``tolerance`` points,
    for the odd image that flips between devices). Returns recorded and measured top-1
    and ``ok``; a missing or damaged teacher is a UserError."""
    data = data or load_dataset(dataset, data_root, download, cache=root)
    ckpt, meta_path = teacher_paths(data.name, arch, root)
    if not ckpt.exists():
        raise UserError(f"no {arch} teacher for {data.name} in the zoo ({ckpt}); "
                        f"train it with: dfkd-bench teachers train --dataset {dataset} --arch {arch}")
    try:
        meta = read_json(meta_path)
    except (OSError, json.JSONDecodeError) as exc:
        raise UserError(f"metadata {meta_path} of teacher {ckpt} is missing or unreadable ({exc})") from None
    if not isinstance(meta, dict) or not meta.get("sha256"):
        raise UserError(f"metadata {meta_path} records no sha256 to check {ckpt} against; "
                        f"re-create the teacher with `dfkd-bench teachers train` or `teachers import`")
    model = load_teacher(data, arch, data.image_shape[0], root).to(device)
    normalizer = teacher_normalizer(meta, data, device)
    precision, note = verify_precision(meta.get("precision"), device)
    measured = evaluator_for(data, normalizer, FastPath(device.type, precision), device=device).score(model)
    recorded = meta.get("top1")
    ok = recorded is not None and abs(measured - recorded) <= (tolerance if not note else CROSS_PRECISION_TOLERANCE)
    return {"dataset": data.name, "arch": arch, "path": str(ckpt), "sha256": meta.get("sha256"),
            "recorded_top1": recorded, "measured_top1": round(measured, 4), "ok": ok,
            "metric": get_task(data.task).metric, "precision": precision, "note": note}


CROSS_PRECISION_TOLERANCE = 1.0  # points, where a bf16 score is re-measured in fp32


def verify_precision(recorded: str | None, device: torch.device) -> tuple[str, str]:
    """The precision ``verify`` re-measures a teacher at: the one its score was recorded at
    (a bf16 evaluation moves a few test images against fp32's: 16.37 against 16.20 mIoU on a
    tiny NYUv2 set), unless this device lacks native bf16; then fp32, with a note saying the
    comparison crosses precisions (and ``CROSS_PRECISION_TOLERANCE``)."""
    if recorded != "bf16":
        return "fp32", ""
    if resolve_precision("auto", device, fp16=False)[0] == "bf16":
        return "bf16", ""
    return "fp32", f"recorded in bf16, re-measured in fp32 (no native bf16 here), within {CROSS_PRECISION_TOLERANCE:g} point"
