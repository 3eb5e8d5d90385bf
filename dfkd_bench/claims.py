"""A study's claims, each decided by a stated rule over its arms' seeds, by ``stats``
(``dfkd-bench report --claims FILE``). The rules are written down before the runs and read
by the report, so a finding quotes a verdict the package computed, never one made by hand.

A claims file is YAML: a ``claims:`` mapping, alone or inside the study's grid file::

    claims:
      margin: 2                  # the default margin of the tests, in points of the metric
      seed_budget: 5             # optional: the most seeds an arm the study can afford
      arms:                      # a name for each experiment a claim reads
        F: fast-fast2            # a method label, name, method:preset or preset
        S: {label: ssdkd-paper, task_target: teacher, kd_passes: 1}   # plus settings that pick one
      tests:
        - claim: "Table 1: SSD-KD within the margin of Fast2 at a third of its train time"
          a: S
          b: F
          rule: non-inferior     # or higher, differ
          time_ratio: 0.35       # and A's mean train time at most 0.35x B's
        - {claim: "SSD-KD's parts balance the buffer", a: S, b: N, rule: higher, metric: pool_entropy}

Rules (alpha 0.05, Welch's unequal-variance t throughout):
- ``higher``: holds where Welch's two-sided test finds A above B; "does not hold" where it
  finds A below B; otherwise "no detectable effect", with TOST within the margin and the
  seeds a margin-sized difference needs.
- ``differ``: two-sided, no side predicted: "A higher", "A lower" or "no detectable effect".
- ``non-inferior``: holds where a one-sided test shows A - B > -margin and the time ratio
  is met; "does not hold" where a one-sided test shows A - B < -margin (A worse than B by
  more than the margin) or the time ratio is missed; otherwise undecided.
A claim an arm has no completed run for, or fewer than two seeds on a side, says so.
With a ``seed_budget``, a claim left undecided whose needed-seeds estimate (from the seeds'
standard deviations so far) exceeds the budget is called untestable at that budget, with
the seeds an arm that would test it.

Metrics: ``top1`` (the final top-1, or mIoU for segmentation), ``pool_entropy`` (the
normalised class entropy of the final pool or buffer, as the teacher labels it:
``diagnostics.json``), ``pool_confidence`` (the teacher's mean top-class probability over
the final pool, ``diagnostics.json``: how hard the samples a student last learnt from are),
``pool_phi`` (the mean over the final pool of SSD-KD's Eq. 3,
``(1 - class share) * (1 - confidence)^gamma`` with both terms on, at the run's gamma or
SSD-KD's default: one scale for arms whose own phi is partly or wholly off).
"""
from __future__ import annotations

import json
import math
import re
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pandas as pd
import yaml

from . import diagnostics, stats
from .errors import UserError
from .runs import LOADED_SHARE, cpu_train_seconds, median_epoch_train_seconds, run_threads, timing_notes
from .tables import MISSING, Table, format_seconds, sample_cell

RULES = ("higher", "differ", "non-inferior")
METRICS = ("top1", "pool_entropy", "pool_confidence", "pool_phi")
SUMMARY_KEYS = {"pool_entropy": "normalised_entropy", "pool_confidence": "confidence_mean"}  # in diagnostics.json
TEST_KEYS = {"claim", "a", "b", "rule", "metric", "margin", "time_ratio"}
ARM_LABEL = "label"


@dataclass(frozen=True)
class Arm:
    name: str
    label: str  # a method label, name, method:preset or preset (``report.of_methods``)
    settings: dict[str, Any] = field(default_factory=dict)  # values the run's settings must hold

    def describe(self) -> str:
        shown = ", ".join(f"{k}={v}" for k, v in self.settings.items())
        return f"{self.label} ({shown})" if shown else self.label


@dataclass(frozen=True)
class Test:
    claim: str
    a: str
    b: str
    rule: str
    metric: str = "top1"
    margin: float = 2.0
    time_ratio: float | None = None


@dataclass(frozen=True)
class Claims:
    arms: dict[str, Arm]
    tests: list[Test]
    seed_budget: int | None = None  # the most seeds an arm the study can afford


def load_claims(path: Path) -> Claims:
    """The claims of a YAML file (its ``claims:`` mapping); anything unknown or malformed
    is a one-line ``UserError`` naming the file, the key and what is accepted."""
    where = f"claims file {path}"
    try:
        data = yaml.safe_load(Path(path).read_text())
    except (OSError, UnicodeDecodeError) as exc:
        raise UserError(f"{where} cannot be read ({getattr(exc, 'strerror', None) or exc}); give a YAML file "
                        "with a claims: mapping") from None
    except yaml.YAMLError as exc:
        raise UserError(f"{where} is not valid YAML ({str(exc).splitlines()[0]})") from None
    return parse_claims(data.get("claims") if isinstance(data, dict) else None, where)


