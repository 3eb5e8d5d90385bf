"""The report's tables, from the experiments of a results tree (``runs.experiments``):
the SSD-KD paper's layout (methods x pairs, ``mean ± std (time)``), a cost table and a
speed-up table against a baseline method, each rendered as markdown, CSV and LaTeX
(booktabs). A ``Table`` holds display cells plus the raw numbers behind them, so the
three renderings never disagree.
"""
from __future__ import annotations

import math
from dataclasses import dataclass, field
from typing import Callable

import pandas as pd

from . import published, stats
from .runs import timing_notes
from .store import machine_kind, mixed_kinds
from .timing import PHASES, TRAIN_PHASES

MISSING = "—"
# Rows every paper table has beside the data-free methods: references, not competitors,
# so they never take the bold "best" of a column.
REFERENCE_ROWS = {"teacher": "Teacher", "scratch": "Student (scratch)", "kd": "KD (real data)"}
TRAIN_TIME = " + ".join(TRAIN_PHASES)
TIME_NOTE = f"train time, {TRAIN_TIME} (evaluation and checkpoint writes excluded), mean over seeds"


@dataclass
class Table:
    """Display cells by row, the columns, and which cells are bold."""

    title: str
    columns: list[str]
    rows: list[list[str]]
    bold: set[tuple[int, int]] = field(default_factory=set)
    notes: list[str] = field(default_factory=list)
    raw: pd.DataFrame | None = None  # the numbers, for CSV

    def markdown(self) -> str:
        def cell(i, j, text):
            return f"**{text}**" if (i, j) in self.bold else text

        lines = [f"### {self.title}", "", "| " + " | ".join(self.columns) + " |",
                 "|" + "|".join("---" if j == 0 else "---:" for j in range(len(self.columns))) + "|"]
        lines += ["| " + " | ".join(cell(i, j, c) for j, c in enumerate(row)) + " |" for i, row in enumerate(self.rows)]
        lines += [""] + [f"{n}" for n in self.notes]
        return "\n".join(lines) + "\n"

    def latex(self) -> str:
        """A booktabs tabular (needs ``\\usepackage{booktabs}``), notes as a footnote-size
        paragraph below it."""
        def cell(i, j, text):
            text = latex_escape(text)
            return f"\\textbf{{{text}}}" if (i, j) in self.bold else text

        spec = "l" + "r" * (len(self.columns) - 1)
        lines = [f"% {self.title}", f"\\begin{{tabular}}{{{spec}}}", "\\toprule",
                 " & ".join(latex_escape(c) for c in self.columns) + " \\\\", "\\midrule"]
        lines += [" & ".join(cell(i, j, c) for j, c in enumerate(row)) + " \\\\" for i, row in enumerate(self.rows)]
        lines += ["\\bottomrule", "\\end{tabular}"]
        if self.notes:
            lines += ["", "{\\footnotesize " + " \\\\\n".join(latex_escape(n) for n in self.notes) + "}"]
        return "\n".join(lines) + "\n"

    def csv(self) -> str:
        frame = self.raw if self.raw is not None else pd.DataFrame(self.rows, columns=self.columns)
        return frame.to_csv(index=False)


def latex_escape(text: str) -> str:
    out = []
    for ch in str(text):
        out.append({"±": "$\\pm$", "—": "---", "%": "\\%", "_": "\\_", "&": "\\&", "#": "\\#", "$": "\\$",
                    "×": "$\\times$", "≥": "$\\geq$", "Δ": "$\\Delta$"}.get(ch, ch))
    return "".join(out)


def format_seconds(seconds: float | None) -> str:
    """Seconds in the unit that reads best: ``45 s``, ``12.5 min``, ``3.92 h``."""
    if seconds is None or (isinstance(seconds, float) and math.isnan(seconds)):
        return MISSING
    if seconds < 120:
        return f"{seconds:.0f} s" if seconds >= 10 else f"{seconds:.1f} s"
    if seconds < 7200:
        return f"{seconds / 60:.1f} min"
    return f"{seconds / 3600:.2f} h"


def scale_suffix(data_scale) -> str:
    """The text after a row's label where it ran at a data scale, ' (N=1,250)'; none at its
    default (0)."""
    return f" (N={int(data_scale):,})" if data_scale else ""


