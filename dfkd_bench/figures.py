"""The report's figures, from the run store alone (summaries, ``metrics.jsonl``,
``diagnostics.npz``): accuracy against train time and against training FLOPs with the
Pareto front, learning curves, data-scale curves with a linear fit of train time, and
the teacher's view of a pool method's synthetic data (the SSD-KD paper's Fig. 1, 2, 4).

Every figure is written as PNG (for reading) and PDF (for a paper), sized for a paper's
column (3.4 in) or its full width (7 in) with fonts readable at that size. Colours are
the Okabe-Ito palette (safe for the common colour-vision deficiencies) and each method
label keeps one colour and marker in every figure of a report: the map is built once
from the sorted labels of the whole results tree, not per figure. Only completed runs
are drawn; running, failed and interrupted runs are never averaged in.

Figures are built on ``matplotlib.figure.Figure`` without pyplot: no global figure
state, no GUI backend, safe in a process that makes many reports.
"""
from __future__ import annotations

import functools
import io
import math
import re
import textwrap
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable, Iterable, NamedTuple

import matplotlib as mpl
import numpy as np
import pandas as pd
from matplotlib.axes import Axes
from matplotlib.figure import Figure
from matplotlib.lines import Line2D
from matplotlib.ticker import FixedLocator, FuncFormatter, MaxNLocator, NullFormatter, NullLocator

from . import diagnostics, stats, store
from .claims import METRIC_NAMES, METRICS, headline
from .runs import GROUP, completed_runs, epoch_records, experiments, preset_samples_per_epoch, safe
from .tables import metric_of, stand_ins
from .timing import TRAIN_PHASES

TRAIN_TIME = " + ".join(TRAIN_PHASES)  # what summary.train_seconds adds up, as axes say it
COLUMN_IN = 3.4  # one column of a two-column paper
WIDE_IN = 7.0  # the full text width
DPI = 200
TITLE_CHARS = 120  # characters a line of a 7.5 pt suptitle holds across WIDE_IN (150 ran past both edges)
# Okabe & Ito (2008), without black (the teacher's); yellow last, being the
# weakest on white.
PALETTE = ("#0072B2", "#E69F00", "#009E73", "#D55E00", "#CC79A7", "#56B4E9", "#F0E442")
# Eight markers against seven colours: the pair (colour, marker) only repeats after 56
# labels, so two methods never look alike even when colours wrap around.
MARKERS = ("o", "s", "^", "D", "v", "P", "X", "h")
# Real-data baselines are references, not contenders: greys, so the eye goes to the
# data-free methods first.
REAL_DATA_METHODS = ("kd", "scratch")
NEUTRALS = ("#4D4D4D", "#8C8C8C", "#B0B0B0")
NEUTRAL_MARKERS = ("x", "d", "+")
RC = {
    "font.size": 7.5, "axes.titlesize": 7.5, "axes.labelsize": 7.5, "xtick.labelsize": 6.5,
    "ytick.labelsize": 6.5, "legend.fontsize": 6.5, "legend.title_fontsize": 6.5, "lines.linewidth": 1.2,
    "lines.markersize": 4.5, "errorbar.capsize": 1.5, "axes.spines.top": False, "axes.spines.right": False,
    "axes.grid": True, "grid.alpha": 0.3, "grid.linewidth": 0.5, "axes.linewidth": 0.6,
    "pdf.fonttype": 42, "ps.fonttype": 42,  # TrueType in the PDF: editable text, accepted by publishers
}


class Style(NamedTuple):
    color: str
    marker: str


TEACHER_COLOR = "#000000"


class Fit(NamedTuple):
    """A least-squares line ``y = slope * x + intercept`` and its coefficient of
    determination."""
    slope: float
    intercept: float
    r2: float


@dataclass
class FigureInfo:
    """One written figure and what ``index.md`` and the console say about it."""
    path_png: Path
    path_pdf: Path
    title: str
    caption: str  # one line: what the figure shows
    dataset: str
    pair: str
    size_in: tuple[float, float]  # the PNG is size_in * DPI pixels (no tight bounding box)
    fits: dict[str, Fit] = field(default_factory=dict)  # data-scale time figure: label -> seconds per sample
    notes: list[str] = field(default_factory=list)  # console lines (the fitted slopes)


def is_real_data(label: str) -> bool:
    """Whether a label (``method[-preset][ (settings)]``) is a real-data baseline."""
    return label.split(" ", 1)[0].split("-", 1)[0] in REAL_DATA_METHODS


def method_styles(labels: Iterable[str]) -> dict[str, Style]:
    """A colour and marker per label, deterministic in the set of labels: data-free
    methods take the palette in sorted order, real-data baselines take greys."""
    unique = sorted(set(labels))
    styles = {}
    for i, label in enumerate(x for x in unique if not is_real_data(x)):
        styles[label] = Style(PALETTE[i % len(PALETTE)], MARKERS[i % len(MARKERS)])
    for i, label in enumerate(x for x in unique if is_real_data(x)):
        styles[label] = Style(NEUTRALS[i % len(NEUTRALS)], NEUTRAL_MARKERS[i % len(NEUTRAL_MARKERS)])
    return styles


def pareto_front(points: list[tuple[str, float, float]]) -> list[str]:
    """The labels of the points ``(label, cost, accuracy)`` that no other point beats:
    none has cost <= and accuracy >= with one of them strict. Ordered by cost."""
    front = [(x, -y, label) for label, x, y in points
             if not any(ox <= x and oy >= y and (ox < x or oy > y) for _, ox, oy in points)]
    return [label for _, _, label in sorted(front)]