def parse_claims(body, where: str) -> Claims:
    """The claims of a parsed ``claims:`` mapping (``where`` names its file in errors)."""
    if not isinstance(body, dict):
        raise UserError(f"{where} has no claims: mapping (with arms: and tests:); see `dfkd-bench report --help`")
    unknown = sorted(set(body) - {"arms", "tests", "margin", "seed_budget"}, key=str)
    if unknown:
        raise UserError(f"{where}: unknown key claims.{unknown[0]}; known: arms, margin, seed_budget, tests")
    margin = _positive(body.get("margin", 2.0), f"{where}: claims.margin")
    budget = body.get("seed_budget")
    if budget is not None and (isinstance(budget, bool) or not isinstance(budget, int) or budget < 2):
        raise UserError(f"{where}: claims.seed_budget is {budget!r}; expected a whole number of seeds an arm, 2 or more")
    arms = _arms(body.get("arms"), where)
    tests = body.get("tests")
    if not isinstance(tests, list) or not tests:
        raise UserError(f"{where}: claims.tests must be a non-empty list of tests (claim, a, b, rule)")
    return Claims(arms, [_test(t, i, arms, margin, where) for i, t in enumerate(tests)], budget)


def _positive(value, what: str) -> float:
    if isinstance(value, bool) or not isinstance(value, (int, float)) or not value > 0 or not math.isfinite(value):
        raise UserError(f"{what} is {value!r}; expected a positive number")
    return float(value)


def _arms(raw, where: str) -> dict[str, Arm]:
    if not isinstance(raw, dict) or not raw:
        raise UserError(f"{where}: claims.arms must map each arm's name to a label or to {{label: ..., setting: value}}")
    arms = {}
    for name, spec in raw.items():
        if isinstance(spec, str):
            spec = {ARM_LABEL: spec}
        if not isinstance(spec, dict) or not isinstance(spec.get(ARM_LABEL), str):
            raise UserError(f"{where}: arm {name!r} needs a label (a method label, name or preset), "
                            "alone or as {label: ..., setting: value}")
        settings = {str(k): v for k, v in spec.items() if k != ARM_LABEL}
        arms[str(name)] = Arm(str(name), spec[ARM_LABEL], settings)
    return arms


def _test(raw, i: int, arms: dict[str, Arm], margin: float, where: str) -> Test:
    at = f"{where}: claims.tests[{i}]"
    if not isinstance(raw, dict):
        raise UserError(f"{at} must be a mapping with claim, a, b and rule")
    unknown = sorted(set(raw) - TEST_KEYS, key=str)
    if unknown:
        raise UserError(f"{at}: unknown key {unknown[0]!r}; known: {', '.join(sorted(TEST_KEYS))}")
    missing = [k for k in ("claim", "a", "b", "rule") if k not in raw]
    if missing:
        raise UserError(f"{at} has no {missing[0]}; each test needs claim, a, b and rule")
    for side in ("a", "b"):
        if str(raw[side]) not in arms:
            raise UserError(f"{at}: {side} {raw[side]!r} is not an arm; arms: {', '.join(arms)}")
    if raw["a"] == raw["b"]:
        raise UserError(f"{at}: a and b are both {raw['a']!r}; a test compares two arms")
    if raw["rule"] not in RULES:
        raise UserError(f"{at}: rule {raw['rule']!r} unknown; accepted: {', '.join(RULES)}")
    metric = raw.get("metric", "top1")
    if metric not in METRICS:
        raise UserError(f"{at}: metric {metric!r} unknown; accepted: {', '.join(METRICS)}")
    ratio = raw.get("time_ratio")
    if ratio is not None and raw["rule"] != "non-inferior":
        raise UserError(f"{at}: time_ratio belongs to the non-inferior rule, not {raw['rule']!r}")
    return Test(str(raw["claim"]), str(raw["a"]), str(raw["b"]), raw["rule"], metric,
                _positive(raw.get("margin", margin), f"{at}: margin"),
                None if ratio is None else _positive(ratio, f"{at}: time_ratio"))


# --- reading the runs -----------------------------------------------------------------