def sample_cell(mean: float, std: float, n: int, digits: int = 2) -> str:
    """A sample as a table shows it: ``mean ± std [n]`` (no std below two values)."""
    return f"{mean:.{digits}f}" + ("" if n < 2 else f" ± {std:.{digits}f}") + f" [{n}]"


def _accuracy(mean: float, std: float, seeds: int) -> str:
    return f"{mean:.2f}" if seeds < 2 or pd.isna(std) else f"{mean:.2f} ± {std:.2f}"


def row_names(exp: pd.DataFrame) -> pd.Series:
    """The row a experiment takes in a methods x pairs table: its label, with its data
    scale where one label ran at several scales (a data-scale grid)."""
    scales = exp.groupby("label")["data_scale"].transform("nunique")
    names = exp["label"].map(lambda n: REFERENCE_ROWS.get(n, n))
    grid = scales > 1
    names[grid] = names[grid] + " (N=" + exp.loc[grid, "data_scale"].map(lambda s: f"{int(s):,}") + ")"
    return names


def is_reference(exp: pd.DataFrame) -> pd.Series:
    """Rows that use real data (scratch, kd, at any preset or data scale): references, never a
    column's best."""
    return exp["method"].isin([k for k in REFERENCE_ROWS if k != "teacher"])


def metric_of(runs: pd.DataFrame) -> str:
    """The main metric the runs' ``*_top1`` columns hold (``RunSummary.metric``): top-1,
    or mIoU for a segmentation data set."""
    found = runs["metric"].dropna() if "metric" in runs else ()
    return str(found.iloc[0]) if len(found) else "top-1"


def paper_table(exp: pd.DataFrame, teachers: pd.DataFrame, dataset: str) -> Table:
    """Rows: Teacher, the data-free methods (best first, by the first pair's column),
    Student (scratch), KD; columns: the pairs; cells ``mean ± std (time)`` over the
    experiment's seeds, n seeds in brackets. Bold: the best data-free method per pair."""
    exp = exp.assign(row=row_names(exp), ref=is_reference(exp))
    pairs = sorted(exp["pair"].unique())
    # Best first, by the first pair's column, then the next for rows missing there.
    top1 = {(r.row, r.pair): r.top1_mean for r in exp.itertuples(index=False)}

    def best_first(rows):
        # ties (every seed at chance, say) by name: a set's order changes from process to process
        return sorted(set(rows), key=lambda row: ([-top1.get((row, p), -math.inf) for p in pairs], row))

    order = [REFERENCE_ROWS["teacher"], *best_first(exp.loc[~exp["ref"], "row"]),
             *best_first(exp.loc[exp["ref"], "row"])]
    cells = {(r.row, r.pair): r for r in exp.itertuples(index=False)}
    rows, bold, raw = [], set(), []
    teacher_top1 = dict(zip(teachers["pair"], teachers["top1"]))
    teacher_arch = dict(zip(teachers["pair"], teachers["teacher"]))
    for i, name in enumerate(order):
        row = [name]
        for pair in pairs:
            if name == REFERENCE_ROWS["teacher"]:
                top1 = teacher_top1.get(pair)
                row.append(MISSING if top1 is None or pd.isna(top1) else f"{top1:.2f} ({teacher_arch[pair]})")
                raw.append({"row": name, "pair": pair, "top1_mean": top1, "top1_std": None, "seeds": None,
                            "train_seconds": None})
                continue
            r = cells.get((name, pair))
            if r is None:
                row.append(MISSING)
                continue
            row.append(f"{_accuracy(r.top1_mean, r.top1_std, r.seeds)} ({format_seconds(r.train_seconds)}) "
                       f"[{int(r.seeds)}]")
            raw.append({"row": name, "pair": pair, "top1_mean": r.top1_mean, "top1_std": r.top1_std,
                        "seeds": r.seeds, "train_seconds": r.train_seconds})
        rows.append(row)
    for j, pair in enumerate(pairs, start=1):
        best = exp[(exp["pair"] == pair) & ~exp["ref"]]
        if len(best):
            winner = best.loc[best["top1_mean"].idxmax(), "row"]
            bold.add((order.index(winner), j))
    metric = metric_of(exp)
    notes = [f"{dataset}: final test {metric} %, mean ± std over seeds ([n] seeds); (time): {TIME_NOTE}. "
             "Bold: the best data-free method of a column; Teacher, Student (scratch) and KD use real data. "
             f"{MISSING}: not run."]
    return Table(f"{'Top-1' if metric == 'top-1' else metric} and train time, {dataset}", ["method", *pairs], rows, bold, notes, pd.DataFrame(raw))




