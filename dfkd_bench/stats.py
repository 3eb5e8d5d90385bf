"""The statistics behind every claim a report or a study makes over seeds, in one place
(``report --compare``, the studies' numbers and findings quote these, never a hand
computation): Welch's t for a difference, t-based intervals, two one-sided tests
(TOST) for equivalence and non-inferiority, the variance-ratio F test, Holm's
correction for several contrasts, and the seeds a difference needs.

Every test works from a ``Sample`` (mean, standard deviation with n - 1, n), so the
same function serves per-seed values and the experiments table's mean/std/seeds. A
test that the samples cannot support (fewer than two seeds on a side, no spread on
either) says so in ``why_untestable`` instead of returning a number.
"""
from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Iterable, Sequence

from scipy import stats as st

ALPHA = 0.05


@dataclass(frozen=True)
class Sample:
    mean: float
    std: float  # sample standard deviation (n - 1); nan with one value
    n: int

    @classmethod
    def of(cls, values: Iterable[float]) -> "Sample":
        xs = [float(v) for v in values]
        if not xs:
            raise ValueError("a sample needs at least one value")
        mean = sum(xs) / len(xs)
        std = math.sqrt(sum((x - mean) ** 2 for x in xs) / (len(xs) - 1)) if len(xs) > 1 else math.nan
        return cls(mean, std, len(xs))

    @property
    def sem(self) -> float:
        return self.std / math.sqrt(self.n) if self.n > 1 else math.nan


def interval(sample: Sample, confidence: float = 0.95) -> tuple[float, float]:
    """The t-based ``confidence`` interval of the mean (nan without two values)."""
    if sample.n < 2:
        return math.nan, math.nan
    half = st.t.ppf(0.5 + confidence / 2, sample.n - 1) * sample.sem
    return sample.mean - half, sample.mean + half


def _untestable(a: Sample, b: Sample) -> str:
    if a.n < 2 or b.n < 2:
        return f"not testable: {min(a.n, b.n)} seed on one side (two or more on each are needed)"
    if a.std == 0 and b.std == 0:
        return "not testable: no spread on either side (every seed gave the same value)"
    return ""


@dataclass(frozen=True)
class Difference:
    """A - B by Welch's t test (unequal variances, Welch-Satterthwaite df)."""

    a: Sample
    b: Sample
    diff: float
    se: float
    df: float
    t: float
    p: float  # two-sided
    low: float  # the t-based interval of the difference at ``confidence``
    high: float
    confidence: float
    why_untestable: str = ""

    @property
    def detected(self) -> bool:
        return not self.why_untestable and self.p < ALPHA

    def sentence(self, a: str = "A", b: str = "B", unit: str = " points") -> str:
        """One line a finding can quote: the difference, its interval and test, and the
        verdict ("no detectable effect" where p >= 0.05)."""
        head = f"{a} - {b} = {self.diff:+.2f}{unit} (n = {self.a.n} vs {self.b.n})"
        if self.why_untestable:
            return f"{head}: {self.why_untestable}"
        verdict = f"{a} {'higher' if self.diff > 0 else 'lower'}" if self.detected else "no detectable effect"
        return (f"{head}, {self.confidence:.0%} CI [{self.low:+.2f}, {self.high:+.2f}], Welch t = {self.t:.2f} "
                f"(df {self.df:.1f}), p = {self.p:.3g}: {verdict}")


def welch(a: Sample, b: Sample, confidence: float = 0.95) -> Difference:
    diff = a.mean - b.mean
    why = _untestable(a, b)
    if why:
        return Difference(a, b, diff, math.nan, math.nan, math.nan, math.nan, math.nan, math.nan, confidence, why)
    va, vb = a.std ** 2 / a.n, b.std ** 2 / b.n
    se = math.sqrt(va + vb)
    df = (va + vb) ** 2 / (va ** 2 / (a.n - 1) + vb ** 2 / (b.n - 1))
    t = diff / se
    p = 2 * st.t.sf(abs(t), df)
    half = st.t.ppf(0.5 + confidence / 2, df) * se
    return Difference(a, b, diff, se, df, t, p, diff - half, diff + half, confidence)


@dataclass(frozen=True)
class Equivalence:
    """Two one-sided Welch tests that ``low < A - B < high`` (TOST). ``p`` is the larger
    of the two one-sided p values; equivalence is shown when it is below alpha, which is
    the same as the (1 - 2 alpha) interval lying inside the margins."""

    difference: Difference
    low_margin: float
    high_margin: float
    p_low: float  # H0: A - B <= low_margin
    p_high: float  # H0: A - B >= high_margin
    interval: tuple[float, float]  # the (1 - 2 alpha) interval of A - B

    @property
    def p(self) -> float:
        return max(self.p_low, self.p_high)

    @property
    def shown(self) -> bool:
        return not self.difference.why_untestable and self.p < ALPHA

    def sentence(self, a: str = "A", b: str = "B", unit: str = " points") -> str:
        d = self.difference
        head = f"{a} - {b} = {d.diff:+.2f}{unit}, margins [{self.low_margin:+g}, {self.high_margin:+g}]"
        if d.why_untestable:
            return f"{head}: {d.why_untestable}"
        verdict = "equivalent within the margins" if self.shown else "equivalence not shown"
        return (f"{head}: TOST p = {self.p:.3g} (lower {self.p_low:.3g}, upper {self.p_high:.3g}; "
                f"{1 - 2 * ALPHA:.0%} CI [{self.interval[0]:+.2f}, {self.interval[1]:+.2f}], df {d.df:.1f}): "
                f"{verdict}")