def arm_runs(done: pd.DataFrame, arm: Arm, matches) -> pd.DataFrame:
    """The completed runs of ``arm`` (``matches``: ``report.of_methods``). Settings are
    read as written or under ``run.`` (``kd_passes`` is ``run.kd_passes``). An arm whose
    runs are more than one experiment is a ``UserError`` naming the settings that differ."""
    if done.empty:
        return done
    runs = done[matches(done, [arm.label])]
    for key, value in arm.settings.items():
        runs = runs.loc[runs["settings"].map(lambda s: _setting(s, key) == value).astype(bool)]
    ids = runs.groupby(["dataset", "pair", "config_id"], dropna=False).ngroups if not runs.empty else 0
    if ids > 1:
        configs = list({r.config_id: r.settings for r in runs.itertuples()}.values())
        differ = sorted(k for k in set().union(*configs) if len({repr(c.get(k)) for c in configs}) > 1)
        raise UserError(f"claims arm {arm.name} ({arm.describe()}) matches {ids} experiments; add settings that "
                        f"pick one (they differ in {', '.join(differ[:6]) or 'data set or pair'})")
    return runs


def _setting(settings: dict, key: str):
    return settings[key] if key in settings else settings.get(f"run.{key}")


def metric_values(runs: pd.DataFrame, metric: str) -> list[float]:
    """Each run's value of ``metric`` (one per seed); runs without diagnostics are left
    out of the pool metrics (the table's n says how many were read)."""
    return [v for v in (run_value(row, metric) for row in runs.itertuples()) if v is not None]


def run_value(row, metric: str) -> float | None:
    """One run's (a row of the runs frame) value of ``metric``; None for a pool metric of a
    run without diagnostics."""
    if metric == "top1":
        return float(row.final_top1)
    path = Path(row.path)
    return pool_phi(path, row.settings) if metric == "pool_phi" else pool_summary(path, SUMMARY_KEYS[metric])


def pool_summary(run: Path, key: str) -> float | None:
    """A number of the run's final-pool summary (``diagnostics.json``), None where it has none."""
    try:
        return float(json.loads((run / diagnostics.DIAGNOSTICS_SUMMARY).read_text())[key])
    except (OSError, ValueError, KeyError, TypeError):
        return None


def pool_phi(run: Path, settings: dict) -> float | None:
    arrays = diagnostics.read(run)
    if arrays is None or not len(arrays["classes"]):
        return None
    return diagnostics.modulating_mean(arrays, float(settings.get("gamma", ssdkd_gamma())))


def ssdkd_gamma() -> float:
    """SSD-KD's default difficulty exponent, for arms whose settings have none."""
    from .registry import METHODS

    return float(METHODS.get("ssdkd").config_cls().gamma)


# --- deciding -------------------------------------------------------------------------

def decide(test: Test, a: stats.Sample, b: stats.Sample, train_ratio: float,
           seed_budget: int | None = None) -> tuple[str, float, str]:
    """The verdict of ``test`` on samples ``a`` and ``b`` (and A's train time over B's),
    with the p value the rule rests on and the test that gave it; an undecided one past
    ``seed_budget`` seeds an arm is called untestable at that budget."""
    d = stats.welch(a, b)
    if d.why_untestable:
        return d.why_untestable, math.nan, "-"
    more = _seeds_note(a, b, test.margin, seed_budget)
    if test.rule == "non-inferior":
        p_non_inferior, _ = stats.non_inferior(a, b, test.margin)
        p_inferior = 1 - p_non_inferior  # H0: A - B >= -margin, the one-sided test the other way
        slow = test.time_ratio is not None and not train_ratio <= test.time_ratio
        time_note = "" if test.time_ratio is None else \
            f" at {train_ratio:.2f}x B's train time ({'over' if slow else 'within'} {test.time_ratio:g}x)"
        if p_inferior < stats.ALPHA:
            return f"does not hold: A below B by more than {test.margin:g}{time_note}", p_inferior, \
                f"one-sided Welch, H0 A - B >= -{test.margin:g}"
        if slow:
            return f"does not hold: train time{time_note}", p_non_inferior, \
                f"one-sided Welch, H0 A - B <= -{test.margin:g}"
        if p_non_inferior < stats.ALPHA:
            return f"holds: A - B > -{test.margin:g} shown{time_note}", p_non_inferior, \
                f"one-sided Welch, H0 A - B <= -{test.margin:g}"
        return f"undecided{more}", p_non_inferior, f"one-sided Welch, H0 A - B <= -{test.margin:g}"
    side = "A higher" if d.diff > 0 else "A lower"
    if d.detected:
        if test.rule == "higher":
            return ("holds: " if d.diff > 0 else "does not hold: ") + side, d.p, "Welch, two-sided"
        return side, d.p, "Welch, two-sided"
    e = stats.tost(a, b, -test.margin, test.margin)
    equal = f"; equivalent within ±{test.margin:g} (TOST p {e.p:.3g})" if e.shown else more
    return f"no detectable effect{equal}", d.p, "Welch, two-sided"