def compact_count(n) -> str:
    """A sample count as the SSD-KD paper's Table 3 writes it: ``795``, ``2,000``, ``17K``,
    ``960K``, ``4.8M``."""
    n = int(n)
    if n < 10_000:
        return f"{n:,}"
    if n < 1_000_000:
        return f"{n / 1e3:.0f}K"
    return f"{n / 1e6:.1f}".removesuffix(".0") + "M"


# What a Table 3 row's training data is: real images, or synthetic samples held in a pool, a
# capped buffer (a data scale), or made fresh for every student step (online).
TRAINING_DATA = {"real": "{n} {dataset}", "pool": "{n} synthetic (pool)", "buffer": "{n} synthetic (buffer)",
                 "online": "{n} synthetic (online)"}


def table3(exp: pd.DataFrame, teachers: pd.DataFrame, dataset: str) -> Table:
    """The SSD-KD paper's Table 3 layout for one (segmentation) data set: per experiment its
    method, training data scale, mean ± std of the final metric over seeds and train time.
    ``exp`` carries ``data_kind`` (a key of ``TRAINING_DATA``, or None where the records do not
    say) and ``data_samples`` per experiment. Rows: Teacher, Student (scratch), KD, then the
    data-free methods from the largest training data scale down (the paper's order: DFAD 960K,
    Fast10 17K, SSD-KD 16K); a pair column only where the data set has several pairs."""
    exp = exp.assign(row=row_names(exp), ref=is_reference(exp))
    pairs = sorted(exp["pair"].unique())
    metric = metric_of(exp)
    columns = (["pair"] if len(pairs) > 1 else []) + ["method", "training data", f"{metric} %", "train time"]
    rows, raw = [], []
    real = exp[(exp["data_kind"] == "real") & (exp["data_scale"] == 0)]["data_samples"].dropna()
    teacher_data = real.max() if len(real) else None

    def data_cell(kind, n) -> str:
        if kind not in TRAINING_DATA or n is None or pd.isna(n):
            return MISSING
        return TRAINING_DATA[kind].format(n=compact_count(n), dataset=dataset)

    def add(pair, name, kind, n, mean, std, seeds, seconds):
        cells = [name, data_cell(kind, n),
                 MISSING if mean is None or pd.isna(mean) else
                 (f"{mean:.2f}" if seeds is None else f"{_accuracy(mean, std, seeds)} [{int(seeds)}]"),
                 MISSING if seconds is None else format_seconds(seconds)]
        rows.append(([pair] if len(pairs) > 1 else []) + cells)
        raw.append({"pair": pair, "method": name, "data_kind": kind,
                    "data_samples": None if n is None or pd.isna(n) else int(n), f"{metric}_mean": mean,
                    f"{metric}_std": std, "seeds": seeds, "train_seconds": seconds})

    order = {"scratch": 0, "kd": 1}  # the paper's Student, then KD
    for pair in pairs:
        here = exp[exp["pair"] == pair]
        t = teachers[teachers["pair"] == pair]
        t_score = t["top1"].iloc[0] if len(t) else None
        add(pair, f"Teacher ({t['teacher'].iloc[0]})" if len(t) else "Teacher", "real", teacher_data, t_score,
            None, None, None)
        refs = here[here["ref"]].assign(_o=lambda d: d["method"].map(lambda m: order.get(m, 2)))
        free = here[~here["ref"]].assign(_n=lambda d: -d["data_samples"].fillna(-1))
        for r in [*refs.sort_values(["_o", "row"]).itertuples(index=False),
                  *free.sort_values(["_n", "row"]).itertuples(index=False)]:
            add(pair, r.row, r.data_kind, r.data_samples, r.top1_mean, r.top1_std, r.seeds, r.train_seconds)
    notes = [f"{dataset}: the SSD-KD paper's Table 3 layout. Training data: real training images ('N {dataset}', "
             "the whole train split or a --data-scale subset), or the synthetic samples the student learnt from: a "
             "pool's final size (every sample made), a buffer's final size (SSD-KD's |B|, its data scale), or for "
             "an online method (a fresh batch every student step) distillation steps x batch size. The paper's "
             "DFAD '960K' counts DFAD's generator batches (300 x 50 x 64); at its 5 student steps a batch the "
             f"student's count is 4.8M. {metric}: final test {metric} %, mean ± std over seeds [n]; "
             f"{TIME_NOTE}. Teacher: the zoo's measured {metric}, trained on the train split."]
    return Table(f"Table 3 layout, {dataset}", columns, rows, set(), notes, pd.DataFrame(raw))


