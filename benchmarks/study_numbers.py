"""The numbers the CPU reference study's findings quote (issue 17), computed from the
committed run records alone, so every figure in reports/cpu-study/findings.md can be
re-derived:

    python benchmarks/study_numbers.py reports/cpu-study/runs --teacher reports/cpu-study/teachers/resnet32.json \
        --out reports/cpu-study/numbers.md

Sections: SSD-KD against Fast2 and Fast10 (accuracy, and its train and total time as a
fraction of theirs), Fast10 against Fast2, every data-free method against the noise
floor, the Table 4 ablations beside the paper's column with the rank agreement, DDA's
augmentation (accuracy gained, seconds spent), the data-scale sweep's train-time slopes,
the real-data references (and the real subset KD needs to match each data-free row),
the machines the runs ran on, and the study's CPU time (teacher included). A section
whose runs are not there yet says so instead of a number.
"""
from __future__ import annotations

import argparse
import json
import math
import sys
from pathlib import Path

import pandas as pd

from dfkd_bench import report, stats, tables
from dfkd_bench.figures import fit_line
from dfkd_bench.runs import completed_runs, experiments, preset_samples_per_epoch

# Table 4 (CIFAR-10, resnet34 -> resnet18 and wrn40_2 -> wrn16_1): preset -> published top-1
TABLE4 = {"none-cpu": ("baseline", 87.35, 80.47), "no-balance-cpu": ("+PS", 90.28, 87.19),
          "only-difficulty-cpu": ("+difficulty", 88.57, 83.12), "only-diversity-cpu": ("+diversity", 89.12, 84.31),
          "no-ps-cpu": ("+difficulty +diversity", 89.95, 85.79), "cpu": ("full (PS + both terms)", 92.92, 88.07)}
ABLATION_SCALE = 1250
ABLATIONS = ("no-ps-cpu", "no-difficulty-cpu", "no-diversity-cpu", "no-balance-cpu", "none-cpu")


def _mean_std(row) -> str:
    std = "" if row is None or pd.isna(row.top1_std) else f" ± {row.top1_std:.2f}"
    return "not run" if row is None else f"{row.top1_mean:.2f}{std} [{int(row.seeds)}]"


def find(exp: pd.DataFrame, method: str, preset: str, scale: int | None = None):
    """The experiment of ``method`` at ``preset`` (and data scale), or None."""
    rows = exp[(exp["method"] == method) & (exp["preset"] == preset)]
    if scale is not None:
        rows = rows[rows["data_scale"] == scale]
    if len(rows) > 1:
        rows = rows.sort_values("seeds", ascending=False)
    return None if rows.empty else rows.iloc[0]


def ssdkd_vs_fast(exp: pd.DataFrame) -> list[str]:
    rows = tables.stand_ins(exp, preset_samples_per_epoch)
    ssd = rows.get("ssdkd")
    lines = ["## SSD-KD against Fast2 and Fast10", ""]
    if ssd is None:
        return lines + ["SSD-KD's main row has not run yet.", ""]
    lines += ["| row | top-1 % | train s | total s | SSD-KD top-1 - row | SSD-KD train / row | SSD-KD total / row |",
              "|---|---:|---:|---:|---:|---:|---:|"]
    for key in ("ssdkd", "fast2", "fast5", "fast10"):
        r = rows.get(key)
        if r is None:
            lines.append(f"| {key} | not run | | | | | |")
            continue
        lines.append(f"| {r.label}{tables.scale_suffix(r.data_scale)} | {_mean_std(r)} | "
                     f"{r.train_seconds:,.0f} | {r.total_seconds:,.0f} | {ssd.top1_mean - r.top1_mean:+.2f} | "
                     f"{ssd.train_seconds / r.train_seconds:.3f} | {ssd.total_seconds / r.total_seconds:.3f} |")
    lines.append("")
    for key in ("fast2", "fast5", "fast10"):
        if rows.get(key) is not None:
            lines.append(f"- {_welch(ssd, rows[key], 'SSD-KD', key)}")
    f2, f10 = rows.get("fast2"), rows.get("fast10")
    if f2 is not None and f10 is not None:
        lines.append(f"- {_welch(f10, f2, 'Fast10', 'Fast2')}")
    return lines + [""]


def _welch(a, b, name_a: str, name_b: str) -> str:
    """The package's Welch test of two experiments-table rows, as one sentence."""
    return stats.welch(tables.top1_sample(a), tables.top1_sample(b)).sentence(name_a, name_b)