def _seeds_note(a: stats.Sample, b: stats.Sample, margin: float, budget: int | None) -> str:
    """What an undecided verdict adds: the seeds an arm a margin-sized difference needs
    (estimated from the standard deviations so far), and whether that is past the budget."""
    if not all(math.isfinite(x) for x in (a.std, b.std)):
        return ""
    need = stats.seeds_needed(a.std, b.std, margin)
    needed = f"{need}" if need else f"more than {stats.SEEDS_NEEDED_MOST}"
    if budget is not None and (need is None or need > budget):
        return f"; untestable at {budget} seeds an arm: {needed} would detect ±{margin:g}"
    return f"; {needed} seeds an arm would detect ±{margin:g}"


def headline(verdict: str) -> str:
    """A verdict's first clause ("holds", "does not hold", "no detectable effect", ...), and
    where the claim is untestable at the seed budget, that budget and the seeds it needs:
    what a figure prints beside a claim."""
    first = verdict.split(":")[0].split(";")[0]
    budget = re.search(r"untestable at (\d+) seeds an arm: (.+?) would detect", verdict)
    return f"{first}; untestable at {budget[1]} seeds ({budget[2]} needed)" if budget else first


def claims_table(done: pd.DataFrame, claims: Claims, matches) -> Table:
    """One row per test: both arms' samples, A - B with its 95 % interval, the p value
    the rule rests on and its Holm-adjusted value over every test of the file, the time
    ratios and the verdict."""
    rows, raw = [], []
    for test in claims.tests:
        arm_a, arm_b = claims.arms[test.a], claims.arms[test.b]
        runs_a, runs_b = arm_runs(done, arm_a, matches), arm_runs(done, arm_b, matches)
        va, vb = metric_values(runs_a, test.metric), metric_values(runs_b, test.metric)
        row = {"claim": test.claim, "a": f"{test.a}: {arm_a.describe()}", "b": f"{test.b}: {arm_b.describe()}",
               "metric": test.metric, "rule": test.rule, "margin": test.margin, "n_a": len(va), "n_b": len(vb)}
        if not va or not vb:
            empty = [name for name, v in ((test.a, va), (test.b, vb)) if not v]
            row.update(verdict=f"not run yet: no completed run of {' or '.join(empty)} with this metric",
                       p=math.nan, test="-")
        else:
            a, b = stats.Sample.of(va), stats.Sample.of(vb)
            d = stats.welch(a, b)
            train = runs_a["train_seconds"].mean() / runs_b["train_seconds"].mean()
            total = runs_a["total_seconds"].mean() / runs_b["total_seconds"].mean()
            robust = median_train_ratio(runs_a, runs_b)
            cpu, cpu_runs = cpu_train_ratio(runs_a, runs_b) or (None, "")
            verdict, p, how = decide(test, a, b, train, claims.seed_budget)
            for reading, ratio in (("median-epoch", robust), ("CPU-seconds", cpu)):
                if test.time_ratio is not None and ratio is not None and (ratio <= test.time_ratio) != (
                        train <= test.time_ratio):
                    verdict += f"; the {reading} train time ratio, {ratio:.2f}x, lies on the other side"
            notes = timing_notes([*runs_a["path"], *runs_b["path"]])
            if notes and test.time_ratio is not None:
                verdict += f"; caveat on its time ratio: {'; '.join(notes)}"
            row.update(mean_a=a.mean, std_a=a.std, mean_b=b.mean, std_b=b.std, diff=d.diff, ci_low=d.low,
                       ci_high=d.high, welch_t=d.t, df=d.df, p=p, test=how, train_time_ratio=train,
                       total_time_ratio=total, median_train_time_ratio=robust,
                       cpu_train_time_ratio=cpu, cpu_runs=cpu_runs,
                       times_note=f" ({'; '.join(notes)})" if notes else "", verdict=verdict)
        raw.append(row)
    for row, adjusted in zip(raw, stats.holm([r["p"] for r in raw])):
        row["holm_p"] = adjusted
        rows.append(_cells(row))
    columns = ["claim", "A", "B", "metric, rule", "A: mean ± std [n]", "B: mean ± std [n]", "A - B [95% CI]",
               "test: p (Holm)", "time A/B (train, total; median-epoch train; CPU train)", "verdict"]
    notes = ["Each claim's rule as the claims file states it (see `dfkd_bench.claims`): mean ± std [seeds]; A - B "
             "with Welch's t-based 95% interval; p is the test the verdict rests on, Holm-adjusted over every claim "
             "of the file in brackets (a verdict reads the unadjusted p; the adjusted one says what survives the "
             "family); time ratios are A's mean train and total seconds over B's, then the same for train time as "
             "each run's median epoch makes it (warm-up and distillation epochs apart: a stretch of load on a shared "
             "machine moves it little, load that lasts does), then train time in the processes' CPU seconds where "
             "the runs kept them (what other work took from them left out; over the runs that kept them, said where "
             "not all did), with, in brackets, runs from two machine kinds or "
             f"runs whose threads had less than {LOADED_SHARE:.0%} of their cores' time (where the clock kept CPU "
             "seconds). "
             "Computed by dfkd_bench.stats and dfkd_bench.runs."]
    return Table("Claims", columns, rows, set(), notes, pd.DataFrame(raw))


