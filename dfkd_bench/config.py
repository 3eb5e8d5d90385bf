"""Typed run configuration, presets and ``--set key=value`` overrides.

A run is described by two dataclasses: ``RunConfig`` (what the harness owns: budget,
student optimiser, devices, seeds) and the method's own config dataclass. Presets and
``--set`` overrides address both through one flat namespace of field names; a
name that neither has, or a value of the wrong type, is a ``UserError``.
"""
from __future__ import annotations

import dataclasses
import typing
from dataclasses import dataclass, field, fields
from pathlib import Path
from typing import Any

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
    device: str = "auto"  # auto | cpu | cuda
    amp_bf16: bool = False  # bf16 autocast, CUDA only
    channels_last: bool = False  # CUDA only
    num_threads: int = 0  # torch CPU threads; 0 leaves torch's default

    def steps_per_epoch(self) -> int:
        """Student steps per epoch: the data scale sets it when given (one pass over
        N samples at the batch size), else ``kd_steps``."""
        if self.data_scale > 0:
            return max(1, -(-self.data_scale // self.batch_size))
        return self.kd_steps


def _parse_value(text: str, typ: Any, key: str) -> Any:
    origin = typing.get_origin(typ)
    if origin is typing.Union or str(origin) == "types.UnionType":
        args = [a for a in typing.get_args(typ) if a is not type(None)]
        if text.lower() in ("none", "null") and len(args) < len(typing.get_args(typ)):
            return None
        typ = args[0]
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
    """Check a value from YAML (already typed) against the field type."""
    if isinstance(value, str):
        return _parse_value(value, typ, key)
    base = typ
    origin = typing.get_origin(typ)
    if origin is typing.Union or str(origin) == "types.UnionType":
        if value is None and type(None) in typing.get_args(typ):
            return None
        base = [a for a in typing.get_args(typ) if a is not type(None)][0]
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


def apply_changes(run_cfg: RunConfig, method_cfg: Any, changes: dict[str, Any], source: str) -> tuple[RunConfig, Any]:
    """Apply ``changes`` (from a preset or ``--set``) to the two configs.

    A key may be prefixed ``run.`` or ``method.`` when both configs have it; a bare key
    goes to the method config first.
    """
    run_types, method_types = field_types(type(run_cfg)), field_types(type(method_cfg))
    run_upd, method_upd = {}, {}
    for raw_key, value in changes.items():
        scope, _, key = raw_key.rpartition(".")
        if scope not in ("", "run", "method"):
            raise UserError(f"{source}: unknown scope in {raw_key!r}; use run.<key> or method.<key>")
        if scope != "run" and key in method_types:
            method_upd[key] = _coerce(value, method_types[key], raw_key)
        elif scope != "method" and key in run_types:
            run_upd[key] = _coerce(value, run_types[key], raw_key)
        else:
            known = ", ".join(sorted(set(run_types) | set(method_types)))
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


__all__ = ["RunConfig", "apply_changes", "parse_set_options", "load_preset_file", "to_dict", "field"]
