"""Planning: from method names and options to validated run specs, outside any CLI.

The layers, in this order, each over the last (later wins):

1. ``RunConfig()`` and the method's config dataclass defaults;
2. the method's ``run_defaults`` (what defines it, e.g. SSD-KD's buffer size);
3. the preset (a named preset of the method, or a YAML file of changes);
4. the options (``epochs``, ``data_scale``, ``device``; ``None`` leaves a field alone);
5. ``--set`` changes: ``key=value`` for every method, ``<method>.key=value`` for one.

Then ``RunConfig.validate()`` and the method config's choice fields are checked, so a
bad value stops the plan before anything runs. ``dfkd-bench run``, the benchmark
scripts and sweeps all plan through ``plan_runs``.
"""
from __future__ import annotations

import hashlib
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Iterable

from .config import RunConfig, apply_changes, check_fields, load_preset_file, parse_set_options, \
    target_device_type
from .errors import UserError
from .method import Method
from .pairs import DEFAULT_DATASET, resolve_pair
from .registry import DATASETS, METHODS
from .summary import run_label
from .tasks import dataset_task


@dataclass
class RunSpec:
    """Everything that identifies one run, before it is resolved."""

    method_cls: type[Method]
    dataset: str
    pair: str | None
    seed: int
    run: RunConfig
    method_config: Any
    preset: str | None = None
    out: Path = Path("results")
    data_root: str | None = None
    cache: str | None = None
    download: bool = False
    train_missing_teacher: bool = True
    force: bool = False

    @property
    def method(self) -> str:
        return self.method_cls.name

    @property
    def label(self) -> str:
        return run_label(self.method, self.preset)


def resolve_method(entry: str, preset: str | None = None) -> tuple[type[Method], str | None]:
    """``entry`` is a method (``fast``), ``method:preset`` (``fast:fast10-cpu``), or a
    preset name that belongs to exactly one method (``fast10``). An entry's own preset
    beats ``preset``."""
    name, sep, own = entry.partition(":")
    if sep:
        if not own:
            raise UserError(f"{entry!r}: empty preset after ':'; use method:preset, e.g. fast:fast10")
        return METHODS.get(name), own
    if name in METHODS:
        return METHODS.get(name), preset
    owners = sorted(cls.name for _, cls in METHODS.items() if name in cls.presets)
    if len(owners) == 1 and preset is None:
        return METHODS.get(owners[0]), name
    if len(owners) > 1:
        raise UserError(f"{name!r} is a preset of several methods ({', '.join(owners)}); name one as "
                        f"method:{name}, e.g. {owners[0]}:{name}, or pass --preset {name}")
    METHODS.get(name)  # raises the "unknown method ... known: ..." error
    raise AssertionError


def is_preset_file(preset: str) -> bool:
    return Path(preset).suffix in (".yaml", ".yml")


def preset_label(preset: str) -> str:
    """How a preset shows in run names and tables: its name, or for a YAML file its stem
    and a hash of its content (never the path: a run name is one safe folder name)."""
    if not is_preset_file(preset):
        return preset
    try:
        digest = hashlib.sha256(Path(preset).read_bytes()).hexdigest()[:8]
    except OSError as exc:
        raise UserError(f"cannot read preset file {preset}: {exc.strerror or exc}") from None
    return f"{Path(preset).stem}-{digest}"


def preset_changes(cls: type[Method], preset: str) -> dict[str, Any]:
    if is_preset_file(preset):
        return load_preset_file(Path(preset))
    if preset in cls.presets:
        return cls.presets[preset]
    raise UserError(f"unknown preset {preset!r} for method {cls.name}; "
                    f"known: {', '.join(sorted(cls.presets)) or 'none'} (or a .yaml file)")


def scoped(changes: dict[str, Any], method: str) -> dict[str, Any]:
    """``--set`` keys for one method: ``<method>.key`` is kept (as ``key``, or
    ``run.key``/``method.key`` when written so) only for that method; other keys go to
    every method."""
    out = {}
    for key, value in changes.items():
        head, _, rest = key.partition(".")
        if head in METHODS:
            if head == method:
                out[rest] = value
        else:
            out[key] = value
    return out


def check_scoped_sets(changes: dict[str, Any]) -> None:
    """Every ``<method>.key=value`` change checked against that method's configs, whether
    or not the method is in the command (one not run would otherwise be ignored in
    silence: a typo's usual fate), and a scope that is neither ``run``, ``method`` nor a
    method refused with the methods named."""
    for key, value in changes.items():
        head, dot, rest = key.partition(".")
        if not dot or head in ("run", "method"):
            continue
        if head not in METHODS:
            raise UserError(f"--set {key}={value}: unknown scope {head!r}; accepted: run.<key>, method.<key> or "
                            f"<method>.<key> with a method of {', '.join(METHODS.names())}")
        cls = METHODS.get(head)
        try:
            _, method_cfg = apply_changes(RunConfig(), cls.config_cls(), {rest: value}, "--set", cls.renamed)
            check_fields(method_cfg, "--set")
        except UserError as exc:  # the field's own message, said of this method
            raise UserError(f"{cls.name}: {exc}") from None


