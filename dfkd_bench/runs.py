"""The runs of a results tree as rows, and the experiments they make: runs of one data set,
pair, method label, data scale and every other setting but the seed (``GROUP``), averaged
over their completed seeds. The report's tables and its figures both read them from here.
"""
from __future__ import annotations

import re
import statistics
from pathlib import Path

import pandas as pd

from . import store
from .config import NEUTRAL_RUN_FIELDS
from .errors import UserError
from .summary import COST_SUFFIXES
from .timing import TRAIN_PHASES

GROUP = ["dataset", "pair", "label", "data_scale", "config_id"]
# Settings that do not change what a run measures: where it ran is recorded (device,
# environment.json), but "auto" that chose the CPU and "cpu" are one experiment.
NOT_IDENTITY = {"run.device"}


def run_settings(resolved: dict) -> dict[str, object]:
    """A resolved config as flat settings (``epochs``, ``steps``, ``preset`` ...), without
    the seed: what makes two runs the same experiment."""
    flat = {k: v for k, v in resolved.items() if k not in ("seed", "run", "method_config")}
    # a run field at its neutral value is left out of a config (and of the run's name): read back as it
    run = {**NEUTRAL_RUN_FIELDS, **resolved.get("run", {})}
    for scope, values in (("run", run), ("method_config", resolved.get("method_config", {}))):
        for k, v in values.items():
            key = f"run.{k}" if scope == "run" else k
            if key not in NOT_IDENTITY:
                flat[key] = tuple(v) if isinstance(v, list) else v
    return flat


def distinguishing_labels(done: pd.DataFrame) -> pd.Series:
    """The method label, plus the fewest settings that tell apart the runs of the same
    method and data scale that are not the same experiment (``kd (epochs=2)``). Settings
    every config has come first; one that older configs lack (a field added since) is
    shown only where nothing else separates them. Long values are cut to 10 characters."""
    labels = done["label"].copy()
    for _, group in done.groupby(["dataset", "pair", "label", "data_scale"], dropna=False):
        if group["config_id"].nunique() < 2:
            continue
        configs = dict(zip(group["config_id"], group["settings"]))
        differing = [k for k in set().union(*configs.values())
                     if len({repr(c.get(k)) for c in configs.values()}) > 1]
        differing.sort(key=lambda k: (not all(k in c for c in configs.values()), k))
        keys: list[str] = []
        for key in differing:
            keys.append(key)
            if len({tuple(repr(c.get(k)) for k in keys) for c in configs.values()}) == len(configs):
                break
        keys.sort()
        for i, row in group.iterrows():
            shown = ", ".join(f"{k.removeprefix('run.')}={_short(row['settings'].get(k))}" for k in keys)
            labels[i] = f"{row['label']} ({shown})"
    return labels


def _short(value) -> str:
    text = str(value)
    return text if len(text) <= 12 else text[:10] + "…"


def completed_runs(df: pd.DataFrame) -> pd.DataFrame:
    """The completed runs with their distinguishing labels; running, failed and
    interrupted runs are never averaged in (the report lists them apart)."""
    done = df[df["status"] == "completed"].copy() if "status" in df else df.copy()
    if not done.empty:
        done["label"] = distinguishing_labels(done)
    return done


def experiments(done: pd.DataFrame) -> pd.DataFrame:
    """One row per experiment (data set, pair, method, data scale and every other setting
    but the seed) over its completed seeds: mean and std of final top-1 and train
    seconds, means of every phase's seconds and cost counter."""
    if done.empty:
        return pd.DataFrame()
    numeric = [c for c in done.columns if c.startswith("seconds_") or c.endswith(COST_SUFFIXES)]
    # The metric the top-1 columns hold (top-1, mIoU), kept where the rows say it.
    metric = {"metric": ("metric", "first")} if "metric" in done.columns else {}
    agg = done.groupby(GROUP, dropna=False).agg(
        method=("method", "first"), preset=("preset", "first"), teacher=("teacher", "first"),
        teacher_top1=("teacher_top1", "first"), **metric,
        seeds=("seed", "size"), top1_mean=("final_top1", "mean"), top1_std=("final_top1", "std"),
        best_top1_mean=("best_top1", "mean"), train_seconds=("train_seconds", "mean"),
        train_seconds_std=("train_seconds", "std"), total_seconds=("total_seconds", "mean"),
        training_flops=("training_flops", "mean"), peak_memory_mb=("peak_memory_mb", "mean"),
        **{c: (c, "mean") for c in numeric})
    return agg.reset_index()


def teachers_of(done: pd.DataFrame) -> pd.DataFrame:
    """Per (data set, pair): the teacher architecture and its zoo-measured top-1."""
    return done.groupby(["dataset", "pair"], dropna=False).agg(
        teacher=("teacher", "first"), top1=("teacher_top1", "first")).reset_index()


def preset_samples_per_epoch(method: str, preset: str | None) -> int | None:
    """The samples a method's student sees an epoch at its preset with nothing changed
    (the data scale where the preset sets one, else KD steps x batch), or None for a
    method or preset this installation does not know."""
    from .plan import configure
    from .registry import METHODS

    try:
        run_cfg, _ = configure(METHODS.get(method), preset)
    except UserError:
        return None
    return run_cfg.data_scale or run_cfg.steps_per_epoch() * run_cfg.batch_size


def safe(name: str) -> str:
    return re.sub(r"[^A-Za-z0-9.+=-]", "_", name)