def step_control(exp: pd.DataFrame, done: pd.DataFrame) -> list[str]:
    """SSD-KD's main row beside its control: the same 256-sample buffer with Fast2's 40 student
    steps an epoch (kd_passes 20), and the rows either differs from."""
    lines = ["## SSD-KD at 256: its data scale or its step count?", ""]
    small = find(exp, "ssdkd", "cpu", 256)
    control = find(exp, "ssdkd", "cpu-40steps")
    if small is None or control is None:
        return lines + ["SSD-KD's main row and its `cpu-40steps` control have not both run yet.", ""]
    lines += ["| row | samples an epoch | KD steps an epoch | top-1 % | train s |", "|---|---:|---:|---:|---:|"]
    steps = done.groupby("config_id")["steps_per_epoch"].first()
    for r in (small, control, find(exp, "ssdkd", "cpu", 5000), find(exp, "fast", "fast2-cpu", 5000)):
        if r is not None:
            scale = f"{int(r.data_scale):,}" if r.data_scale else "preset"
            lines.append(f"| {r.label} | {scale} | {int(steps[r.config_id])} | {_mean_std(r)} | "
                         f"{r.train_seconds:,.0f} |")
    lines += ["", f"The control against the main row, for {control.train_seconds / small.train_seconds:.2f}x its "
                  f"train time: {_welch(control, small, 'control', 'main row')}."]
    return lines + [""]


def noise_floor(exp: pd.DataFrame) -> list[str]:
    noise = find(exp, "noise", "cpu")
    lines = ["## Every data-free method against the noise floor", ""]
    if noise is None:
        return lines + ["The noise row has not run yet.", ""]
    lines += [f"Noise (KD on Gaussian noise): {_mean_std(noise)}.", "",
              "| row | top-1 % | above noise (points) | Welch t (df), p | verdict |", "|---|---:|---:|---:|---|"]
    data_free = exp[~exp["method"].isin(["noise", "kd", "scratch"])].sort_values("top1_mean", ascending=False)
    for r in data_free.itertuples(index=False):
        d = stats.welch(tables.top1_sample(r), tables.top1_sample(noise))
        test = d.why_untestable.split(":")[0] if d.why_untestable else f"{d.t:.2f} ({d.df:.1f}), {d.p:.3g}"
        verdict = "-" if d.why_untestable else "above noise" if d.detected and d.diff > 0 else \
            "below noise" if d.detected else "no detectable effect"
        lines.append(f"| {r.label}{tables.scale_suffix(r.data_scale)} | {_mean_std(r)} | {d.diff:+.2f} | {test} | "
                     f"{verdict} |")
    return lines + [""]


def ablations(exp: pd.DataFrame) -> list[str]:
    lines = ["## SSD-KD's Table 4 ablations (data scale 1,250)", "",
             "| Table 4 row | preset | top-1 % here | rank here | published r34-r18 (rank) | published w40-2-w16-1 |",
             "|---|---|---:|---:|---:|---:|"]
    here = {p: find(exp, "ssdkd", p, ABLATION_SCALE) for p in TABLE4}
    ran = {p: float(r.top1_mean) for p, r in here.items() if r is not None}
    paper = {p: v[1] for p, v in TABLE4.items()}
    ours, theirs = stats.ranks(ran), stats.ranks(paper)
    for p, (row, r34, w40) in TABLE4.items():
        lines.append(f"| {row} | {p} | {_mean_std(here[p])} | {ours.get(p, '-')} | {r34:.2f} ({theirs[p]}) | "
                     f"{w40:.2f} |")
    tau, n = stats.kendall_tau(ran, paper)
    lines += ["", f"Kendall tau with the published resnet34 -> resnet18 order over the {n} rows run: "
                  f"{tau:.2f}" if n >= 2 else "Fewer than two rows have run: no rank agreement yet."]
    full = find(exp, "ssdkd", "cpu", ABLATION_SCALE)
    tests = {p: stats.welch(tables.top1_sample(r), tables.top1_sample(full)) for p in ABLATIONS
             if full is not None and (r := find(exp, "ssdkd", p, ABLATION_SCALE)) is not None}
    holm = dict(zip(tests, stats.holm([d.p for d in tests.values()])))
    if tests:
        lines += ["", f"Each ablation against the full method at 1,250 (Welch; p adjusted by Holm over the "
                      f"{len(tests)} contrasts):", ""]
        lines += [f"- {d.sentence(p, 'full')}" + ("" if math.isnan(holm[p]) else f"; Holm-adjusted p = {holm[p]:.3g}")
                  for p, d in tests.items()]
    return lines + [""]


