"""Comparison tables from the ``summary.json`` files of a results tree (never from logs)."""
from __future__ import annotations

import json
from pathlib import Path

import pandas as pd

from . import store
from .summary import RunSummary

GROUP = ["dataset", "pair", "label", "data_scale", "config_id"]
# Settings that do not change what a run measures: where it ran is recorded (device,
# environment.json), but "auto" that chose the CPU and "cpu" are one experiment.
NOT_IDENTITY = {"run.device"}


def run_settings(resolved: dict) -> dict[str, object]:
    """A resolved config as flat settings (``epochs``, ``steps``, ``preset`` ...), without
    the seed: what makes two runs the same experiment."""
    flat = {k: v for k, v in resolved.items() if k not in ("seed", "run", "method_config")}
    for scope in ("run", "method_config"):
        for k, v in resolved.get(scope, {}).items():
            key = f"run.{k}" if scope == "run" else k
            if key not in NOT_IDENTITY:
                flat[key] = tuple(v) if isinstance(v, list) else v
    return flat


def load_summaries(root: Path) -> tuple[pd.DataFrame, list[tuple[str, str]]]:
    """Every run under ``root`` as a table row, and the run directories that could not
    be read, each with the reason. A row carries ``config_id``, the hash of its resolved
    config without the seed (from ``config.json``), so runs of other settings never
    share a row."""
    rows, problems = [], []
    for path in sorted(Path(root).rglob(store.SUMMARY)):
        try:
            summary = RunSummary.from_json(json.loads(path.read_text()))
        except (OSError, ValueError, KeyError, TypeError, AttributeError) as exc:
            problems.append((str(path.parent), f"{store.SUMMARY}: {type(exc).__name__}: {exc}".splitlines()[0][:200]))
            continue
        row = summary.row()
        try:
            settings = run_settings(json.loads((path.parent / store.CONFIG).read_text()))
        except (OSError, ValueError, AttributeError) as exc:
            problems.append((str(path.parent), f"{store.CONFIG}: {type(exc).__name__}: {exc}".splitlines()[0][:200]))
            continue
        row["config_id"] = store.config_hash(settings)
        row["settings"] = settings
        row["path"] = str(path.parent)
        rows.append(row)
    return pd.DataFrame(rows), problems


def distinguishing_labels(done: pd.DataFrame) -> pd.Series:
    """The method label, plus the settings that differ between runs of the same method
    and data scale that are not the same experiment (``kd (epochs=2)``)."""
    labels = done["label"].copy()
    for _, group in done.groupby(["dataset", "pair", "label", "data_scale"], dropna=False):
        if group["config_id"].nunique() < 2:
            continue
        configs = list(group.drop_duplicates("config_id")["settings"])
        keys = sorted(k for k in set().union(*configs) if len({repr(c.get(k)) for c in configs}) > 1)
        for i, settings in group["settings"].items():
            shown = ", ".join(f"{k.removeprefix('run.')}={settings.get(k)}" for k in keys)
            labels[i] = f"{group.at[i, 'label']} ({shown})"
    return labels


def comparison_table(df: pd.DataFrame) -> pd.DataFrame:
    """One row per experiment (data set, pair, method, data scale and every other setting
    but the seed) over its completed seeds: mean and std of final top-1, mean train
    seconds and training FLOPs; a teacher row per pair from the zoo's measured top-1."""
    done = df[df["status"] == "completed"].copy() if "status" in df else df.copy()
    if done.empty:
        return pd.DataFrame()
    done["label"] = distinguishing_labels(done)
    agg = done.groupby(GROUP, dropna=False).agg(
        seeds=("seed", "size"), top1_mean=("final_top1", "mean"), top1_std=("final_top1", "std"),
        best_top1_mean=("best_top1", "mean"), train_seconds=("train_seconds", "mean"),
        synthesis_seconds=("seconds_synthesis", "mean"), distillation_seconds=("seconds_distillation", "mean"),
        training_flops=("training_flops", "mean"),
    ).reset_index().drop(columns="config_id")
    teachers = done.groupby(["dataset", "pair"], dropna=False).agg(
        top1_mean=("teacher_top1", "first"), teacher=("teacher", "first")).reset_index()
    teachers["label"] = "teacher (" + teachers.pop("teacher") + ")"
    teachers["data_scale"] = 0
    teachers["seeds"] = 1
    teachers["top1_std"] = float("nan")
    out = pd.concat([teachers, agg], ignore_index=True)
    return out.sort_values(["dataset", "pair", "data_scale", "top1_mean"], ascending=[True, True, True, False],
                           ignore_index=True)[["dataset", "pair", "label", "data_scale", "seeds", "top1_mean",
                                               "top1_std", "best_top1_mean", "train_seconds", "synthesis_seconds",
                                               "distillation_seconds", "training_flops"]]


def format_rows(table: pd.DataFrame) -> list[dict[str, str]]:
    """Human-readable cells: mean ± std, seconds, FLOPs in scientific notation."""
    rows = []
    for r in table.itertuples(index=False):
        teacher = r.label.startswith("teacher")
        rows.append({
            "data set": r.dataset, "pair": r.pair, "method": r.label,
            "data scale": "-" if not r.data_scale else f"{int(r.data_scale):,}",
            "seeds": str(int(r.seeds)),
            "top-1 %": f"{r.top1_mean:.2f}" if teacher or r.seeds < 2 else f"{r.top1_mean:.2f} ± {r.top1_std:.2f}",
            "train s": "-" if teacher or pd.isna(r.train_seconds) else f"{r.train_seconds:.1f}",
            "training FLOPs": "-" if teacher or pd.isna(r.training_flops) else f"{r.training_flops:.3g}",
        })
    return rows


def to_markdown(rows: list[dict[str, str]]) -> str:
    if not rows:
        return "_no completed runs_\n"
    cols = list(rows[0])
    lines = ["| " + " | ".join(cols) + " |", "|" + "|".join("---" for _ in cols) + "|"]
    lines += ["| " + " | ".join(r[c] for c in cols) + " |" for r in rows]
    return "\n".join(lines) + "\n"


def write_report(results: Path, out: Path) -> tuple[pd.DataFrame, list[dict[str, str]], list[tuple[str, str]],
                                                 list[Path]]:
    """The comparison table as markdown and CSV under ``out``; returns the table, its
    formatted rows, the unreadable run directories (listed under the markdown table)
    and the files written."""
    df, problems = load_summaries(results)
    table = comparison_table(df) if not df.empty else pd.DataFrame()
    rows = format_rows(table) if not table.empty else []
    out.mkdir(parents=True, exist_ok=True)
    md, csv = out / "comparison.md", out / "comparison.csv"
    text = ("# Comparison\n\nGenerated by `dfkd-bench report` from "
            f"`{results}`; top-1 is the final test accuracy, mean ± std over seeds (seeds: the runs averaged; "
            "rows differ in every setting but the seed).\n\n" + to_markdown(rows))
    if problems:
        text += "\n## Run directories that could not be read\n\n" + "".join(
            f"- `{where}`: {why}\n" for where, why in problems)
    store.atomic_write_bytes(md, text.encode())
    store.atomic_write_bytes(csv, table.to_csv(index=False).encode())
    return table, rows, problems, [md, csv]