def cost_table(exp: pd.DataFrame, dataset: str) -> Table:
    """Per experiment: mean seconds per phase, train and total seconds, training FLOPs,
    images through teacher and student (forward and backward), peak memory."""
    phases = [p for p in PHASES if f"seconds_{p}" in exp and exp[f"seconds_{p}"].notna().any()]
    columns = ["pair", "method", *[f"{p} s" for p in phases], "train s", "total s", "train FLOPs",
               "teacher fwd img", "student fwd img", "student bwd img", "peak MB"]
    rows, raw = [], []
    exp = exp.assign(row=row_names(exp)).sort_values(["pair", "train_seconds"])
    for r in exp.itertuples(index=False):
        get = r._asdict()
        phase_cells = [_num(get.get(f"seconds_{p}"), ".1f") for p in phases]
        rows.append([r.pair, r.row, *phase_cells, _num(r.train_seconds, ".1f"), _num(r.total_seconds, ".1f"),
                     _num(r.training_flops, ".3g"), _num(get.get("teacher_forward_images"), ",.0f"),
                     _num(get.get("student_forward_images"), ",.0f"), _num(get.get("student_backward_images"), ",.0f"),
                     _num(r.peak_memory_mb, ",.0f")])
        raw.append({"pair": r.pair, "method": r.row, "seeds": r.seeds,
                    **{f"seconds_{p}": get.get(f"seconds_{p}") for p in PHASES},
                    "train_seconds": r.train_seconds, "total_seconds": r.total_seconds,
                    "training_flops": r.training_flops, "teacher_forward_images": get.get("teacher_forward_images"),
                    "student_forward_images": get.get("student_forward_images"),
                    "student_backward_images": get.get("student_backward_images"),
                    "peak_memory_mb": r.peak_memory_mb})
    notes = [f"{dataset}: means over seeds. train s = {TRAIN_TIME}; total s adds "
             "evaluation and checkpoint writes. FLOPs and images count training only (evaluation excluded)."]
    for col in [c for c in exp.columns if c.endswith("_cached_seconds")]:
        for r in exp[exp[col].fillna(0) > 0].itertuples(index=False):
            notes.append(f"{r.row} ({r.pair}): {getattr(r, col):.1f} s a run of {col[:-len('_cached_seconds')]} work "
                         "was read from the augmentation cache (made by an earlier run) and is not in its seconds; "
                         "its FLOPs are counted.")
    return Table(f"Cost per method, {dataset}", columns, rows, set(), notes, pd.DataFrame(raw))