def dda(exp: pd.DataFrame) -> list[str]:
    lines = ["## DDA's augmentation", ""]
    plain, aug = find(exp, "dda", "no-aug-cpu"), find(exp, "dda", "cpu")
    if plain is None or aug is None:
        return lines + ["DDA's `no-aug-cpu` and `cpu` rows have not both run yet.", ""]
    aug_s = aug.get("seconds_augmentation", math.nan)
    aug_text = "not recorded" if pd.isna(aug_s) else f"{aug_s:,.1f} s"
    lines += [f"- `no-aug-cpu`: {_mean_std(plain)}, train {plain.train_seconds:,.0f} s",
              f"- `cpu` ({aug.label}): {_mean_std(aug)}, train {aug.train_seconds:,.0f} s, of it augmentation "
              f"{aug_text}",
              f"- augmentation, for {aug.train_seconds / plain.train_seconds:.2f}x the train time: "
              f"{_welch(aug, plain, 'cpu', 'no-aug-cpu')}",
              f"- {stats.variance_ratio(tables.top1_sample(aug), tables.top1_sample(plain)).sentence('cpu', 'no-aug-cpu')}",
              ""]
    return lines


def scale_slopes(exp: pd.DataFrame) -> list[str]:
    lines = ["## Train time against data scale", "", "| row | scales | top-1 % by scale | slope s / sample | "
             "intercept s | R² |", "|---|---|---|---:|---:|---:|"]
    for method, preset in (("ssdkd", "cpu"), ("fast", "fast2-cpu"), ("kd", "cpu")):
        rows = exp[(exp["method"] == method) & (exp["preset"] == preset) & (exp["data_scale"] > 0)]
        rows = rows.sort_values("data_scale")
        if len(rows) < 2:
            continue
        fit = fit_line(rows["data_scale"], rows["train_seconds"])
        accs = ", ".join(f"{int(r.data_scale):,}: {r.top1_mean:.2f}" for r in rows.itertuples(index=False))
        lines.append(f"| {method}:{preset} | {len(rows)} | {accs} | {fit.slope:.4f} | {fit.intercept:,.1f} | "
                     f"{fit.r2:.3f} |")
    return lines + [""]


def real_references(exp: pd.DataFrame, teacher: Path | None) -> list[str]:
    """The real-data rows (teacher, the student from scratch, KD on all data and on each
    real subset) and, for every data-free row, the size of the real subset that KD would
    need for the same top-1: interpolated linearly in log N between the subset points."""
    lines = ["## Against real data", ""]
    top1 = json.loads(teacher.read_text()).get("top1") if teacher is not None and teacher.is_file() else None
    if top1 is not None:
        lines.append(f"- teacher: {top1:.2f}%")
    scratch, kd_all = find(exp, "scratch", "cpu", 0), find(exp, "kd", "cpu", 0)
    for name, row in (("student from scratch, all 50,000 images", scratch), ("KD on all 50,000 images", kd_all)):
        lines.append(f"- {name}: {_mean_std(row)}" + ("" if row is None else f", train {row.train_seconds:,.0f} s"))
    subsets = exp[(exp["method"] == "kd") & (exp["preset"] == "cpu") & (exp["data_scale"] > 0)]
    subsets = subsets.sort_values("data_scale")
    points = [(float(r.data_scale), float(r.top1_mean)) for r in subsets.itertuples(index=False)]
    if kd_all is not None:
        points.append((50000.0, float(kd_all.top1_mean)))
    lines.append("")
    if len(points) < 2:
        return lines + ["KD on real subsets has not run at two sizes yet.", ""]
    lines += ["| data-free row | top-1 % | % of KD on all data | real images KD needs for it | for its 95% CI |",
              "|---|---:|---:|---:|---:|"]
    data_free = exp[~exp["method"].isin(["noise", "kd", "scratch"])].sort_values("top1_mean", ascending=False)
    for r in data_free.itertuples(index=False):
        share = "-" if kd_all is None else f"{100 * r.top1_mean / kd_all.top1_mean:.0f}"
        low, high = stats.interval(tables.top1_sample(r))
        span = "-" if math.isnan(low) else f"{real_equivalent(points, low)} to {real_equivalent(points, high)}"
        lines.append(f"| {r.label}{tables.scale_suffix(r.data_scale)} | {r.top1_mean:.2f} | {share} | "
                     f"{real_equivalent(points, r.top1_mean)} | {span} |")
    return lines + ["", "The fourth column reads the row's top-1 off the KD-on-a-real-subset curve (sizes "
                        + ", ".join(f"{int(n):,}" for n, _ in points) + "), linearly in log N; '<' and '>' where "
                        "it falls outside the curve; the fifth reads the ends of the row's t-based 95% interval "
                        "(stats.interval) off it. The curve is the mean over seeds and assumed monotone. KD on all "
                        "data runs its preset's epochs, which may differ from the subsets' (the study: 15 against 30). "
                        "Each subset's student steps grow with its size (ceil(N / batch) an epoch), so this column "
                        "compares data and steps together, not data alone.", ""]