def median_train_ratio(runs_a: pd.DataFrame, runs_b: pd.DataFrame) -> float | None:
    """A's mean median-epoch train seconds over B's (``runs.median_epoch_train_seconds``),
    or None where a run lacks a complete epoch record."""
    def mean(runs: pd.DataFrame) -> float | None:
        seconds = [median_epoch_train_seconds(r.path, int(r.settings.get("run.warmup_epochs", 0) or 0))
                   for r in runs.itertuples()]
        return None if any(s is None for s in seconds) else sum(seconds) / len(seconds)

    a, b = mean(runs_a), mean(runs_b)
    return None if a is None or not b else a / b


def cpu_train_ratio(runs_a: pd.DataFrame, runs_b: pd.DataFrame) -> tuple[float, str] | None:
    """A's mean train time in CPU seconds over B's (``runs.cpu_train_seconds``), over the runs
    that kept them, and which those are where not all did ("1/3 vs 2/2 runs"); None where a
    side has none."""
    a = [s for s in map(cpu_train_seconds, runs_a["path"]) if s is not None]
    b = [s for s in map(cpu_train_seconds, runs_b["path"]) if s is not None]
    if not a or not b or not sum(b):
        return None
    some = "" if (len(a), len(b)) == (len(runs_a), len(runs_b)) else \
        f" over {len(a)}/{len(runs_a)} vs {len(b)}/{len(runs_b)} runs"
    return (sum(a) / len(a)) / (sum(b) / len(b)), some


def _cells(row: dict) -> list[str]:
    digits = 2 if row["metric"] == "top1" else 4  # points of top-1; entropy, confidence and phi lie in [0, 1]

    def sample(side: str) -> str:
        mean, std, n = row.get(f"mean_{side}"), row.get(f"std_{side}"), row[f"n_{side}"]
        return f"{MISSING} [{n}]" if mean is None else sample_cell(mean, std, n, digits)

    has = row.get("mean_a") is not None
    diff = MISSING if not has else f"{row['diff']:+.{digits}f}" + \
        ("" if math.isnan(row["ci_low"]) else f" [{row['ci_low']:+.{digits}f}, {row['ci_high']:+.{digits}f}]")
    p = MISSING if math.isnan(row["p"]) else f"{row['test']}: {row['p']:.3g} ({row['holm_p']:.3g})"
    robust, cpu = row.get("median_train_time_ratio"), row.get("cpu_train_time_ratio")
    times = MISSING if not has else f"{row['train_time_ratio']:.2f}x, {row['total_time_ratio']:.2f}x" + \
        ("" if robust is None else f"; {robust:.2f}x") + \
        ("" if cpu is None else f"; CPU {cpu:.2f}x{row['cpu_runs']}") + row.get("times_note", "")
    metric = row["metric"] + (f", {row['rule']} ±{row['margin']:g}" if row["rule"] != "differ" else ", differ")
    return [row["claim"], row["a"], row["b"], metric, sample("a"), sample("b"), diff, p, times, row["verdict"]]


# --- the arms themselves ------------------------------------------------------------------

METRIC_NAMES = {"top1": "top-1", "pool_entropy": "pool class entropy", "pool_confidence": "teacher confidence",
                "pool_phi": "mean phi"}