def speedup_table(exp: pd.DataFrame, baseline: str, dataset: str,
                  own_samples: Callable[[str, str | None], int | None] | None = None) -> Table | None:
    """Per pair (and data scale, where the baseline ran at several), each method against
    ``baseline`` (a method label or row name): the baseline's train time over the
    method's, and whether the method's top-1 is at least the baseline's (a speed-up
    counts only at equal or better accuracy). Where the baseline ran at several data
    scales, a method at a scale the baseline did not run is set against the baseline's
    main row: the one nearest its preset's own samples an epoch (``own_samples``, as
    ``stand_ins``)."""
    exp = exp.assign(row=row_names(exp))
    m = metric_of(exp)
    columns = ["pair", "method", f"{m} %", f"Δ {m} vs baseline", "train time", "speed-up ×", f"{m} ≥ baseline"]
    rows, raw, bold = [], [], set()
    is_base = (exp["row"] == baseline) | (exp["label"] == baseline)
    by_scale = exp[is_base].groupby("pair")["data_scale"].nunique().gt(1)
    keys = ["pair", "data_scale"]
    main_rows = []
    for (pair, scale), group in exp.groupby(keys):
        same = exp[is_base & (exp["pair"] == pair)]
        if by_scale.get(pair, False):
            at = same[same["data_scale"] == scale]
            if len(at) != 1 and own_samples is not None:
                main = _nearest_own(same, own_samples)
                at = same.loc[[main.name]]
                main_rows.append(f"{pair}: {main.row}")
            same = at
        if len(same) != 1:
            continue
        b = same.iloc[0]
        for r in group.sort_values("train_seconds").itertuples(index=False):
            ratio = b.train_seconds / r.train_seconds if r.train_seconds else float("nan")
            at_least = r.top1_mean >= b.top1_mean
            if at_least and ratio > 1 and r.row != b.row:
                bold.add((len(rows), 5))
            rows.append([pair, r.row, _accuracy(r.top1_mean, r.top1_std, r.seeds),
                         MISSING if r.row == b.row else f"{r.top1_mean - b.top1_mean:+.2f}",
                         format_seconds(r.train_seconds), f"{ratio:.2f}", "yes" if at_least else "no"])
            raw.append({"pair": pair, "method": r.row, "top1_mean": r.top1_mean,
                        "delta_top1": r.top1_mean - b.top1_mean, "train_seconds": r.train_seconds,
                        "speedup": ratio, "top1_at_least_baseline": at_least})
    if not rows:
        return None
    notes = [f"{dataset}: speed-up = the baseline's ({baseline}) train time / the method's; bold where the "
             f"method is faster at equal or better mean {m}."]
    if main_rows:
        notes.append("Methods at a data scale the baseline did not run are set against its main row ("
                     + "; ".join(sorted(set(main_rows))) + ").")
    return Table(f"Speed-up against {baseline}, {dataset}", columns, rows, bold, notes, pd.DataFrame(raw))


def ranking_table(exp: pd.DataFrame, dataset: str, own_samples: Callable[[str, str | None], int | None],
                  pairs: tuple[str, ...] = published.PAIRS) -> Table | None:
    """This study's order of the methods the published CIFAR-10 tables list (REFERENCE.md)
    beside each published column of ``pairs`` (default: all), with Kendall's tau per
    column, for the experiments of one pair (``exp``); None off CIFAR-10 or with fewer
    than two such methods. Which experiment stands in for a published row: ``stand_ins``."""
    if dataset != "cifar10" or exp.empty:
        return None
    chosen = stand_ins(exp, own_samples)
    if len(chosen) < 2:
        return None
    here = {k: float(r.top1_mean) for k, r in chosen.items()}
    order = sorted(here, key=lambda k: -here[k])
    columns = ["method", "stands in", "here top-1 % (rank)", *pairs]
    cols = {pair: published.cifar10(pair) for pair in pairs}
    ranks = {pair: stats.ranks({k: v for k, v in col.items() if k in here}) for pair, col in cols.items()}
    mine = stats.ranks(here)
    rows, raw = [], []
    for k in order:
        r = chosen[k]
        rows.append([k, f"{r.label}{scale_suffix(r.data_scale)} [{int(r.seeds)}]", f"{here[k]:.2f} ({mine[k]})",
                     *[f"{cols[p][k]:.2f} ({ranks[p][k]})" if k in cols[p] else MISSING for p in pairs]])
        raw.append({"method": k, "run": r.label, "data_scale": r.data_scale, "seeds": r.seeds, "top1_mean": here[k],
                    **{f"published_{p}": cols[p].get(k) for p in pairs}})
    taus = {p: stats.kendall_tau(here, cols[p]) for p in pairs}
    rows.append(["Kendall tau", "", "", *[f"{t:.2f} (n={n})" if n >= 2 else MISSING for t, n in taus.values()]])
    raw.append({"method": "kendall_tau", **{f"published_{p}": taus[p][0] for p in pairs}})
    notes = [f"{dataset}: each method's mean final top-1 here, its rank among the methods listed, and the published "
             "CIFAR-10 top-1 of each paper pair with its rank among the same methods (published: ssdkd at data scale "
             "5,000, Fast-N at 400 KD steps of 256 an epoch). Kendall tau (tau-a, ties neither concordant nor "
             "discordant) between this study's order and each column's. 'stands in': the experiment taken for the "
             "published row, [n] seeds."]
    pair = exp["pair"].iloc[0]
    return Table(f"Ranking against the published CIFAR-10 tables, {dataset}, {pair}", columns, rows, set(), notes,
                 pd.DataFrame(raw))