def configure(cls: type[Method], preset: str | None = None, options: dict[str, Any] | None = None,
              sets: dict[str, Any] | None = None, device_here: bool = True) -> tuple[RunConfig, Any]:
    """The run and method configs of one method, layered as the module docstring says,
    and validated (the device on this machine only with ``device_here``)."""
    run_cfg, method_cfg = apply_changes(RunConfig(), cls.config_cls(),
                                        {f"run.{k}": v for k, v in cls.run_defaults.items()}, f"{cls.name} defaults")
    layers = [(preset_changes(cls, preset), f"preset {preset}")] if preset else []
    layers += [({f"run.{k}": v for k, v in (options or {}).items() if v is not None}, "option"),
               (scoped(sets or {}, cls.name), "--set")]
    for changes, source in layers:
        run_cfg, method_cfg = apply_changes(run_cfg, method_cfg, changes, f"{cls.name}: {source}", cls.renamed)
    run_cfg.validate(cls.name, device_here)
    check_fields(method_cfg, cls.name)
    cls.check_config(run_cfg, method_cfg)
    return run_cfg, method_cfg


def data_scale_list(data_scale: int | Iterable[int] | None) -> list[int | None]:
    """``--data-scale`` as the list of scales a plan expands over (``[None]``: each
    method's own default); every scale must be a positive integer."""
    if data_scale is None:
        return [None]
    scales = [data_scale] if isinstance(data_scale, int) else list(data_scale)
    if not scales:
        raise UserError("--data-scale is empty; give comma-separated positive integers, e.g. 500,2500,5000")
    for scale in scales:
        if isinstance(scale, bool) or not isinstance(scale, int) or scale <= 0:
            raise UserError(f"--data-scale {scale!r}: expected positive integers, e.g. 500,2500,5000")
    return list(dict.fromkeys(scales))


def data_scale_notes(specs: list[RunSpec], data_scale: int | Iterable[int] | None) -> list[str]:
    """One line for each method of a plan that has no data scale of its own when
    ``--data-scale`` was given: for it the option only changes the budget."""
    if data_scale is None:
        return []
    data_scale = ",".join(str(s) for s in data_scale_list(data_scale))
    notes, seen = [], set()
    for spec in specs:
        cls = spec.method_cls
        if cls.data_scale_means or cls.name in seen:
            continue
        seen.add(cls.name)
        pool = "pool capacity and " if cls.mode == "pool" else ""
        notes.append(f"{spec.label}: --data-scale {data_scale} changes its budget ({pool}student steps an epoch, "
                     f"{spec.run.steps_per_epoch()} at scale {spec.run.data_scale}); it has no data scale of its own, "
                     f"so this is not its published setting")
    return notes


def check_task(cls: type[Method], task: str, dataset: str) -> None:
    """A method runs only on the tasks it declares (``Method.tasks``)."""
    if task not in cls.tasks:
        able = sorted(name for name, m in METHODS.items() if task in m.tasks)
        raise UserError(f"method {cls.name} does not support {task} yet (data set {dataset} is a {task} task); "
                        f"methods that do: {', '.join(able) or 'none'}")


def plan_runs(methods: Iterable[str], *, dataset: str = DEFAULT_DATASET, pair: str | None = None,
              preset: str | None = None, seeds: Iterable[int] = (0,), epochs: int | None = None,
              data_scale: int | Iterable[int] | None = None, device: str | None = None,
              sets: dict[str, Any] | list[str] | None = None, out: str | Path = "results",
              data_root: str | None = None, cache: str | None = None, download: bool = False,
              train_missing_teacher: bool = True, force: bool = False, device_here: bool = True) -> list[RunSpec]:
    """One validated ``RunSpec`` per (method, data scale, seed), methods in the order
    given; ``data_scale`` is one scale or a list (a data-scale grid). ``sets`` is a
    mapping of changes or a list of ``key=value`` items. ``device_here`` False plans for
    another machine (a sweep's compute nodes): ``device`` must be a valid name, the
    default pair is the named device's, and availability is checked where it runs."""
    methods, seeds = list(methods), list(seeds)
    if not methods:
        raise UserError("--methods is empty; give comma-separated method names (see dfkd-bench list)")
    if not seeds:
        raise UserError("--seeds is empty; give comma-separated integers, e.g. 0,1,2")
    for seed in seeds:
        if not 0 <= seed < 2**32:
            raise UserError(f"seed {seed}: expected an integer from 0 to 2**32 - 1")
    DATASETS.get(dataset.split(":", 1)[0])
    pair = resolve_pair(pair, dataset, target_device_type(device)).name
    changes = parse_set_options(sets) if isinstance(sets, list) else dict(sets or {})
    check_scoped_sets(changes)
    scales = data_scale_list(data_scale)
    specs = []
    task = dataset_task(dataset)
    for entry in methods:
        cls, own_preset = resolve_method(entry, preset)
        check_task(cls, task, dataset)
        label = preset_label(own_preset) if own_preset else None
        for scale in scales:
            options = {"epochs": epochs, "data_scale": scale, "device": device}
            run_cfg, method_cfg = configure(cls, own_preset, options, changes, device_here)
            specs += [RunSpec(method_cls=cls, preset=label, dataset=dataset, pair=pair, seed=seed,
                              run=run_cfg, method_config=method_cfg, out=Path(out), data_root=data_root, cache=cache,
                              download=download, train_missing_teacher=train_missing_teacher, force=force)
                      for seed in seeds]
    return specs