def arm_values(done: pd.DataFrame, claims: Claims, matches) -> pd.DataFrame:
    """One row per completed run of each arm, in the claims file's order of arms then by
    seed: every metric (NaN for a pool metric of a run without diagnostics), its recorded
    train and total seconds, its train time in CPU seconds (NaN where not kept) and its
    threads. What ``arms_table`` summarises and ``figures.arms_figure`` draws."""
    rows = []
    for arm in claims.arms.values():
        for run in arm_runs(done, arm, matches).sort_values("seed").itertuples():
            value = {m: run_value(run, m) for m in METRICS}
            cpu = cpu_train_seconds(run.path)
            rows.append({"arm": arm.name, "seed": int(run.seed), **{m: math.nan if v is None else v
                                                                     for m, v in value.items()},
                         "train_seconds": float(run.train_seconds), "total_seconds": float(run.total_seconds),
                         "cpu_train_seconds": math.nan if cpu is None else cpu, "threads": run_threads(Path(run.path))})
    return pd.DataFrame(rows, columns=["arm", "seed", *METRICS, "train_seconds", "total_seconds",
                                       "cpu_train_seconds", "threads"])


def arms_table(values: pd.DataFrame, claims: Claims) -> Table:
    """The study table: per arm its final top-1 seed by seed, mean ± std [n] with the
    t-based 95 % interval of the mean (``stats.interval``), its final pool's mean readings
    where it keeps one, and its mean train time, recorded and in CPU seconds over the runs
    that kept them. The notes count the runs and their core-hours (total seconds times
    threads)."""
    seeds = sorted(set(values["seed"]))
    rows, raw = [], []
    for arm in claims.arms.values():
        runs = values[values["arm"] == arm.name]
        top1 = dict(zip(runs["seed"], runs["top1"]))
        row: dict[str, Any] = {"arm": arm.name, "experiment": arm.describe(), "runs": len(runs),
                               **{f"top1_seed{s}": top1.get(s, math.nan) for s in seeds}}
        cells = [f"{arm.name}: {arm.describe()}", *(f"{top1[s]:.2f}" if s in top1 else MISSING for s in seeds)]
        for metric in METRICS:
            read = runs[metric].dropna()
            sample = stats.Sample.of(read) if len(read) else None
            low, high = stats.interval(sample) if sample else (math.nan, math.nan)
            row.update({f"{metric}_mean": sample.mean if sample else math.nan,
                        f"{metric}_std": sample.std if sample else math.nan, f"{metric}_n": len(read),
                        f"{metric}_ci_low": low, f"{metric}_ci_high": high})
            cells.append(MISSING if sample is None else
                         sample_cell(sample.mean, sample.std, sample.n, 2 if metric == "top1" else 4))
            if metric == "top1":
                cells.append(MISSING if math.isnan(low) else f"[{low:.2f}, {high:.2f}]")
        cpu = runs["cpu_train_seconds"].dropna()  # an empty column's mean is NaN
        row.update(train_seconds=runs["train_seconds"].mean(), cpu_train_seconds=cpu.mean(), cpu_runs=len(cpu))
        cpu_cell = f"{format_seconds(row['cpu_train_seconds'])} " if len(cpu) else "not kept "
        cells += [format_seconds(row["train_seconds"]), f"{cpu_cell}[{len(cpu)}/{len(runs)}]"]
        rows.append(cells)
        raw.append(row)
    columns = ["arm", *(f"seed {s}" for s in seeds), "top-1: mean ± std [n]", "top-1: 95% CI",
               *(f"{METRIC_NAMES[m]}: mean ± std [n]" for m in METRICS[1:]), "train time (recorded)",
               "train time (CPU seconds) [runs]"]
    core_hours = (values["total_seconds"] * values["threads"]).sum() / 3600
    notes = ["Each arm of the claims file with its completed runs: final top-1 seed by seed, mean ± std [seeds] and "
             "the t-based 95% interval of the mean; over the final pool, where the arm keeps one "
             "(`diagnostics.json`), its normalised class entropy, the teacher's mean confidence and the mean of "
             "SSD-KD's Eq. 3 phi (the claims' pool metrics); the mean recorded train time, and train time in the "
             "processes' CPU seconds over the runs that kept them. Computed by dfkd_bench.stats.",
             f"{len(values)} completed runs of the arms, {core_hours:.1f} core-hours (each run's total seconds times "
             "its threads)."]
    return Table("Arms", columns, rows, set(), notes, pd.DataFrame(raw))
