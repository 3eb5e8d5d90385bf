"""Comparison tables from the ``summary.json`` files of a results tree (never from logs)."""
from __future__ import annotations

import json
import os
from dataclasses import dataclass, field
from pathlib import Path

import pandas as pd

from . import store, tables
from .claims import Claims, arm_values, arms_table, claims_table
from .errors import UserError
from .runs import GROUP as GROUP_KEYS
from .runs import completed_runs, experiments, preset_samples_per_epoch, run_settings, safe, teachers_of
from .summary import RunSummary


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
    return pd.DataFrame(rows), problems + folders_without_summary(root)


# What only a run folder holds: a folder with one of these and no summary.json is a run the
# report skips (and says so), not a folder of something else.
RUN_FILES = {store.LOCK, store.CONFIG, store.ENVIRONMENT, store.METRICS, store.CHECKPOINT}


def folders_without_summary(root: Path) -> list[tuple[str, str]]:
    """The run folders under ``root`` that hold no ``summary.json``, each with why: a
    run that stopped before it started (nothing but ``.lock``), one starting now, or
    one whose summary is gone."""
    found = []
    for folder, _, files in sorted(os.walk(root)):
        names = set(files)
        if store.SUMMARY in names or not names & RUN_FILES:
            continue
        run = store.RunDir(Path(folder).parent, Path(folder).name)
        if run.is_locked():
            why = f"no {store.SUMMARY} yet: a run is starting in it"
        elif names == {store.LOCK}:
            why = f"holds only {store.LOCK}: a run that stopped before it started (the folder can go)"
        else:
            why = f"no {store.SUMMARY} (it holds {', '.join(sorted(names))})"
        found.append((folder, why))
    return found


def comparison_table(df: pd.DataFrame) -> pd.DataFrame:
    """The flat experiments table: a teacher row per pair, then every experiment, with
    mean and std of final top-1, mean train seconds and training FLOPs."""
    done = completed_runs(df)
    if done.empty:
        return pd.DataFrame()
    agg = experiments(done).drop(columns="config_id").rename(columns={
        "seconds_synthesis": "synthesis_seconds", "seconds_distillation": "distillation_seconds"})
    teachers = teachers_of(done).rename(columns={"top1": "top1_mean"})
    teachers["label"] = "teacher (" + teachers.pop("teacher") + ")"
    teachers["data_scale"] = 0
    teachers["seeds"] = 1
    teachers["top1_std"] = float("nan")
    for col in ("synthesis_seconds", "distillation_seconds"):
        if col not in agg:
            agg[col] = float("nan")
    out = pd.concat([teachers, agg], ignore_index=True)
    return out.sort_values(["dataset", "pair", "data_scale", "top1_mean"], ascending=[True, True, True, False],
                           ignore_index=True)[["dataset", "pair", "label", "data_scale", "seeds", "top1_mean",
                                               "top1_std", "best_top1_mean", "train_seconds", "synthesis_seconds",
                                               "distillation_seconds", "training_flops",
                                               *(["metric"] if "metric" in out else [])]]


