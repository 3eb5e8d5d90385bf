"""Issue 31: the statistics every claim carries, computed by the package (known
answers), and ``report --compare`` on a results tree with known per-seed numbers."""
from __future__ import annotations

import math

import pytest
from scipy import stats as st

from dfkd_bench import stats
from dfkd_bench.cli import main
from tests.test_report import fake_run

A, B = stats.Sample.of([1, 2, 3]), stats.Sample.of([4, 5, 6])


def test_welch_by_hand_and_against_scipy():
    d = stats.welch(A, B)
    # diff -3, se sqrt(1/3 + 1/3), df 4 (equal n and variances), t = -3 / se
    assert d.diff == -3 and d.se == pytest.approx(math.sqrt(2 / 3)) and d.df == pytest.approx(4)
    assert d.t == pytest.approx(-3.674235, abs=1e-6) and d.p == pytest.approx(0.021311, abs=1e-6)
    ref = st.ttest_ind([1, 2, 3], [4, 5, 6], equal_var=False)
    assert d.t == pytest.approx(ref.statistic) and d.p == pytest.approx(ref.pvalue)
    half = 2.776445 * math.sqrt(2 / 3)  # t(0.975, 4)
    assert (d.low, d.high) == (pytest.approx(-3 - half, abs=1e-5), pytest.approx(-3 + half, abs=1e-5))
    assert d.detected and "no detectable effect" not in d.sentence("a", "b")
    unequal = stats.welch(stats.Sample.of([0, 10, 20, 5]), stats.Sample.of([1, 2]))
    ref = st.ttest_ind([0, 10, 20, 5], [1, 2], equal_var=False)
    assert unequal.t == pytest.approx(ref.statistic) and unequal.p == pytest.approx(ref.pvalue)


def test_what_cannot_be_tested_says_so():
    one = stats.welch(stats.Sample.of([5.0]), B)
    assert math.isnan(one.p) and "not testable" in one.sentence() and not one.detected
    flat = stats.welch(stats.Sample.of([10, 10, 10]), stats.Sample.of([10, 10]))
    assert "no spread on either side" in flat.why_untestable
    assert "no detectable effect" in stats.welch(A, stats.Sample.of([1.5, 2, 2.5])).sentence()


def test_interval_of_a_mean():
    low, high = stats.interval(stats.Sample.of([1, 2, 3]))
    assert (low, high) == (pytest.approx(2 - 4.302653 / math.sqrt(3), abs=1e-5),
                           pytest.approx(2 + 4.302653 / math.sqrt(3), abs=1e-5))  # t(0.975, 2) = 4.3027


def test_tost_equivalence_and_its_interval():
    close = stats.tost(stats.Sample.of([50.0, 50.2, 49.8, 50.1]), stats.Sample.of([50.1, 49.9, 50.0, 50.2]), -2, 2)
    assert close.shown and close.p < 0.001 and close.interval[0] > -2 and close.interval[1] < 2
    far = stats.tost(A, B, -2, 2)
    assert not far.shown and far.p_high < 0.5 < far.p_low
    # p of each one-sided test by hand: t = (diff - margin) / se on df 4
    se = math.sqrt(2 / 3)
    assert far.p_low == pytest.approx(st.t.sf((-3 + 2) / se, 4)) and far.p_high == pytest.approx(st.t.cdf(-5 / se, 4))
    with pytest.raises(ValueError):
        stats.tost(A, B, 2, -2)


def test_variance_ratio_holm_and_seeds_needed():
    v = stats.variance_ratio(stats.Sample.of([0, 2, 4]), A)  # variances 4 and 1 on (2, 2) df
    assert v.ratio == pytest.approx(4) and v.p == pytest.approx(2 * st.f.sf(4, 2, 2))
    assert "no detectable difference in spread" in v.sentence()
    assert stats.holm([0.01, 0.04, 0.03]) == pytest.approx([0.03, 0.06, 0.06])
    # Cohen's table, two-sided alpha 0.05, power 0.8: d = 1.0 -> 17, 0.8 -> 26, 0.5 -> 64 per group
    assert [stats.seeds_needed(1, 1, d) for d in (1.0, 0.8, 0.5)] == [17, 26, 64]
    assert stats.seeds_needed(float("nan"), 1, 1) is None and stats.seeds_needed(10, 10, 0.01, most=50) is None


def test_kendall_tau_and_ranks():
    a = {"x": 1.0, "y": 2.0, "z": 3.0}
    assert stats.kendall_tau(a, {"x": 10.0, "y": 20.0, "z": 30.0, "w": 0.0}) == (1.0, 3)
    assert stats.kendall_tau(a, {"x": 10.0, "y": 30.0, "z": 20.0}) == (pytest.approx(1 / 3), 3)
    assert stats.ranks({"a": 3.0, "b": 5.0, "c": 5.0}) == {"a": 3, "b": 1, "c": 1}


def test_report_compare_writes_the_tests_and_refuses_unknown_names(tmp_path, capsys):
    root = tmp_path / "results"
    for seed, (s, f) in enumerate([(1.0, 4.0), (2.0, 5.0), (3.0, 6.0)]):
        fake_run(root, "ssdkd", "resnet20-resnet8", seed, s, 10.0, preset="cpu")
        fake_run(root, "fast", "resnet20-resnet8", seed, f, 40.0, preset="fast2-cpu")
    out = tmp_path / "rep"
    assert main(["report", "--results", str(root), "--out", str(out), "--compare", "ssdkd-cpu,fast2-cpu"]) == 0
    text = (out / "comparisons__cifar10.md").read_text()
    assert "| resnet20-resnet8 | ssdkd-cpu | fast-fast2-cpu | 2.00 ± 1.00 [3] | 5.00 ± 1.00 [3] | -3.00 [-5.27, -0.73]" \
           " | -3.67 (4.0), 0.0213 | A lower |" in text
    assert "| 0.25x | " in text  # train time 10 s against 40 s
    assert "Welch t = -3.67 (df 4.0), p = 0.0213: ssdkd-cpu lower" in capsys.readouterr().out
    assert main(["report", "--results", str(root), "--out", str(tmp_path / "other"), "--compare", "nosuch,fast2-cpu"]) \
        == 2
    assert "--compare 'nosuch' matches no run" in capsys.readouterr().err
    assert not (tmp_path / "other").exists()
    assert main(["report", "--results", str(root), "--compare", "a"]) == 2
    assert main(["report", "--results", str(root), "--margin", "-1"]) == 2