def real_equivalent(points: list[tuple[float, float]], top1: float) -> str:
    """The real-subset size at which KD's curve ``points`` ((size, top-1), sorted by size)
    reaches ``top1``, interpolated linearly in log size; "<first" / ">last" outside it."""
    if top1 < points[0][1]:
        return f"<{int(points[0][0]):,}"
    for (n0, a0), (n1, a1) in zip(points, points[1:]):
        if a0 <= top1 <= a1 and a1 > a0:
            t = (top1 - a0) / (a1 - a0)
            return f"{math.exp(math.log(n0) + t * (math.log(n1) - math.log(n0))):,.0f}"
    return f">{int(points[-1][0]):,}"


def machines_and_time(runs: pd.DataFrame, teacher: Path | None) -> list[str]:
    lines = ["## Machines and CPU time", ""]
    envs = {}
    for path in runs["path"]:
        try:
            env = json.loads((Path(path) / "environment.json").read_text())
        except (OSError, ValueError):
            env = {}
        envs[path] = f"{env.get('device_name', '?')}, {env.get('threads', '?')} thread(s), " \
                     f"{env.get('precision', '?')}"
    counts = pd.Series(envs).value_counts()
    lines += [f"- {n} runs on {where}" for where, n in counts.items()]
    total = float(runs["total_seconds"].sum())
    train = float(runs["train_seconds"].sum())
    lines += ["", f"Runs: {len(runs)} completed, {total:,.0f} s of one thread each ({total / 3600:.1f} core-hours; "
                  f"{train / 3600:.1f} of them train time)."]
    if teacher is not None and teacher.is_file():
        meta = json.loads(teacher.read_text())
        own = float(meta.get("train_seconds", 0.0))
        before = float((meta.get("init_from") or {}).get("train_seconds", 0.0))
        threads = meta.get("threads", 1)
        lines.append(f"Teacher: {own + before:,.0f} s wall-clock on {threads} thread(s) ({before:,.0f} s for the "
                     f"first cycle, {own:,.0f} s for the second), {(own + before) * threads / 3600:.1f} core-hours.")
    return lines + [""]


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("results", help="the run records (reports/cpu-study/runs)")
    p.add_argument("--teacher", default=None, help="the teacher's metadata JSON")
    p.add_argument("--out", default=None, help="write the markdown here as well as to stdout")
    args = p.parse_args(argv)
    df, problems = report.load_summaries(Path(args.results))
    for where, why in problems:
        print(f"warning: skipped {where}: {why}", file=sys.stderr)
    done = completed_runs(df) if not df.empty else df
    if done.empty:
        print(f"no completed runs under {args.results}", file=sys.stderr)
        return 1
    exp = experiments(done)
    text = "\n".join(["# The CPU study's numbers", "",
                      f"Computed by `python benchmarks/study_numbers.py {args.results}` from the run records alone "
                      f"({len(done)} completed runs, {len(exp)} experiments).", "",
                      *ssdkd_vs_fast(exp), *step_control(exp, done), *noise_floor(exp), *ablations(exp), *dda(exp),
                      *scale_slopes(exp), *real_references(exp, Path(args.teacher) if args.teacher else None),
                      *machines_and_time(done, Path(args.teacher) if args.teacher else None)])
    print(text)
    if args.out:
        Path(args.out).write_text(text)
    return 0


if __name__ == "__main__":
    sys.exit(main())