def epoch_records(run_dir) -> dict[int, dict]:
    """A run's ``metrics.jsonl`` epoch records by epoch; after a resume an epoch can be
    logged twice, and the last record is the one the run went on from. Unreadable lines
    are skipped."""
    path = Path(run_dir)
    last: dict[int, dict] = {}
    for record in store.RunDir(path.parent, path.name).read_metrics():
        if record.get("event") == "epoch" and isinstance(record.get("epoch"), int):
            last[record["epoch"]] = record
    return last


def epoch_steps(last: dict[int, dict], keys, missing: float | None = None) -> dict[int, float]:
    """Each epoch's own part of the cumulative ``keys`` of its records (``epoch_records``),
    summed: its record's values less the epoch before's (epoch 0's from 0), for the epochs
    where both records have every key (``missing``: the value of an absent key instead)."""
    def values(record: dict | None) -> list[float] | None:
        if record is None or (missing is None and not all(k in record for k in keys)):
            return None
        return [float(record.get(k, missing)) for k in keys]

    steps = {}
    for epoch in sorted(last):
        now, before = values(last[epoch]), [0.0] * len(keys) if epoch == 0 else values(last.get(epoch - 1))
        if now is not None and before is not None:
            steps[epoch] = sum(now) - sum(before)
    return steps


def machine_kinds(run_dir) -> set[tuple[str | None, str | None]]:
    """The machines a run ran on (``store.machine_kind``): the one it started on
    (``environment.json``) and any it resumed on (the resume records of ``metrics.jsonl``)."""
    path = Path(run_dir)
    envs = [record.get("environment") or {} for record in store.RunDir(path.parent, path.name).read_metrics()
            if record.get("event") == "resume"]
    try:
        envs.append(store.read_json(path / store.ENVIRONMENT))
    except (OSError, ValueError):
        pass
    return set(map(store.machine_kind, envs))


# A run whose threads had less than this share of their cores' time (``cpu_share``) ran
# beside other work that slowed it: its wall-clock times overstate its cost.
LOADED_SHARE = 0.85


def cpu_share(run_dir) -> float | None:
    """The share of its threads' wall-clock time a CPU run's train phases got of the CPU:
    the process's CPU seconds over wall seconds times threads, over the epochs whose record
    and the one before it have both (``timing.PhaseClock``). About 1 where the run had its
    cores to itself, 0.5 where it shared each with another busy process; None for a GPU
    run or records from before CPU seconds were kept."""
    path = Path(run_dir)
    last = epoch_records(path)
    cpu = epoch_steps(last, [f"cpu_seconds_{p}" for p in TRAIN_PHASES])
    wall = epoch_steps(last, [f"seconds_{p}" for p in TRAIN_PHASES], missing=0.0)
    seconds = sum(wall[e] for e in cpu)
    return sum(cpu.values()) / (seconds * run_threads(path)) if seconds > 0 else None


def cpu_train_seconds(run_dir) -> float | None:
    """A CPU run's train time in its process's CPU seconds per thread (``timing.PhaseClock``):
    what its train phases cost with the wall-clock time other work took from it left out.
    None for a GPU run, or where an epoch's record lacks CPU seconds (a run from before
    they were kept, or resumed from such a run's checkpoint)."""
    path = Path(run_dir)
    last = epoch_records(path)
    keys = [f"cpu_seconds_{p}" for p in TRAIN_PHASES]
    if not last or sorted(last) != list(range(len(last))) or any(k not in r for r in last.values() for k in keys):
        return None
    return sum(float(last[len(last) - 1][k]) for k in keys) / run_threads(path)  # the records are cumulative


def run_threads(path: Path) -> int:
    """The threads a run's environment record says it had (1 where it does not say)."""
    try:
        return int(store.read_json(path / store.ENVIRONMENT).get("threads") or 1)
    except (OSError, ValueError, TypeError):
        return 1


def timing_notes(paths) -> list[str]:
    """[] where the runs at ``paths`` ran on one kind of machine (``store.mixed_kinds``) with
    their cores to themselves (``cpu_share`` at least ``LOADED_SHARE``, or not recorded), else
    what their times mix: machine kinds, or runs slowed by other work."""
    paths = list(paths)
    kinds = store.mixed_kinds(set().union(*(machine_kinds(p) for p in paths)) if paths else set())
    shares = [s for s in map(cpu_share, paths) if s is not None]
    notes = [f"times from {len(kinds)} machine kinds: {'; '.join(kinds)}"] if kinds else []
    if shares and min(shares) < LOADED_SHARE:
        notes.append(f"runs slowed by other work: their threads had {min(shares):.0%}-{max(shares):.0%} of their "
                     f"cores' time")
    return notes


def median_epoch_train_seconds(run_dir, warmup_epochs: int = 0) -> float | None:
    """A run's train time as its median epoch would make it: the count of warm-up epochs
    (synthesis only) times their median train seconds, plus the count of the other epochs
    times theirs. On a shared machine a stretch of load inflates the recorded total but
    hardly moves a median, so two runs timed under different loads compare by this. None
    without a complete epoch record (after a resume the last record of an epoch counts)."""
    last = epoch_records(run_dir)
    epochs = sorted(last)
    if not epochs or epochs != list(range(len(epochs))):
        return None
    steps = list(epoch_steps(last, [f"seconds_{p}" for p in TRAIN_PHASES], missing=0.0).values())
    parts = [steps[:warmup_epochs], steps[warmup_epochs:]]
    return float(sum(len(p) * statistics.median(p) for p in parts if p))