def stand_ins(exp: pd.DataFrame, own_samples: Callable[[str, str | None], int | None]) -> dict[str, pd.Series]:
    """Per method of the published tables (``published.published_key``), the experiment
    of ``exp`` that stands in for its published row: at its preset (ablations and other
    variants are other methods), nearest the preset's own samples an epoch
    (``own_samples(method, preset)``) where it ran at several data scales, then the one
    with the most seeds."""
    keys = [published.published_key(m, _preset(p)) for m, p in zip(exp["method"], exp["preset"])]
    return {key: _nearest_own(group, own_samples) for key, group in exp.assign(key=keys).groupby("key")}


def _preset(value) -> str | None:
    """A frame's preset: None where a run had none (NaN in the frame)."""
    return value if isinstance(value, str) else None


def _nearest_own(group: pd.DataFrame, own_samples: Callable[[str, str | None], int | None]) -> pd.Series:
    """Of one method's experiments (its data scales), the one nearest the preset's own
    samples an epoch, then the one with the most seeds."""
    own = own_samples(group["method"].iloc[0], _preset(group["preset"].iloc[0]))
    scale = group["data_scale"].where(group["data_scale"] > 0, own if own else 0)
    distance = (scale - own).abs() if own else pd.Series(0, index=group.index)
    return group.assign(_d=distance).sort_values(["_d", "seeds"], ascending=[True, False]).iloc[0]


def _num(value, spec: str) -> str:
    if value is None or (isinstance(value, float) and math.isnan(value)):
        return MISSING
    return format(value, spec)


def environment_note(environments: list[dict]) -> str:
    """One line naming the hardware and software the runs of a table ran on."""
    def distinct(key):
        return sorted({str(e.get(key)) for e in environments if e.get(key) not in (None, "")})

    if not environments:
        return "Environment: not recorded."
    parts = [f"device {', '.join(distinct('device_name') or distinct('device'))}",
             *([f"CPU kind {', '.join(distinct('cpu_kind'))}"] if distinct("cpu_kind") else []),
             f"torch {', '.join(distinct('torch'))}", f"Python {', '.join(distinct('python'))}",
             f"threads {', '.join(distinct('threads'))}"]
    if distinct("precision"):  # recorded since issue 16
        parts.append(f"precision {', '.join(distinct('precision'))}")
    commits = distinct("git_commit")
    if commits:
        dirty = any(e.get("git_dirty") for e in environments)
        parts.append(f"commit{'s' if len(commits) > 1 else ''} {', '.join(c[:10] for c in commits)}"
                     + (" (some with uncommitted changes)" if dirty else ""))
    kinds = mixed_kinds(set(map(machine_kind, environments)))
    mixed = f" Times from {len(kinds)} machine kinds: compare times only within one." if kinds else ""
    return "Environment: " + "; ".join(parts) + f" ({len(environments)} runs)." + mixed