def format_rows(table: pd.DataFrame) -> list[dict[str, str]]:
    """Human-readable cells: mean ± std, seconds, FLOPs in scientific notation. The
    score column is named by the metric the runs hold ("top-1 %", "mIoU %", or both
    names where the data sets differ in task)."""
    rows = []
    metrics = sorted(set(table["metric"].dropna())) if "metric" in table else []
    score = " / ".join(metrics or ["top-1"]) + " %"
    for r in table.itertuples(index=False):
        teacher = r.label.startswith("teacher")
        rows.append({
            "data set": r.dataset, "pair": r.pair, "method": r.label,
            "data scale": "-" if not r.data_scale else f"{int(r.data_scale):,}",
            "seeds": str(int(r.seeds)),
            score: f"{r.top1_mean:.2f}" if teacher or r.seeds < 2 else f"{r.top1_mean:.2f} ± {r.top1_std:.2f}",
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


@dataclass
class Report:
    table: pd.DataFrame  # the flat experiments table (comparison.csv)
    rows: list[dict[str, str]]  # its formatted rows, as the CLI prints them
    problems: list[tuple[str, str]]  # unreadable run directories, with the reason
    unfinished: pd.DataFrame  # runs that are running, failed or interrupted
    files: list[Path]
    notes: list[str] = field(default_factory=list)  # lines for the console (fitted slopes)


def select(df: pd.DataFrame, pairs=None, datasets=None, methods=None) -> pd.DataFrame:
    """Rows of the given pairs, data sets and methods (a method name, a label such as
    ``fast-fast2-cpu``, or a preset name); None keeps all."""
    keep = pd.Series(True, index=df.index)
    if pairs:
        keep &= df["pair"].isin(pairs)
    if datasets:
        keep &= df["dataset"].isin(datasets)
    if methods:
        keep &= of_methods(df, methods)
    return df[keep]


def of_methods(df: pd.DataFrame, methods) -> pd.Series:
    """Which rows are of ``methods``: each a method name, a label (``fast-fast2-cpu``,
    ``dda-cpu [RandAugment x1]``), a label without its variant (``dda-cpu``),
    ``method:preset`` or a preset name."""
    wanted = set(methods)

    def names(r) -> set:
        preset = r.get("preset") if isinstance(r.get("preset"), str) else None
        own = {f"{r['method']}-{preset}", f"{r['method']}:{preset}"} if preset else set()
        return {r["method"], r["label"], r["label"].split(" [")[0], preset, *own}

    return df.apply(lambda r: bool(names(r) & wanted), axis=1).astype(bool)


def environments(paths) -> list[dict]:
    found = []
    for path in paths:
        try:
            found.append(json.loads((Path(path) / store.ENVIRONMENT).read_text()))
        except (OSError, ValueError):
            continue
    return found


def matching(df: pd.DataFrame, names, flag: str, results: Path) -> set[str]:
    """The labels of the runs that ``names`` (method names, labels or presets) match; a
    name matching no run is a ``UserError`` naming ``flag``, raised before anything is
    written."""
    labels: set[str] = set()
    for name in names or ():
        hit = df[of_methods(df, [name])] if not df.empty else df
        if hit.empty:
            known = sorted(set(df["label"])) if not df.empty else []
            raise UserError(f"{flag} {name!r} matches no run in {results}; accepted: a method name, "
                            f"label or preset of a run there ({', '.join(known) or 'none'})")
        labels |= set(hit["label"])
    return labels


@dataclass
class Sections:
    """What ``write_report`` has written so far: files, index.md's parts, console notes."""

    out: Path
    files: list[Path] = field(default_factory=list)
    index: list[str] = field(default_factory=list)
    notes: list[str] = field(default_factory=list)

    def write(self, name: str, text: str) -> Path:
        path = self.out / name
        store.atomic_write_bytes(path, text.encode())
        self.files.append(path)
        return path

    def table(self, stem: str, t: tables.Table) -> None:
        self.write(f"{stem}.md", t.markdown())
        self.write(f"{stem}.csv", t.csv())
        self.write(f"{stem}.tex", t.latex())
        self.index.append(t.markdown() + f"\n([CSV]({stem}.csv), [LaTeX]({stem}.tex))\n")


def write_report(results: Path, out: Path, *, pairs=None, datasets=None, methods=None, baseline: str | None = None,
                 figures: bool = True, preamble: str | None = None, figure_exclude=None,
                 compare: list[tuple[str, str]] = (), margin: float = 2.0,
                 claims: Claims | None = None) -> Report:
    """Everything ``dfkd-bench report`` writes under ``out``, from the run store under
    ``results`` alone: the flat comparison (markdown, CSV), per data set the paper-style
    table, the cost table, (with ``baseline``) the speed-up table and (with ``compare``,
    pairs of names) the statistical comparisons as markdown, CSV and LaTeX, the figures
    (PNG and PDF), and ``index.md`` embedding them all (after ``preamble``, a markdown
    text, when one is given). Runs of ``figure_exclude`` (names, labels or presets, as
    ``methods``) stay in every table but out of the overview figures. Filters that keep
    none of the runs there, and a name of ``figure_exclude``, ``compare`` or
    ``baseline`` that matches no run, are errors raised before anything is written
    (``claims``, a study's rules, are decided in ``claims.md`` near the top of the index);
    without a completed run nothing is written (not even ``out``)."""
    df, problems = load_summaries(results)
    df = selected_runs(df, results, pairs, datasets, methods)
    leave_out = matching(df, figure_exclude, "--figure-exclude", results)
    matching(df, [name for pair in compare for name in pair], "--compare", results)
    table = comparison_table(df) if not df.empty else pd.DataFrame()
    if table.empty:
        return Report(table, [], problems, unfinished_runs(df), [])
    done, unfinished = completed_runs(df), unfinished_runs(df)
    check_baseline(done, baseline, results)
    decided = claims_table(done, claims, of_methods) if claims is not None else None  # its errors come first
    values = arm_values(done, claims, of_methods) if claims is not None else None
    out.mkdir(parents=True, exist_ok=True)
    sec = Sections(out)
    rows = comparison_files(sec, results, table, problems)
    sec.index.append(index_heading(results, preamble, len(df), len(done), len(problems)))
    if decided is not None:
        claims_section(sec, decided, arms_table(values, claims), values, list(claims.arms), figures)
    figure_infos = overview_figures(sec, done, leave_out) if figures else []
    for dataset, exp in experiments(done).groupby("dataset"):
        dataset_section(sec, done[done["dataset"] == dataset], exp, dataset, baseline, compare, margin)
        figures_section(sec, [f for f in figure_infos if f.dataset == dataset])
    unfinished_section(sec, unfinished)
    if problems:
        sec.index.append(unreadable_section(problems))
    sec.write("index.md", "\n".join(sec.index))
    return Report(table, rows, problems, unfinished, sec.files, sec.notes)


SEGMENTATION_NOTE = ("; mIoU, for a segmentation data set, is the final test mean intersection over union over "
                     "the classes, in %, held where classification keeps top-1 (`top1_mean` in the CSV)")


def _has_miou(table: pd.DataFrame) -> bool:
    return "metric" in table and bool((table["metric"] == "mIoU").any())


def comparison_files(sec: Sections, results: Path, table: pd.DataFrame, problems) -> list[dict[str, str]]:
    """``comparison.md`` and ``comparison.csv``, the flat table of every experiment;
    returns its formatted rows."""
    rows = format_rows(table)
    sec.write("comparison.md", "# Comparison\n\nGenerated by `dfkd-bench report` from "
              f"`{results}`; top-1 is the final test accuracy, mean ± std over seeds (seeds: the runs averaged; "
              "rows differ in every setting but the seed)" + SEGMENTATION_NOTE * _has_miou(table) + ".\n\n" + to_markdown(rows) + unreadable_section(problems))
    sec.write("comparison.csv", table.to_csv(index=False))
    return rows


def index_heading(results: Path, preamble: str | None, read: int, completed: int, skipped: int) -> str:
    """``index.md``'s opening (after ``preamble``): where the runs came from and how many
    were read, averaged and skipped."""
    heading = "# DFKD report" if preamble is None else preamble.rstrip() + "\n\n# The generated report"
    return (f"{heading}\n\nGenerated by `dfkd-bench report` from `{results}` "
            f"({read} runs read, {completed} completed and averaged; running, failed and interrupted "
            "runs are listed at the end, never averaged in" +
            (f"; {skipped} run folders skipped, listed at the end with why" if skipped else "") +
            "). Top-1 is the final test accuracy of each run; "
            "the best epoch's accuracy is kept in `comparison.csv` as `best_top1_mean`.\n")


def unreadable_section(problems: list[tuple[str, str]]) -> str:
    """The run folders that could not be read, each with why; empty when there are none."""
    if not problems:
        return ""
    return "\n## Run directories that could not be read\n\n" + "".join(
        f"- `{where}`: {why}\n" for where, why in problems)


def overview_figures(sec: Sections, done: pd.DataFrame, leave_out: set[str]) -> list:
    """Every figure of the completed runs under ``figures/`` (``leave_out``: labels kept out
    of the overview figures); returns their descriptions for the index."""
    from . import figures as figs  # matplotlib is imported only when figures are made

    infos = figs.write_figures(done, sec.out / "figures", leave_out)
    sec.files += [p for info in infos for p in (info.path_png, info.path_pdf)]
    return infos


def unfinished_runs(df: pd.DataFrame) -> pd.DataFrame:
    return df[df["status"] != "completed"] if not df.empty else pd.DataFrame()


def unfinished_section(sec: Sections, unfinished: pd.DataFrame) -> None:
    if unfinished.empty:
        return
    sec.index.append("## Runs not completed (not averaged in)\n\n"
                     "| run | status | epochs done | reason |\n|---|---|---:|---|")
    for r in unfinished.sort_values("name").itertuples(index=False):
        reason = str(r.reason or "").replace("|", "/").replace("\n", " ")[:200]
        sec.index.append(f"| `{r.name}` | {r.status} | {r.epochs_done}/{r.epochs} | {reason} |")
    sec.index.append("")


def selected_runs(df: pd.DataFrame, results: Path, pairs=None, datasets=None, methods=None) -> pd.DataFrame:
    """The runs the filters keep (``select``); filters that keep none of the runs there
    are a ``UserError`` naming what there is."""
    if df.empty or not (pairs or datasets or methods):
        return df
    kept = select(df, pairs, datasets, methods)
    if kept.empty:
        given = " ".join(f"{flag} {','.join(names)}" for flag, names in
                         (("--pair", pairs), ("--dataset", datasets), ("--methods", methods)) if names)
        there = "; ".join(f"{what} {', '.join(sorted(set(df[col].astype(str))))}" for what, col in
                          (("methods", "label"), ("pairs", "pair"), ("data sets", "dataset")))
        raise UserError(f"no run in {results} matches {given}; its {len(df)} runs are of {there}")
    return kept


def check_baseline(done: pd.DataFrame, baseline: str | None, results: Path) -> None:
    """A ``--baseline`` that names no completed run (its label, or its row in a table)
    is a ``UserError`` listing the labels there: no speed-up table in silence."""
    if baseline is None or done.empty:
        return
    exp = experiments(done)
    names = set(exp["label"]).union(*(tables.row_names(group) for _, group in exp.groupby("dataset")))
    if baseline not in names:
        raise UserError(f"--baseline {baseline!r} matches no completed run in {results}; accepted: a method label "
                        f"there ({', '.join(sorted(names))})")


def dataset_section(sec: Sections, runs: pd.DataFrame, exp: pd.DataFrame, dataset: str, baseline: str | None,
                    compare, margin: float) -> None:
    """One data set's tables: the paper layout, costs, a ranking per pair, and the
    speed-up and comparison tables where asked for."""
    env = tables.environment_note(environments(runs["path"]))
    made = {"table": tables.paper_table(exp, teachers_of(runs), dataset)}
    if tables.metric_of(exp) == "mIoU":  # a segmentation data set: the SSD-KD paper's Table 3 layout too
        made["table3"] = tables.table3(with_training_data(runs, exp), teachers_of(runs), dataset)
    made["costs"] = tables.cost_table(exp, dataset)
    pairs = sorted(exp["pair"].unique())
    for pair in pairs:
        kind = "ranking" if len(pairs) == 1 else f"ranking__{safe(pair)}"
        made[kind] = tables.ranking_table(exp[exp["pair"] == pair], dataset, preset_samples_per_epoch)
    sec.index.append(f"## {dataset}\n")
    if baseline:
        made["speedup"] = tables.speedup_table(exp, baseline, dataset, preset_samples_per_epoch)
        if made["speedup"] is None:
            sec.index.append(f"_No `{baseline}` runs on {dataset}: no speed-up table._\n")
    if compare:
        made["comparisons"] = tables.comparison_table(runs, list(compare), margin, dataset, of_methods)
        if made["comparisons"] is None:
            sec.index.append(f"_No pair of {dataset} has both sides of a --compare: no comparisons._\n")
        else:
            sec.notes += made["comparisons"].notes[1:]
    for kind, t in made.items():
        if t is not None:
            t.notes.append(env)
            sec.table(f"{kind}__{safe(dataset)}", t)


def training_data(row) -> tuple[str | None, int | None]:
    """What one run trained on, from its records (``tables.TRAINING_DATA``'s kinds): real
    images (the last epoch record's ``real_samples``), a pool's or buffer's final
    ``pool_size``, or for an online method distillation epochs x steps x batch size (its
    summary and config); (None, None) where the records do not say."""
    from .method import ONLINE
    from .registry import METHODS

    path = Path(row["path"])
    records = store.RunDir(path.parent, path.name).read_metrics()
    for key, kind in (("real_samples", "real"), ("pool_size", "buffer" if row["data_scale"] else "pool")):
        found = next((r[key] for r in reversed(records) if isinstance(r.get(key), (int, float))), None)
        if found is not None:
            return kind, int(found)
    settings = row["settings"]
    if row["method"] in METHODS and METHODS.get(row["method"]).mode == ONLINE and "run.batch_size" in settings:
        epochs = settings.get("run.epochs", row["epochs"]) - settings.get("run.warmup_epochs", 0)
        return "online", int(epochs * row["steps_per_epoch"] * settings["run.batch_size"])
    return None, None


def with_training_data(runs: pd.DataFrame, exp: pd.DataFrame) -> pd.DataFrame:
    """``exp`` with each experiment's ``data_kind`` and ``data_samples`` (its seeds' largest)."""
    found = pd.DataFrame([training_data(r) for _, r in runs.iterrows()], columns=["data_kind", "data_samples"],
                         index=runs.index)
    per_run = pd.concat([runs[GROUP_KEYS], found], axis=1)
    agg = per_run.groupby(GROUP_KEYS, dropna=False).agg(data_kind=("data_kind", "first"),
                                                        data_samples=("data_samples", "max")).reset_index()
    return exp.merge(agg, on=GROUP_KEYS, how="left")


def claims_section(sec: Sections, decided: tables.Table, arms: tables.Table, values: pd.DataFrame,
                   order: list[str], figures: bool) -> None:
    """The claims table and the arms table, and (with figures) the claims' forest plot and
    the arms' seeds side by side under ``figures/``."""
    sec.table("claims", decided)
    sec.table("arms", arms)
    if figures:
        from . import figures as figs

        infos = [i for i in (figs.claims_figure(decided.raw, sec.out / "figures"),
                             figs.arms_figure(values, order, sec.out / "figures")) if i is not None]
        for info in infos:
            sec.files += [info.path_png, info.path_pdf]
        figures_section(sec, infos)


def figures_section(sec: Sections, shown: list) -> None:
    if not shown:
        return
    sec.index.append("### Figures\n")
    for info in shown:
        rel = info.path_png.relative_to(sec.out)
        sec.index.append(f"**{info.title}.** {info.caption} ([PDF]({info.path_pdf.relative_to(sec.out)}))\n\n"
                         f"![{info.title}]({rel})\n")
        sec.notes += info.notes