def fit_line(xs, ys) -> Fit:
    """Least squares ``y = a x + b`` over all points (every seed counts), with r2
    (1.0 when ``y`` does not vary and the line goes through every point)."""
    x, y = np.asarray(xs, dtype=float), np.asarray(ys, dtype=float)
    if len(np.unique(x)) < 2:
        raise ValueError("a line needs at least two distinct x values")
    slope, intercept = np.polyfit(x, y, 1)
    residual = float(((y - (slope * x + intercept)) ** 2).sum())
    total = float(((y - y.mean()) ** 2).sum())
    return Fit(float(slope), float(intercept), 1.0 - residual / total if total > 0 else 1.0)


def learning_curve(run_dir: Path) -> pd.DataFrame:
    """A run's evaluated epochs from ``metrics.jsonl``: ``epoch``, ``seconds`` (train time
    so far: synthesis + augmentation + distillation, what the tables' train time adds up,
    so a curve ends where its run's row says) and ``top1``. After a resume an epoch can be
    logged twice; the last record is the one the run went on from. Unreadable lines are
    skipped."""
    last = epoch_records(run_dir)
    rows = [{"epoch": e, "seconds": sum(r.get(f"seconds_{p}", 0.0) for p in TRAIN_PHASES), "top1": r["top1"]}
            for e, r in sorted(last.items()) if r.get("top1") is not None]
    return pd.DataFrame(rows, columns=["epoch", "seconds", "top1"])


# --- shared drawing ------------------------------------------------------------------------

def _draw(make: Callable[[pd.DataFrame, Path, dict[str, Style]], list[FigureInfo]], df: pd.DataFrame,
          out_dir: Path, styles: dict[str, Style] | None) -> list[FigureInfo]:
    """Call a figure maker on the completed runs of ``df`` under the report's fonts and
    lines (``rc_context`` gives the caller's settings back afterwards). Nothing
    completed, no figure; without ``styles`` the map is built from these runs' labels."""
    done = completed_runs(df) if not df.empty else df
    if done.empty:
        return []
    with mpl.rc_context(RC):
        return make(done, Path(out_dir), styles if styles is not None else method_styles(done["label"]))


def _figure(width: float, height: float) -> Figure:
    return Figure(figsize=(width, height), dpi=DPI, layout="constrained")


def _save(fig: Figure, out_dir: Path, stem: str) -> tuple[Path, Path]:
    """PNG and PDF, each written atomically (a report re-made over an old one never
    leaves a torn file); the PDF without a creation date, so it changes only when the
    figure does."""
    out_dir.mkdir(parents=True, exist_ok=True)
    width, height = fig.get_size_inches()  # whole pixels, so the PNG is exactly size_in * DPI
    fig.set_size_inches(round(width * DPI) / DPI, round(height * DPI) / DPI)
    paths = []
    for fmt, metadata in (("png", {}), ("pdf", {"CreationDate": None})):
        buffer = io.BytesIO()
        fig.savefig(buffer, format=fmt, dpi=DPI, metadata=metadata)
        path = out_dir / f"{stem}.{fmt}"
        store.atomic_write_bytes(path, buffer.getvalue())
        paths.append(path)
    return paths[0], paths[1]


def _size(fig: Figure) -> tuple[float, float]:
    width, height = fig.get_size_inches()
    return float(width), float(height)


def _pair_title(runs: pd.DataFrame) -> str:
    first = runs.iloc[0]
    return f"{first['dataset']}: {first['teacher']} → {first['student']}"


def _short(value: float) -> str:
    """A tick label without exponent notation: 30, 250, 1.5k, 12M."""
    for scale, suffix in ((1e12, "T"), (1e9, "G"), (1e6, "M"), (1e3, "k")):
        if abs(value) >= scale:
            return f"{value / scale:.3g}{suffix}"
    return f"{value:.3g}"


def _scale_text(data_scale: float, real: bool) -> str:
    """A point's data scale as written beside it: 1.25k; a run at scale 0 is on all the real
    images (a real-data baseline) or at its preset's own scale (a data-free method)."""
    if data_scale:
        return _short(data_scale)
    return "all" if real else "preset"


def _log_x(ax: Axes) -> None:
    """Log x with ticks at powers of ten when the data span three or more, else at the
    first of 1-2-5, 1-2-3-5 and 1-1.5-2-3-4-5-6-8 steps that gives four (two for the
    last), else at two values in between the limits, labelled without exponents. Call
    it after plotting: the ticks come from the axis's data limits. Matplotlib's own log
    ticks leave an axis spanning less than a decade with one label, or label every
    minor tick until they collide."""
    ax.set_xscale("log")
    lo, hi = ax.get_xlim()
    decades = range(math.floor(math.log10(lo)), math.ceil(math.log10(hi)) + 1)
    for mantissas, enough in (((1,), 3), ((1, 2, 5), 4), ((1, 2, 3, 5), 4), ((1, 1.5, 2, 3, 4, 5, 6, 8), 2)):
        ticks = [m * 10.0 ** k for k in decades for m in mantissas if lo <= m * 10.0 ** k <= hi]
        if len(ticks) >= enough:
            break
    else:  # a span too narrow for round numbers (two methods within a few percent)
        ticks = [float(f"{v:.3g}") for v in np.geomspace(lo, hi, 4)[1:3]]
    ax.xaxis.set_major_locator(FixedLocator(ticks[::math.ceil(len(ticks) / 8)]))
    ax.xaxis.set_major_formatter(FuncFormatter(lambda v, _: _short(v)))
    ax.xaxis.set_minor_formatter(NullFormatter())


def _marker(style: Style) -> Line2D:
    """A legend entry showing the marker alone: an error-bar handle draws a cross that
    hides the marker's shape, which is what tells methods apart in grey print."""
    return Line2D([], [], color=style.color, marker=style.marker, linestyle="none")