def tost(a: Sample, b: Sample, low_margin: float, high_margin: float) -> Equivalence:
    if not low_margin < high_margin:
        raise ValueError(f"margins {low_margin}, {high_margin}: the low one must be below the high one")
    d = welch(a, b, confidence=1 - 2 * ALPHA)
    if d.why_untestable:
        return Equivalence(d, low_margin, high_margin, math.nan, math.nan, (math.nan, math.nan))
    p_low = st.t.sf((d.diff - low_margin) / d.se, d.df)
    p_high = st.t.cdf((d.diff - high_margin) / d.se, d.df)
    return Equivalence(d, low_margin, high_margin, p_low, p_high, (d.low, d.high))


def non_inferior(a: Sample, b: Sample, margin: float) -> tuple[float, str]:
    """One-sided Welch test of H0: A - B <= -margin. Returns (p, why_untestable)."""
    d = welch(a, b)
    if d.why_untestable:
        return math.nan, d.why_untestable
    return st.t.sf((d.diff + margin) / d.se, d.df), ""


@dataclass(frozen=True)
class VarianceRatio:
    ratio: float  # var A / var B
    df: tuple[int, int]
    p: float  # two-sided F test
    why_untestable: str = ""

    def sentence(self, a: str = "A", b: str = "B") -> str:
        if self.why_untestable:
            return f"variance ratio {a}/{b}: {self.why_untestable}"
        verdict = "different spreads" if self.p < ALPHA else "no detectable difference in spread"
        return (f"variance ratio {a}/{b} = {self.ratio:.3g} on ({self.df[0]}, {self.df[1]}) df, F test p = "
                f"{self.p:.3g}: {verdict}")


def variance_ratio(a: Sample, b: Sample) -> VarianceRatio:
    why = _untestable(a, b) or ("not testable: no spread on one side" if a.std == 0 or b.std == 0 else "")
    if why:
        return VarianceRatio(math.nan, (a.n - 1, b.n - 1), math.nan, why)
    ratio = a.std ** 2 / b.std ** 2
    one = st.f.sf(ratio, a.n - 1, b.n - 1) if ratio >= 1 else st.f.cdf(ratio, a.n - 1, b.n - 1)
    return VarianceRatio(ratio, (a.n - 1, b.n - 1), min(1.0, 2 * one))


def holm(pvalues: Sequence[float]) -> list[float]:
    """Holm-Bonferroni adjusted p values, in the order given (nan stays nan)."""
    ranked = sorted((p, i) for i, p in enumerate(pvalues) if not math.isnan(p))
    m, running, out = len(ranked), 0.0, [math.nan] * len(pvalues)
    for k, (p, i) in enumerate(ranked):
        running = max(running, min(1.0, (m - k) * p))
        out[i] = running
    return out


SEEDS_NEEDED_MOST = 1000  # seeds_needed's search stops here


def seeds_needed(std_a: float, std_b: float, delta: float, alpha: float = ALPHA, power: float = 0.8,
                 most: int = SEEDS_NEEDED_MOST) -> int | None:
    """The fewest seeds per arm (equal arms) at which a two-sided Welch test at ``alpha``
    detects a true difference ``delta`` with probability ``power``, given each arm's
    standard deviation (noncentral t); None if more than ``most`` are needed or the
    standard deviations are not known."""
    if not all(math.isfinite(x) for x in (std_a, std_b, delta)) or delta == 0:
        return None
    for n in range(2, most + 1):
        va, vb = std_a ** 2 / n, std_b ** 2 / n
        se = math.sqrt(va + vb)
        if se == 0:
            return n
        df = (va + vb) ** 2 / (va ** 2 / (n - 1) + vb ** 2 / (n - 1))
        crit = st.t.ppf(1 - alpha / 2, df)
        nc = abs(delta) / se
        if st.nct.sf(crit, df, nc) + st.nct.cdf(-crit, df, nc) >= power:
            return n
    return None


def kendall_tau(ours: dict[str, float], theirs: dict[str, float]) -> tuple[float, int]:
    """Kendall's tau-a between two scorings over the keys they share (ties neither
    concordant nor discordant), and how many keys that is; nan below two."""
    keys = sorted(set(ours) & set(theirs))
    n = len(keys)
    if n < 2:
        return math.nan, n
    score = 0
    for i in range(n):
        for j in range(i + 1, n):
            x = ours[keys[i]] - ours[keys[j]]
            y = theirs[keys[i]] - theirs[keys[j]]
            score += (x * y > 0) - (x * y < 0)
    return score / (n * (n - 1) / 2), n


def ranks(scores: dict[str, float]) -> dict[str, int]:
    """1 for the highest score; equal scores share the better rank."""
    ordered = sorted(scores.values(), reverse=True)
    return {k: ordered.index(v) + 1 for k, v in scores.items()}
