"""Typed run configuration, presets and ``--set key=value`` changes.

A run is described by two dataclasses: ``RunConfig`` (what the harness owns: budget,
student optimiser, devices, seeds) and the method's own config dataclass. Both live in
one namespace of field names: a method config may not reuse a ``RunConfig`` field name
(``check_namespace``, called when a method registers), so every key means one knob for
every method. ``run.`` and ``method.`` prefixes are still accepted and must match the
config that owns the key. Choice fields are typed ``Literal[...]`` and checked here, in
one place, whether they come from a preset, ``--set`` or a default.
"""
from __future__ import annotations

import dataclasses
import math
import typing
from dataclasses import dataclass, fields
from pathlib import Path
from typing import Annotated, Any, Literal

import yaml

from .errors import UserError


@dataclass
class RunConfig:
    """What the harness owns. Defaults are the reference CIFAR settings scaled to
    the embedded ``digits`` quickstart where noted."""

    epochs: int = 20  # digits quickstart budget; the reference CIFAR runs use 200
    batch_size: int = 128  # reference CIFAR runs: 256
    kd_steps: int = 40  # student steps per epoch when no data scale is given (reference: 400)
    lr: float = 0.1  # student SGD learning rate (reference: 0.1; Fast uses 0.2)
    momentum: float = 0.9
    weight_decay: float = 1e-4
    T: float = 20.0  # KD temperature of the reference CIFAR runs
    # Synthesis-only epochs before distillation starts (Fast: 20); an online method trains
    # only its generator in them, steps_per_epoch generator steps an epoch.
    warmup_epochs: int = 0
    eval_every: int = 1
    data_scale: int = 0  # synthetic (or, for real-data baselines, real) samples per epoch; 0 = unset
    # Student passes over the data-scale samples an epoch (with a data scale only): a control
    # that gives a small pool as many student steps as a large one, separating the data scale
    # from the step count it sets (the paper's SSD-KD takes one pass, ceil(|B| / batch) steps)
    kd_passes: int = 1
    device: Literal["auto", "cpu", "cuda"] = "auto"
    # fp32, bf16 (autocast) or auto: bf16 where the device runs it natively (a GPU with
    # bf16, a CPU with AMX-BF16 or AVX512-BF16), else fp16 on a Volta/Turing GPU (distillation
    # only, with a gradient scaler), else fp32; see dfkd_bench.precision.
    precision: Literal["auto", "fp32", "bf16", "fp16"] = "auto"
    # Where bf16 applies when the precision is bf16: every phase, only distillation (and
    # evaluation; synthesis in fp32), or only synthesis (and the augmentation filter).
    bf16_phases: Literal["all", "distillation", "synthesis"] = "all"
    # Models and image batches channels_last, on the CPU and CUDA alike (faster on both;
    # False gives the NCHW arithmetic of runs made before issue 16).
    channels_last: bool = True
    num_threads: int = 0  # torch CPU threads; 0 leaves torch's default
    # Deterministic algorithms, cuBLAS's fixed workspace and no cuDNN autotuning (CUDA is
    # otherwise not bit-reproducible); TF32 for fp32 convolutions and matmuls on Ampere+
    # (off: fp32 means fp32). See dfkd_bench.backends.
    deterministic: bool = False
    tf32: bool = False
    # torch.compile of the student (its forward and backward), compiled in the start-up
    # phase; environment.json's "compiled" says what ran (backends.compiled_start).
    compile: bool = False
    # The student's learning-rate schedule: "cosine", a cosine to 0 stepped every student step
    # over the run's distillation steps; "reference", the reference scripts' cosine stepped
    # once a distillation epoch over 200 epochs to 2e-4 whatever the run's length (every
    # method's ``paper`` preset, so it reproduces their arithmetic); see harness.StudentTrainer
    lr_schedule: Literal["cosine", "reference"] = "cosine"

    def steps_per_epoch(self) -> int:
        """Student steps per epoch: the data scale sets it when given (``kd_passes``
        passes over N samples at the batch size, one by default), else ``kd_steps``."""
        if self.data_scale > 0:
            return self.kd_passes * max(1, -(-self.data_scale // self.batch_size))
        return self.kd_steps

    def validate(self, who: str = "run", device_here: bool = True) -> None:
        """Every budget and rate makes sense and (``device_here``) the device exists on
        this machine; a ``UserError`` naming the field otherwise. Called by the planner
        before anything runs; a sweep planned for other machines (Slurm from a login
        node) leaves the device to the machine that runs it."""
        for name in ("epochs", "batch_size", "kd_steps", "kd_passes", "eval_every"):
            if getattr(self, name) < 1:
                raise UserError(f"{who}: {name}={getattr(self, name)}; expected a positive integer")
        for name in ("warmup_epochs", "data_scale", "num_threads"):
            if getattr(self, name) < 0:
                raise UserError(f"{who}: {name}={getattr(self, name)}; expected 0 or a positive integer")
        for name in ("lr", "T"):
            value = getattr(self, name)
            if not (math.isfinite(value) and value > 0):
                raise UserError(f"{who}: {name}={value}; expected a finite positive number")
        if not (math.isfinite(self.weight_decay) and self.weight_decay >= 0) or not 0 <= self.momentum < 1:
            raise UserError(f"{who}: momentum={self.momentum}, weight_decay={self.weight_decay}; expected "
                            "0 <= momentum < 1 and a finite weight_decay >= 0")
        if self.epochs <= self.warmup_epochs:
            raise UserError(f"{who}: epochs={self.epochs} leaves no epoch after warmup_epochs={self.warmup_epochs}; "
                            "the student would never be trained (raise --epochs or --set warmup_epochs=...)")
        if device_here:
            resolve_device(self.device)


RUN_FIELDS = frozenset(f.name for f in fields(RunConfig))
# Run fields that are gone, and what replaced them (an old key is an error naming it).
RETIRED_RUN_FIELDS = {
    "amp_bf16": "precision=bf16 (or auto: bf16 where the device runs it natively; it now works on the CPU too)",
}

# Bounds of a method config field, checked with the choices in ``check_fields``: counts
# that must be positive (``steps``, ``synth_batch``), rates and temperatures that must
# be finite and positive, sizes where 0 means "none".
POSITIVE, NON_NEGATIVE = "positive", "non-negative"
PositiveInt = Annotated[int, POSITIVE]
NonNegativeInt = Annotated[int, NON_NEGATIVE]
PositiveFloat = Annotated[float, POSITIVE]
NonNegativeFloat = Annotated[float, NON_NEGATIVE]


def target_device_type(name: str | None) -> str:
    """The device type a run with ``device=name`` is planned for: ``cpu`` or ``cuda`` as
    named (whether or not this machine has one), ``auto`` (or None) this machine's."""
    if name in ("cpu", "cuda"):
        return name
    return resolve_device(name or "auto").type


def resolve_device(name: str):
    """``auto`` is CUDA where there is one, else the CPU; ``cuda`` without one is a
    ``UserError``."""
    import torch

    if name == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    if name not in ("cpu", "cuda"):
        raise UserError(f"unknown device {name!r}; accepted: auto, cpu, cuda")
    if name == "cuda" and not torch.cuda.is_available():
        raise UserError("--device cuda: no CUDA device is available here; use --device cpu or auto")
    return torch.device(name)


def check_namespace(config_cls: type, owner: str) -> None:
    """A method config field may not shadow a ``RunConfig`` field: one key, one knob.
    A programmer error, raised when the method registers."""
    clash = sorted(RUN_FIELDS & {f.name for f in fields(config_cls)})
    if clash:
        raise TypeError(f"{owner}: config field(s) {', '.join(clash)} of {config_cls.__name__} shadow RunConfig "
                        "fields; rename them (e.g. deepinv's pixel learning rate is lr_x, not lr)")


def _accepted(typ: Any) -> str:
    return ", ".join(map(str, typing.get_args(typ)))


def _optional(typ: Any) -> tuple[Any, bool]:
    """(the type inside ``X | None``, whether None is allowed)."""
    origin = typing.get_origin(typ)
    if origin is typing.Union or str(origin) == "types.UnionType":
        args = [a for a in typing.get_args(typ) if a is not type(None)]
        return args[0], len(args) < len(typing.get_args(typ))
    return typ, False


def _parse_value(text: str, typ: Any, key: str) -> Any:
    typ, nullable = _optional(typ)
    if nullable and text.lower() in ("none", "null"):
        return None
    origin = typing.get_origin(typ)
    if origin is Literal:
        if text not in typing.get_args(typ):
            raise UserError(f"{key}={text!r}; accepted: {_accepted(typ)}")
        return text
    try:
        if typ is bool:
            low = text.lower()
            if low in ("1", "true", "yes", "on"):
                return True
            if low in ("0", "false", "no", "off"):
                return False
            raise ValueError
        if typ is int:
            return int(text)
        if typ is float:
            return float(text)
        if typ is str:
            return text
        if origin in (tuple, list):
            inner = typing.get_args(typ)[0] if typing.get_args(typ) else str
            vals = [_parse_value(t.strip(), inner, key) for t in text.split(",") if t.strip()]
            return tuple(vals) if origin is tuple else vals
    except ValueError:
        pass
    else:
        raise UserError(f"--set {key}: unsupported field type {typ}")
    raise UserError(f"--set {key}={text}: expected a value of type {getattr(typ, '__name__', typ)}")


def _coerce(value: Any, typ: Any, key: str) -> Any:
    """Check a value from YAML or a preset (already typed) against the field type."""
    if isinstance(value, str):
        return _parse_value(value, typ, key)
    base, nullable = _optional(typ)
    if value is None and nullable:
        return None
    if base is float and isinstance(value, int) and not isinstance(value, bool):
        return float(value)
    if typing.get_origin(base) in (tuple, list) and isinstance(value, (list, tuple)):
        return tuple(value) if typing.get_origin(base) is tuple else list(value)
    if isinstance(base, type) and isinstance(value, base) and not (base is int and isinstance(value, bool)):
        return value
    raise UserError(f"{key}={value!r}: expected a value of type {getattr(base, '__name__', base)}")


def field_types(cfg_cls: type) -> dict[str, Any]:
    hints = typing.get_type_hints(cfg_cls)
    return {f.name: hints[f.name] for f in fields(cfg_cls)}


def check_fields(cfg: Any, who: str) -> None:
    """Every ``Literal`` field of ``cfg`` holds one of its choices and every bounded
    field (``PositiveInt`` ...) is in its range, defaults and values set in code
    included, not only ``--set``."""
    hints = typing.get_type_hints(type(cfg), include_extras=True)
    for f in fields(cfg):
        typ, value = hints[f.name], getattr(cfg, f.name)
        bound = typ.__metadata__[0] if typing.get_origin(typ) is Annotated else None
        base, nullable = _optional(typing.get_args(typ)[0] if bound else typ)
        if nullable and value is None:
            continue
        if typing.get_origin(base) is Literal and value not in typing.get_args(base):
            raise UserError(f"{who}: {f.name}={value!r}; accepted: {_accepted(base)}")
        if bound and not (math.isfinite(value) and (value > 0 if bound == POSITIVE else value >= 0)):
            kind = "integer" if base is int else "finite number"
            raise UserError(f"{who}: {f.name}={value}; expected a {bound} {kind}")


def apply_changes(run_cfg: RunConfig, method_cfg: Any, changes: dict[str, Any], source: str,
                  renamed: dict[str, str] | None = None) -> tuple[RunConfig, Any]:
    """Apply ``changes`` (from a preset or ``--set``) to the two configs.

    A bare key goes to whichever config has it (they share no names). ``run.key`` and
    ``method.key`` say which one explicitly. ``renamed`` maps a method's old field names
    to their new ones; using an old name is an error that names the new one.
    """
    run_types, method_types = field_types(type(run_cfg)), field_types(type(method_cfg))
    run_upd, method_upd = {}, {}
    for raw_key, value in changes.items():
        scope, _, key = raw_key.rpartition(".")
        if scope not in ("", "run", "method"):
            raise UserError(f"{source}: unknown scope in {raw_key!r}; use run.<key> or method.<key>")
        if renamed and key in renamed and scope != "run":
            where = f"; the student's {key} is run.{key}" if key in run_types else ""
            raise UserError(f"{source}: {raw_key!r}: the method field {key!r} was renamed {renamed[key]!r}{where}")
        if key in RETIRED_RUN_FIELDS and scope != "method" and key not in method_types:
            raise UserError(f"{source}: {raw_key!r} was replaced by {RETIRED_RUN_FIELDS[key]}")
        if scope != "run" and key in method_types:
            method_upd[key] = _coerce(value, method_types[key], raw_key)
        elif scope != "method" and key in run_types:
            run_upd[key] = _coerce(value, run_types[key], raw_key)
        else:
            known = ", ".join(sorted(method_types if scope == "method" else run_types if scope == "run"
                                     else set(run_types) | set(method_types)))
            raise UserError(f"{source}: unknown key {raw_key!r}; known keys: {known}")
    return dataclasses.replace(run_cfg, **run_upd), dataclasses.replace(method_cfg, **method_upd)


def parse_set_options(items: list[str]) -> dict[str, str]:
    out: dict[str, str] = {}
    for item in items:
        key, sep, value = item.partition("=")
        if not sep or not key.strip() or not value.strip():
            raise UserError(f"malformed --set {item!r}; expected key=value, e.g. --set lr=0.05")
        out[key.strip()] = value.strip()
    return out


def load_preset_file(path: Path) -> dict[str, Any]:
    """A preset file is a YAML mapping of changes only (field -> value)."""
    try:
        data = yaml.safe_load(path.read_text())
    except (OSError, yaml.YAMLError) as exc:
        raise UserError(f"cannot read preset file {path}: {exc}".splitlines()[0]) from None
    if not isinstance(data, dict):
        raise UserError(f"preset file {path} must hold a mapping of field: value")
    return data


def to_dict(cfg: Any) -> dict[str, Any]:
    return {k: (list(v) if isinstance(v, tuple) else v) for k, v in dataclasses.asdict(cfg).items()}


# Run fields added after run records were committed (reports/cpu-study/runs), each with the
# value at which a run computes what it did before the field existed. A run's identity (its
# config.json, name hash and report row) leaves such a field out at that value, so a run made
# before the field keeps its name, resumes and shares its experiment's row with runs made since.
NEUTRAL_RUN_FIELDS = {"kd_passes": 1, "lr_schedule": "cosine", "deterministic": False, "tf32": False,
                      "compile": False}


def run_identity(run: RunConfig) -> dict[str, Any]:
    """``run`` as a resolved config holds it: every field but those at their neutral value."""
    return {k: v for k, v in to_dict(run).items()
            if not (k in NEUTRAL_RUN_FIELDS and v == NEUTRAL_RUN_FIELDS[k])}