def comparison_table(done: pd.DataFrame, compare: list[tuple[str, str]], margin: float, dataset: str,
                     matches: Callable[[pd.DataFrame, list[str]], pd.Series]) -> Table | None:
    """Each ``(A, B)`` of ``compare`` on each pair of ``dataset`` where both ran: the
    per-seed final top-1 of every experiment matching A against every one matching B
    (``matches``: a name, label or preset), with Welch's t, the difference's t-based 95 %
    interval, TOST within +-``margin`` points, the seeds per arm a true difference of
    ``margin`` needs (80 % power) and the train and total time ratios; all from
    ``stats``. None when no pair has both."""
    rows, raw, sentences = [], [], []
    keys = ["label", "data_scale", "config_id"]
    for a, b in compare:
        for pair, runs in done[done["dataset"] == dataset].groupby("pair"):
            side_a, side_b = runs[matches(runs, [a])], runs[matches(runs, [b])]
            # Sides run at several data scales are compared scale by scale where they share one.
            shared = set(side_a["data_scale"]) & set(side_b["data_scale"])
            for ka, ra in side_a.groupby(keys, dropna=False):
                for kb, rb in side_b.groupby(keys, dropna=False):
                    if ka == kb or (shared and not ka[1] == kb[1] in shared):
                        continue
                    names = (f"{ka[0]}{scale_suffix(ka[1])}", f"{kb[0]}{scale_suffix(kb[1])}")
                    row = _compare(ra, rb, margin)
                    rows.append([pair, *names, *row["cells"]])
                    raw.append({"pair": pair, "a": names[0], "b": names[1], **row["numbers"]})
                    sentences.append(f"{pair}: {row['difference'].sentence(*names)}; "
                                     f"{row['equivalence'].sentence(*names)}")
    if not rows:
        return None
    m = metric_of(done[done["dataset"] == dataset])
    columns = ["pair", "A", "B", f"{m} A", f"{m} B", "A - B [95% CI]", "Welch t (df), p", "verdict",
               f"TOST ±{margin:g}: p", "seeds for ±" + f"{margin:g}", "train time A/B", "total time A/B"]
    notes = [f"{dataset}: final {m} % over seeds, mean ± std [n]. Welch's t test (two-sided) of A - B with its "
             f"t-based 95% interval; 'no detectable effect' where p >= 0.05. TOST: two one-sided Welch tests that "
             f"A - B lies within ±{margin:g} points (equivalence shown where p < 0.05). Seeds for ±{margin:g}: seeds "
             "per arm at which a true difference of that size is detected with 80% power, at these arms' stds. "
             "Computed by dfkd_bench.stats."] + sentences
    return Table(f"Comparisons, {dataset}", columns, rows, set(), notes, pd.DataFrame(raw))


def top1_sample(row) -> stats.Sample:
    """An experiments-table row's final top-1 over its seeds as a ``stats.Sample``."""
    return stats.Sample(float(row.top1_mean), float(row.top1_std), int(row.seeds))


def _compare(ra: pd.DataFrame, rb: pd.DataFrame, margin: float) -> dict:
    a, b = stats.Sample.of(ra["final_top1"]), stats.Sample.of(rb["final_top1"])
    d, e = stats.welch(a, b), stats.tost(a, b, -margin, margin)
    need = stats.seeds_needed(a.std, b.std, margin)
    train = ra["train_seconds"].mean() / rb["train_seconds"].mean()
    total = ra["total_seconds"].mean() / rb["total_seconds"].mean()
    notes = timing_notes([*ra["path"], *rb["path"]])
    note = f" ({'; '.join(notes)})" if notes else ""
    verdict = d.why_untestable.split(":")[0] if d.why_untestable else \
        ("A higher" if d.diff > 0 else "A lower") if d.detected else "no detectable effect"
    cells = [sample_cell(a.mean, a.std, a.n), sample_cell(b.mean, b.std, b.n),
             f"{d.diff:+.2f}" + ("" if d.why_untestable else f" [{d.low:+.2f}, {d.high:+.2f}]"),
             MISSING if d.why_untestable else f"{d.t:.2f} ({d.df:.1f}), {d.p:.3g}", verdict,
             MISSING if e.difference.why_untestable else f"{e.p:.3g} ({'shown' if e.shown else 'not shown'})",
             MISSING if need is None else str(need), f"{train:.2f}x{note}", f"{total:.2f}x"]
    numbers = {"n_a": a.n, "n_b": b.n, "mean_a": a.mean, "std_a": a.std, "mean_b": b.mean, "std_b": b.std,
               "diff": d.diff, "ci_low": d.low, "ci_high": d.high, "welch_t": d.t, "df": d.df, "p": d.p,
               "tost_margin": margin, "tost_p": e.p, "equivalent": e.shown, "seeds_needed": need,
               "train_time_ratio": train, "total_time_ratio": total, "times_note": note}
    return {"cells": cells, "numbers": numbers, "difference": d, "equivalence": e}