def _name(label: str) -> str:
    """A label as a legend shows it: real-data baselines say so, and a setting's value
    longer than a legend can hold (a hash, a list of means) is cut to its start, which
    still tells experiments apart."""
    base, _, settings = label.partition(" (")
    if settings.endswith(")"):
        parts = [k + "=" + (v if len(v) <= 12 else v[:8] + "…")
                 for k, _, v in (part.partition("=") for part in re.split(r", (?=[\w.]+=)", settings[:-1]))]
        label = f"{base} ({', '.join(parts)})"
    return f"{label} (real data)" if is_real_data(label) else label


def _legend_below(fig: Figure, handles: list, names: list[str]) -> None:
    """The legend under the axes, never over the data, its entries wrapped to the
    figure's width; the figure grows by the legend's height so the axes keep theirs
    (the PNG's size is then ``FigureInfo.size_in``)."""
    width, height = fig.get_size_inches()
    names = [textwrap.fill(n, 26 if width < 5 else 34, break_on_hyphens=False, break_long_words=False)
             for n in names]
    longest = max(len(line) for n in names for line in n.split("\n"))
    # an entry is handle + padding (about 0.4 in) + text (about 0.045 in a character at 6.5 pt)
    ncol = max(1, min(len(names), int((width - 0.1) // (0.4 + 0.045 * longest))))
    rows = math.ceil(len(names) / ncol)  # the legend fills its columns one after the other
    lines = max(sum(n.count("\n") + 1 for n in names[c * rows:(c + 1) * rows]) for c in range(ncol))
    fig.set_size_inches(width, height + 0.11 * lines + 0.05 * rows + 0.1)
    fig.legend(handles, names, loc="outside lower center", ncol=ncol, frameon=False, handlelength=1.8,
               columnspacing=1.2)


def _std(values: pd.Series) -> float:
    return float(values.std()) if len(values) > 1 else 0.0


# --- accuracy against cost -------------------------------------------------------------------

def _experiment_points(done: pd.DataFrame, x_col: str) -> pd.DataFrame:
    """One row per experiment with the mean and std over its seeds of ``x_col`` and of
    the final top-1; experiments without a positive cost are left out (log axis)."""
    rows = []
    for key, group in done.groupby(GROUP, dropna=False):
        x = pd.to_numeric(group[x_col], errors="coerce").dropna()
        y = pd.to_numeric(group["final_top1"], errors="coerce").dropna()
        if x.empty or y.empty or x.mean() <= 0:
            continue
        rows.append({**dict(zip(GROUP, key)), "x": x.mean(), "x_std": _std(x), "y": y.mean(), "y_std": _std(y),
                     "seeds": len(group)})
    return pd.DataFrame(rows)


def _point_name(label: str, scale: int) -> str:
    return f"{label} @ {int(scale)}" if scale else label


def _accuracy_vs_cost(done: pd.DataFrame, out_dir: Path, styles: dict[str, Style], *, x_col: str, kind: str,
                      x_label: str, what: str) -> list[FigureInfo]:
    infos = []
    for (dataset, pair), runs in done.groupby(["dataset", "pair"]):
        points = _experiment_points(runs, x_col)
        if points.empty:
            continue
        labels = sorted(set(points["label"]), key=lambda lab: (is_real_data(lab), lab))
        fig = _figure(COLUMN_IN, 2.4)
        ax = fig.add_subplot()
        handles, names = [], []
        for label in labels:
            mine = points[points["label"] == label].sort_values("data_scale")
            style = styles[label]
            ax.errorbar(mine["x"], mine["y"], xerr=mine["x_std"], yerr=mine["y_std"], fmt=style.marker,
                        color=style.color, elinewidth=0.7, zorder=3)
            handles.append(_marker(style))
            several = mine["data_scale"].nunique() > 1
            names.append(_name(label) + (f" @ {_short(mine['data_scale'].iloc[0])}"
                                         if not several and mine["data_scale"].iloc[0] else ""))
            for r in mine.itertuples():
                if several:
                    ax.annotate(_scale_text(r.data_scale, is_real_data(label)), (r.x, r.y), xytext=(3, -7),
                                textcoords="offset points", fontsize=5, color=style.color)
        # The front is over the data-free methods: a baseline that sees the real data is
        # the reference they are read against, not a contender.
        named = [(_point_name(r.label, r.data_scale), r.x, r.y) for r in points.itertuples()
                 if not is_real_data(r.label)]
        front = pareto_front(named)
        said = [f"one point per experiment: mean over its seeds ({'/'.join(map(str, sorted(set(points['seeds']))))}),"
                " error bars one std"]
        if len(front) > 1:  # a front of one point is that point: nothing to draw
            said.append(f"dotted: the Pareto front of the data-free methods ({', '.join(front)})")
            where = {name: (x, y) for name, x, y in named}
            fx, fy = zip(*(where[name] for name in front))
            (h,) = ax.step(fx, fy, where="post", color="#777777", linewidth=0.8, linestyle=":", zorder=2)
            handles.append(h)
            names.append("Pareto front (data-free)")
        teacher_top1 = pd.to_numeric(runs["teacher_top1"], errors="coerce").dropna()
        if not teacher_top1.empty:
            h = ax.axhline(teacher_top1.iloc[0], color=TEACHER_COLOR, linestyle="--", linewidth=0.8, zorder=1)
            handles.append(h)
            names.append(f"teacher {runs['teacher'].iloc[0]} ({teacher_top1.iloc[0]:.1f})")
            said.append("dashed: the teacher")
        if (points.groupby("label")["data_scale"].nunique() > 1).any():
            said.append("small numbers: data scale")
        _log_x(ax)
        ax.set_xlabel(x_label)
        ax.set_ylabel(f"student {metric_of(runs)} (%)")
        ax.set_title(_pair_title(runs))
        _legend_below(fig, handles, names)
        png, pdf = _save(fig, out_dir, f"{kind}__{safe(dataset)}__{safe(pair)}")
        infos.append(FigureInfo(png, pdf, f"Accuracy vs {what}, {dataset} {pair}",
                                f"Final student {metric_of(runs)} against {what} (log scale), " + "; ".join(said) + ".",
                                dataset, pair, _size(fig)))
    return infos


def accuracy_vs_time(df: pd.DataFrame, out_dir: Path, styles: dict[str, Style] | None = None) -> list[FigureInfo]:
    """Top-1 against train time (the suite's clock: synthesis and distillation) per
    (data set, pair): what a method buys for the hours it costs, on this machine."""
    return _draw(functools.partial(_accuracy_vs_cost, x_col="train_seconds", kind="acc_vs_time",
                                   x_label=f"train time (s, {TRAIN_TIME})", what="train time"),
                 df, out_dir, styles)


def accuracy_vs_flops(df: pd.DataFrame, out_dir: Path, styles: dict[str, Style] | None = None) -> list[FigureInfo]:
    """Top-1 against training FLOPs: the same comparison, independent of the machine."""
    return _draw(functools.partial(_accuracy_vs_cost, x_col="training_flops", kind="acc_vs_flops",
                                   x_label="training FLOPs", what="training FLOPs"), df, out_dir, styles)


# --- learning curves -------------------------------------------------------------------------

def epoch_points(curves: list[pd.DataFrame]) -> pd.DataFrame:
    """Seeds' learning curves matched by evaluated epoch: ``epoch``, mean ``seconds`` and
    top-1 ``mean``, ``min`` and ``max`` over the seeds that evaluated it. One point per
    evaluated epoch, so the last point's seconds are the seeds' mean train time, as in the
    tables (interpolating onto a shared time grid instead ended every curve at the fastest
    seed's time and drew markers where no epoch was evaluated)."""
    return pd.concat(curves).groupby("epoch").agg(seconds=("seconds", "mean"), mean=("top1", "mean"),
                                                  min=("top1", "min"), max=("top1", "max")).reset_index()


def _learning_curves(done: pd.DataFrame, out_dir: Path, styles: dict[str, Style]) -> list[FigureInfo]:
    infos = []
    for (dataset, pair, scale), runs in done.groupby(["dataset", "pair", "data_scale"]):
        per_label: dict[str, list[pd.DataFrame]] = {}
        for r in runs.sort_values("seed").itertuples():
            curve = learning_curve(Path(r.path))
            if not curve.empty:
                per_label.setdefault(r.label, []).append(curve)
        if not per_label:
            continue
        labels = sorted(per_label, key=lambda lab: (is_real_data(lab), lab))
        fig = _figure(WIDE_IN, 2.4)
        by_time, by_epoch = fig.subplots(1, 2)
        handles, names = [], []
        for label in labels:
            style, curves = styles[label], per_label[label]
            points = epoch_points(curves)
            for ax, x in ((by_time, points["seconds"]), (by_epoch, points["epoch"] + 1)):
                (h,) = ax.plot(x, points["mean"], color=style.color, marker=style.marker, markersize=3.5)
                if len(curves) > 1:
                    ax.fill_between(x, points["min"], points["max"], color=style.color, alpha=0.2, linewidth=0)
            handles.append(h)
            names.append(_name(label))
        _log_x(by_time)
        by_epoch.xaxis.set_major_locator(MaxNLocator(integer=True))
        by_time.set_xlabel(f"train seconds ({TRAIN_TIME})")
        by_epoch.set_xlabel("epoch")
        for ax in (by_time, by_epoch):
            ax.set_ylabel(f"student test {metric_of(runs)} (%)")
        scale_text = f", data scale {int(scale)}" if scale else ""
        fig.suptitle(_pair_title(runs) + scale_text, fontsize=7.5)
        _legend_below(fig, handles, names)
        stem = f"learning_curves__{safe(dataset)}__{safe(pair)}" + (f"__n{int(scale)}" if scale else "")
        png, pdf = _save(fig, out_dir, stem)
        seeds = sorted({len(c) for c in per_label.values()})
        infos.append(FigureInfo(
            png, pdf, f"Learning curves, {dataset} {pair}{scale_text}",
            f"Student test {metric_of(runs)} at each evaluated epoch (one marker each) against cumulative train time "
            f"({TRAIN_TIME}, the tables' train time; log scale) and against epoch: mean over seeds "
            f"({'/'.join(map(str, seeds))} per method), shaded from the worst to the best seed; a curve "
            "ends at its method's mean train time.",
            dataset, pair, _size(fig)))
    return infos


def learning_curves(df: pd.DataFrame, out_dir: Path, styles: dict[str, Style] | None = None) -> list[FigureInfo]:
    """Test top-1 against wall-clock seconds (log) and against epoch, per method: mean
    over seeds with the min-max band. One figure per (data set, pair, data scale), so a
    data-scale grid compares methods at equal data, not a tangle of every scale."""
    return _draw(_learning_curves, df, out_dir, styles)


# --- data scale ------------------------------------------------------------------------------

def _scaled(runs: pd.DataFrame) -> dict[str, pd.DataFrame]:
    """Per label, its completed runs with a data scale, for labels run at two scales or more."""
    scaled = runs[runs["data_scale"] > 0]
    return {label: group for label, group in scaled.groupby("label") if group["data_scale"].nunique() >= 2}


def _scale_ticks(ax: Axes, scales: Iterable[int]) -> None:
    """Log x ticked at exactly the scales run when they are few: the reader wants to read
    500, 2500 and 5000 off the axis, not 10^3."""
    scales = sorted(set(scales))
    if len(scales) > 8:
        _log_x(ax)
        return
    ax.set_xscale("log")
    ax.set_xticks(scales, [_short(s) for s in scales])
    ax.xaxis.set_minor_locator(NullLocator())  # an unlabelled tick between two scales reads as a missing one


def _data_scale_curves(done: pd.DataFrame, out_dir: Path, styles: dict[str, Style]) -> list[FigureInfo]:
    infos = []
    for (dataset, pair), runs in done.groupby(["dataset", "pair"]):
        scaled = _scaled(runs)
        if not scaled:
            continue
        labels = sorted(scaled, key=lambda lab: (is_real_data(lab), lab))
        all_scales = [s for g in scaled.values() for s in g["data_scale"]]
        stem = f"{safe(dataset)}__{safe(pair)}"
        title = _pair_title(runs)

        fig = _figure(COLUMN_IN, 2.4)
        ax = fig.add_subplot()
        for label in labels:
            stats = scaled[label].groupby("data_scale")["final_top1"].agg(["mean", "std"]).reset_index()
            style = styles[label]
            ax.errorbar(stats["data_scale"], stats["mean"], yerr=stats["std"].fillna(0), color=style.color,
                        marker=style.marker, elinewidth=0.7)
        _scale_ticks(ax, all_scales)
        ax.set_xlabel("data scale (samples)")
        ax.set_ylabel(f"student {metric_of(runs)} (%)")
        ax.set_title(title)
        _legend_below(fig, [Line2D([], [], color=styles[lab].color, marker=styles[lab].marker) for lab in labels],
                      [_name(lab) for lab in labels])
        png, pdf = _save(fig, out_dir, f"data_scale_top1__{stem}")
        infos.append(FigureInfo(
            png, pdf, f"{'Top-1' if metric_of(runs) == 'top-1' else metric_of(runs)} vs data scale, {dataset} {pair}",
            f"Final student {metric_of(runs)} against the data scale (samples synthesised, or real samples for the grey "
            "real-data baselines; log scale): mean over seeds, error bars one std.",
            dataset, pair, _size(fig)))

        fig = _figure(COLUMN_IN, 2.4)
        ax = fig.add_subplot()
        fits, notes = {}, []
        for label in labels:
            group, style = scaled[label], styles[label]
            fit = fit_line(group["data_scale"], group["train_seconds"])
            fits[label] = fit
            notes.append(f"{dataset} {pair}: {label} train time grows {fit.slope:.4g} s per sample "
                         f"(intercept {fit.intercept:.4g} s, r2 {fit.r2:.3f}, {len(group)} runs)")
            stats = group.groupby("data_scale")["train_seconds"].agg(["mean", "std"]).reset_index()
            ax.errorbar(stats["data_scale"], stats["mean"], yerr=stats["std"].fillna(0), fmt=style.marker,
                        color=style.color, elinewidth=0.7)
            xs = np.array([0, stats["data_scale"].max()])
            ax.plot(xs, fit.slope * xs + fit.intercept, color=style.color, linewidth=0.8, linestyle="--")
        ax.set_xlim(left=0)
        ax.set_ylim(bottom=0)
        ax.xaxis.set_major_formatter(FuncFormatter(lambda v, _: _short(v)))
        ax.set_xlabel("data scale (samples)")
        ax.set_ylabel("train time (s)")
        ax.set_title(title)
        _legend_below(fig, [Line2D([], [], color=styles[lab].color, marker=styles[lab].marker, linestyle="--")
                            for lab in labels],
                      [f"{_name(lab)}: {fits[lab].slope:.3g} s/sample" for lab in labels])
        png, pdf = _save(fig, out_dir, f"data_scale_time__{stem}")
        infos.append(FigureInfo(
            png, pdf, f"Train time vs data scale, {dataset} {pair}",
            f"Train time ({TRAIN_TIME}) against the data scale: mean over seeds, error bars one "
            "std; dashed: the least-squares line over every run, its slope (seconds per sample) in the legend.",
            dataset, pair, _size(fig), fits, notes))
    return infos


def data_scale_curves(df: pd.DataFrame, out_dir: Path, styles: dict[str, Style] | None = None) -> list[FigureInfo]:
    """Per (data set, pair) with a data-scale grid: top-1 against data scale (log x;
    the real-subset KD line is "original samples at the same data scale"), and train
    time against data scale with a least-squares line per method, whose slope (seconds
    per sample) says what each more sample costs."""
    return _draw(_data_scale_curves, df, out_dir, styles)


# --- synthetic-data diagnostics --------------------------------------------------------------

def _class_name(names: np.ndarray, c: int) -> str:
    return str(names[c]) if c < len(names) else str(c)


def class_shares(arrays: dict[str, np.ndarray], num_classes: int) -> np.ndarray:
    """The share of a pool in each teacher class: of its images (classification), or of
    its pixels (segmentation: the mean of the images' class histograms)."""
    if "class_histograms" in arrays:
        return arrays["class_histograms"].astype(np.float64).mean(0)[:num_classes]
    return np.bincount(arrays["classes"], minlength=num_classes) / max(1, len(arrays["classes"]))


def _histograms(arrays: dict[str, np.ndarray], title: str, style: Style) -> Figure:
    classes, confidence, names = arrays["classes"], arrays["confidence"], arrays["class_names"]
    num_classes = max(len(names), int(classes.max()) + 1 if len(classes) else 0)
    dense = "class_histograms" in arrays
    fig = _figure(WIDE_IN, 2.5)
    by_class, by_conf = fig.subplots(1, 2, width_ratios=(3, 2))
    counts = class_shares(arrays, num_classes) * (1 if dense else len(classes))
    by_class.bar(np.arange(num_classes), counts, color=style.color, width=0.8)
    by_class.axhline((1 if dense else len(classes)) / num_classes, color="#555555", linestyle="--", linewidth=0.8,
                     label="balanced")
    by_class.legend(loc="best", frameon=False)
    if num_classes <= 20:
        by_class.set_xticks(np.arange(num_classes), [_class_name(names, c) for c in range(num_classes)],
                            rotation=45 if len(names) else 0, ha="right" if len(names) else "center",
                            rotation_mode="anchor")
    by_class.set_xlabel("teacher's predicted class" + (" of each pixel" if dense else ""))
    by_class.set_ylabel("share of the pool's pixels" if dense else "images")
    by_class.grid(axis="x", visible=False)
    by_conf.hist(confidence, bins=np.linspace(0, 1, 21), color=style.color)
    by_conf.axvline(float(confidence.mean()), color="#555555", linestyle="--", linewidth=0.8,
                    label=f"mean {confidence.mean():.2f}")
    by_conf.legend(loc="best", frameon=False)
    by_conf.set_xlim(0, 1)
    by_conf.set_xlabel("teacher's " + ("mean pixel confidence per image" if dense
                                       else "confidence (top softmax probability)"))
    by_conf.set_ylabel("images")
    fig.suptitle(textwrap.fill(title, TITLE_CHARS), fontsize=7.5)
    return fig


def _sample_grid(arrays: dict[str, np.ndarray], title: str) -> Figure:
    """The sample images as one montage (16 a row, or 8 for 32 images or fewer) in a
    single axes, each titled with the teacher's class: one image to draw instead of 64
    axes, which keeps the report fast and the PDF small."""
    images, classes, names = arrays["sample_images"], arrays["sample_classes"], arrays["class_names"]
    n, channels, h, w = images.shape
    ncols = 16 if n > 32 else 8
    rows = math.ceil(n / ncols)
    gap = max(1, w // 12)
    inch_per_px = WIDE_IN / (ncols * (w + gap))
    label = math.ceil(0.12 / inch_per_px)  # room for a 5 pt class name above each image
    montage = np.full((rows * (label + h), ncols * (w + gap), 3), 255, dtype=np.uint8)
    title = textwrap.fill(title, TITLE_CHARS)
    title_in = 0.12 * (title.count("\n") + 1) + 0.08
    fig = Figure(figsize=(WIDE_IN, montage.shape[0] * inch_per_px + title_in), dpi=DPI)
    ax = fig.add_axes((0, 0, 1, 1 - title_in / fig.get_figheight()))
    for i, (image, c) in enumerate(zip(images, classes)):
        top, left = (i // ncols) * (label + h) + label, (i % ncols) * (w + gap) + gap // 2
        montage[top:top + h, left:left + w] = image.transpose(1, 2, 0) if channels == 3 else image[0, ..., None]
        text = _class_name(names, int(c))
        ax.text(left + w / 2, top - 1, text if len(text) <= 12 else text[:11] + "…", fontsize=5, ha="center",
                va="bottom")
    ax.imshow(montage, interpolation="nearest")
    ax.set_axis_off()
    fig.suptitle(title, fontsize=7.5, y=1 - 0.05 / fig.get_figheight(), va="top")
    return fig


def _synthetic_data_figures(done: pd.DataFrame, out_dir: Path, styles: dict[str, Style]) -> list[FigureInfo]:
    infos = []
    for key, group in done.groupby(GROUP, dropna=False):
        seeds = sorted(group["seed"])
        found = ((r, diagnostics.read(Path(r.path))) for r in group.sort_values("seed").itertuples())
        run, arrays = next(((r, a) for r, a in found if a is not None), (None, None))
        if arrays is None or not len(arrays["classes"]):
            continue
        dataset, pair, label, scale = key[:4]
        seed_text = f"seed {run.seed}" + (f", the first of seeds {', '.join(map(str, seeds))}" if len(seeds) > 1
                                          else "")
        scale_text = f", data scale {int(scale)}" if scale else ""
        where = f"{_name(label)}, {dataset}: {run.teacher} → {run.student}{scale_text}"
        stem = f"{safe(dataset)}__{safe(pair)}__{safe(label)}" + (f"__n{int(scale)}" if scale else "")
        fig = _histograms(arrays, f"{where}: teacher's view of the final pool ({len(arrays['classes'])} images, "
                                  f"{seed_text})", styles[label])
        png, pdf = _save(fig, out_dir, f"diagnostics__{stem}")
        infos.append(FigureInfo(
            png, pdf, f"Synthetic data of {label}, {dataset} {pair}{scale_text}",
            f"The teacher's predicted class (left; dashed: a balanced pool) and its confidence (right) over the "
            f"final pool of {len(arrays['classes'])} images ({seed_text}).", dataset, pair,
            _size(fig)))
        if len(arrays["sample_images"]):
            fig = _sample_grid(arrays, f"{where}: {len(arrays['sample_images'])} images of the final pool "
                                       f"with the teacher's class ({seed_text})")
            png, pdf = _save(fig, out_dir, f"samples__{stem}")
            infos.append(FigureInfo(
                png, pdf, f"Sample images of {label}, {dataset} {pair}{scale_text}",
                f"A fixed, evenly spaced sample of the final pool, each image titled with the teacher's class "
                f"({seed_text}).", dataset, pair, _size(fig)))
    return infos


def synthetic_data_figures(df: pd.DataFrame, out_dir: Path,
                           styles: dict[str, Style] | None = None) -> list[FigureInfo]:
    """For each experiment whose runs left ``diagnostics.npz`` (pool methods): the
    histograms of the teacher's predicted class and confidence over the final pool, and
    the grid of sample images with the teacher's class. Of several seeds only the lowest
    is drawn (the titles say so): one run's pool is what the paper's figure shows."""
    return _draw(_synthetic_data_figures, df, out_dir, styles)


def _synthetic_data_comparison(done: pd.DataFrame, out_dir: Path, styles: dict[str, Style]) -> list[FigureInfo]:
    infos = []
    for (dataset, pair), runs in done.groupby(["dataset", "pair"]):
        shown = []
        for key, exp in stand_ins(experiments(runs), preset_samples_per_epoch).items():
            group = runs[(runs["label"] == exp.label) & (runs["data_scale"] == exp.data_scale)]
            found = ((r, diagnostics.read(Path(r.path))) for r in group.sort_values("seed").itertuples())
            run, arrays = next(((r, a) for r, a in found if a is not None and len(a["classes"])), (None, None))
            if arrays is not None:
                shown.append((key, exp, run, arrays))
        if len(shown) < 2:
            continue
        num_classes = max(max(len(a["class_names"]), int(a["classes"].max()) + 1) for *_, a in shown)
        fig = _figure(WIDE_IN, 2.4)
        by_class, by_conf = fig.subplots(1, 2, width_ratios=(3, 2))
        handles, names, said = [], [], []
        bins = np.linspace(0, 1, 21)
        for key, exp, run, arrays in sorted(shown, key=lambda s: s[0]):
            style = styles[exp.label]
            classes, confidence = arrays["classes"], arrays["confidence"]
            share = class_shares(arrays, num_classes)
            by_class.plot(np.arange(num_classes), share, color=style.color, marker=style.marker)
            counts, _ = np.histogram(confidence, bins=bins)
            by_conf.stairs(counts / len(confidence), bins, color=style.color, linewidth=1.2)
            entropy = diagnostics.summarize(arrays, num_classes)["normalised_entropy"]
            scale = f" N={int(exp.data_scale):,}" if exp.data_scale else ""
            handles.append(_marker(style))
            names.append(f"{_name(exp.label)}{scale}")
            said.append(f"{_name(exp.label)}{scale} (seed {run.seed}): {len(classes):,} images, class entropy "
                        f"{entropy:.3f}, mean confidence {confidence.mean():.2f}")
        by_class.axhline(1 / num_classes, color="#555555", linestyle="--", linewidth=0.8)
        names_of = shown[0][3]["class_names"]
        by_class.set_xticks(np.arange(num_classes), [_class_name(names_of, c) for c in range(num_classes)],
                            rotation=45 if len(names_of) else 0, ha="right" if len(names_of) else "center",
                            rotation_mode="anchor")
        dense = any("class_histograms" in a for *_, a in shown)
        by_class.set_xlabel("teacher's predicted class" + (" of each pixel" if dense else "") + " (dashed: balanced)")
        by_class.set_ylabel("share of the final pool" + ("'s pixels" if dense else ""))
        by_class.set_ylim(bottom=0)
        by_class.grid(axis="x", visible=False)
        by_conf.set_xlim(0, 1)
        by_conf.set_xlabel("teacher's confidence (top softmax probability)")
        by_conf.set_ylabel("share of the final pool")
        _legend_below(fig, handles, names)
        png, pdf = _save(fig, out_dir, f"diagnostics-comparison__{safe(dataset)}__{safe(pair)}")
        infos.append(FigureInfo(
            png, pdf, f"Synthetic data compared, {dataset} {pair}",
            "The SSD-KD paper's Fig. 2 for the published pool methods at their presets (the experiments the "
            "ranking table takes): the teacher's predicted class (left) and confidence (right) over each final "
            "pool, as shares of the pool. " + "; ".join(said) + " (entropy 1 = balanced).", dataset, pair,
            _size(fig)))
    return infos


def synthetic_data_comparison(df: pd.DataFrame, out_dir: Path,
                              styles: dict[str, Style] | None = None) -> list[FigureInfo]:
    """One figure per pair laying the final pools of the published pool methods (the
    experiments that stand in for their published rows, ``tables.stand_ins``) over each
    other: the teacher's predicted-class shares and its confidence histogram, the
    lowest seed with diagnostics of each. Made where two or more such methods left
    ``diagnostics.npz``."""
    return _draw(_synthetic_data_comparison, df, out_dir, styles)


# --- all of them -----------------------------------------------------------------------------

def write_figures(df: pd.DataFrame, out_dir: Path, leave_out: Iterable[str] = ()) -> list[FigureInfo]:
    """Every figure the runs of ``df`` support, under ``out_dir``; a figure with nothing
    to show (no data-scale grid, no diagnostics, no evaluated epochs) is not made.
    Labels in ``leave_out`` (a study's ablations, say) are not drawn in the overview
    figures (accuracy against time and FLOPs, learning curves), whose captions name them;
    the data-scale and synthetic-data figures keep them."""
    done = completed_runs(df) if not df.empty else df
    if done.empty:
        return []
    styles = method_styles(done["label"])  # one map for every figure of the report
    left = done["label"].isin(set(leave_out))
    overview = [f(done[~left], out_dir, styles) for f in (accuracy_vs_time, accuracy_vs_flops, learning_curves)]
    for info in (info for infos in overview for info in infos):
        mine = done[left & (done["dataset"] == info.dataset) & (done["pair"] == info.pair)]
        if not mine.empty:
            info.caption += (" Left out of this figure, kept in the tables: "
                             f"{', '.join(_name(lab) for lab in sorted(set(mine['label'])))}.")
    return (sum(overview, []) + data_scale_curves(done, out_dir, styles)
            + synthetic_data_comparison(done, out_dir, styles) + synthetic_data_figures(done, out_dir, styles))


def claims_figure(raw: pd.DataFrame, out_dir: Path) -> FigureInfo | None:
    """A forest plot of a claims table's top-1 tests (``claims.claims_table``'s numbers):
    each claim's A - B with its 95 % interval, zero and the margins marked, the verdict
    beside it. None when no top-1 test has numbers on both sides."""
    rows = raw[(raw["metric"] == "top1") & raw["mean_a"].notna()] if "mean_a" in raw else raw.iloc[0:0]
    if rows.empty:
        return None
    with mpl.rc_context(RC):
        height = 0.55 + 0.5 * len(rows)
        fig = Figure(figsize=(WIDE_IN, height), dpi=DPI)  # fixed margins: wrapped claims left, verdicts right
        fig.subplots_adjust(left=0.34, right=0.8, bottom=0.42 / height, top=1 - 0.1 / height)
        ax = fig.add_subplot()
        ys = list(range(len(rows)))[::-1]
        for y, r in zip(ys, rows.itertuples()):
            shown = headline(str(r.verdict))
            verdict = shown.split(";")[0]
            detected = r.rule == "differ" and verdict in ("A higher", "A lower")
            color = PALETTE[2] if verdict == "holds" else PALETTE[3] if verdict == "does not hold" else \
                PALETTE[0] if detected else NEUTRALS[0]
            half = (r.ci_high - r.diff) if pd.notna(r.ci_high) else 0.0
            ax.errorbar([r.diff], [y], xerr=[[half], [half]], fmt="o", color=color, elinewidth=1.0, zorder=3)
            if r.rule != "differ":  # the margin the rule reads: -m for non-inferiority, ±m otherwise
                for m in ((-r.margin,) if r.rule == "non-inferior" else (-r.margin, r.margin)):
                    ax.plot([m, m], [y - 0.3, y + 0.3], color=color, linewidth=0.8, linestyle=":")
            ax.annotate(textwrap.fill(f"{shown} (n = {r.n_a} vs {r.n_b})", 26), (1.02, y),
                        xycoords=("axes fraction", "data"),
                        fontsize=6.5, va="center", color=color, annotation_clip=False)
        ax.axvline(0, color=TEACHER_COLOR, linewidth=0.6)
        names = [textwrap.fill(f"{r.claim} ({r.a.split(':')[0]} vs {r.b.split(':')[0]})", 48)
                 for r in rows.itertuples()]
        ax.set_yticks(ys, names, fontsize=6)
        ax.set_ylim(-0.6, len(rows) - 0.4)
        ax.set_xlabel("A - B, top-1 points (mean over seeds, Welch 95% interval)")
        ax.grid(axis="y", visible=False)
        png, pdf = _save(fig, out_dir, "claims")
        return FigureInfo(png, pdf, "Claims", "Each top-1 claim's A - B with its Welch 95% interval (mean over seeds); "
                          "the solid line at 0; dotted: the margin the rule reads (-m for non-inferiority); green "
                          "holds, red does not hold, blue a difference found where no side was claimed, grey "
                          "undecided, not testable or no detectable effect; the "
                          "verdict and seeds on the right (the claims table has the tests).", "", "", _size(fig))


def arms_figure(values: pd.DataFrame, arms: list[str], out_dir: Path) -> FigureInfo | None:
    """The claims' arms side by side (``claims.arm_values``, arms in the order given, top to
    bottom): a panel per metric with values (final top-1, and the pool readings where an
    arm keeps a pool), each seed an open dot, the mean a filled diamond with its t-based
    95 % interval (``stats.interval``). None without a completed run."""
    if values.empty:
        return None
    metrics = [m for m in METRICS if values[m].notna().any()]
    shown = [a for a in arms if (values["arm"] == a).any()]
    with mpl.rc_context(RC):
        fig = _figure(WIDE_IN, 0.75 + 0.22 * len(shown))
        axes = fig.subplots(1, len(metrics), sharey=True, squeeze=False)[0]
        ys = {arm: len(shown) - 1 - i for i, arm in enumerate(shown)}
        for ax, metric in zip(axes, metrics):
            for arm, y in ys.items():
                seeds = values.loc[values["arm"] == arm, metric].dropna()
                if seeds.empty:
                    continue
                ax.plot(seeds, [y] * len(seeds), "o", mfc="none", color=NEUTRALS[1], markersize=3, zorder=4)
                sample = stats.Sample.of(seeds)
                low, high = stats.interval(sample)
                if not math.isnan(low):
                    ax.plot([low, high], [y, y], color=PALETTE[0], linewidth=1.2, zorder=3)
                ax.plot([sample.mean], [y], "D", color=PALETTE[0], markersize=4, zorder=5)
            ax.set_xlabel(METRIC_NAMES[metric] + (" (%)" if metric == "top1" else ""))
            ax.grid(axis="y", visible=False)
        axes[0].set_yticks(list(ys.values()), list(ys))
        axes[0].set_ylim(-0.6, len(shown) - 0.4)
        png, pdf = _save(fig, out_dir, "claims-arms")
        readings = ", ".join(METRIC_NAMES[m] for m in metrics[1:])
        return FigureInfo(png, pdf, "The claims' arms", "Each arm's seeds (open dots) and their mean (filled "
                          "diamond) with its t-based 95% interval (bar): final top-1" + (
                              f", and over the final pool where the arm keeps one: {readings} (SSD-KD's Eq. 3)"
                              if readings else "") + "; the arms table has the numbers.", "", "", _size(fig))
