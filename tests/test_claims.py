"""``report --claims``: a study's rules decided over its arms' seeds (``dfkd_bench.claims``),
checked against scipy's own Welch tests and on a results tree with known numbers."""
from __future__ import annotations

import json
import math

import numpy as np
import pandas as pd
import pytest
from scipy import stats as st

from dfkd_bench import claims, diagnostics, stats
from dfkd_bench.cli import main
from dfkd_bench.errors import UserError
from dfkd_bench.report import of_methods, write_report
from tests.test_report import fake_run


def sample(*xs):
    return stats.Sample.of(xs)


def rule(name, margin=2.0, time_ratio=None):
    return claims.Test("c", "A", "B", name, "top1", margin, time_ratio)


A_HIGH, B = (71.0, 72.0, 73.0), (70.0, 70.5, 71.0)


def test_non_inferior_holds_with_scipys_one_sided_welch_p():
    verdict, p, how = claims.decide(rule("non-inferior", time_ratio=0.35), sample(*A_HIGH), sample(*B), 0.2)
    expected = st.ttest_ind(np.array(A_HIGH) + 2.0, B, equal_var=False, alternative="greater").pvalue
    assert verdict.startswith("holds") and "0.20x" in verdict and math.isclose(p, expected, rel_tol=1e-9)
    assert how == "one-sided Welch, H0 A - B <= -2"


def test_non_inferior_fails_when_shown_worse_by_more_than_the_margin_or_too_slow():
    low = (60.0, 61.0, 62.0)
    verdict, p, _ = claims.decide(rule("non-inferior"), sample(*low), sample(*B), 0.1)
    expected = st.ttest_ind(np.array(low) + 2.0, B, equal_var=False, alternative="less").pvalue
    assert verdict.startswith("does not hold: A below B by more than 2") and math.isclose(p, expected, rel_tol=1e-9)
    verdict, _, _ = claims.decide(rule("non-inferior", time_ratio=0.35), sample(*A_HIGH), sample(*B), 0.5)
    assert verdict == "does not hold: train time at 0.50x B's train time (over 0.35x)"


def test_non_inferior_with_wide_seeds_is_undecided_and_says_how_many_seeds():
    verdict, _, _ = claims.decide(rule("non-inferior"), sample(60.0, 70.0, 80.0), sample(65.0, 70.0, 75.0), 0.1)
    assert verdict.startswith("undecided; ") and "seeds an arm would detect ±2" in verdict


def test_a_seed_budget_calls_an_undecided_claim_untestable_past_it_and_not_within_it():
    wide, narrow = sample(60.0, 70.0, 80.0), sample(65.0, 70.0, 75.0)
    need = stats.seeds_needed(wide.std, narrow.std, 2.0)
    assert need is not None and need > 5  # stds 10 and 5 against a margin of 2
    verdict, _, _ = claims.decide(rule("non-inferior"), wide, narrow, 0.1, seed_budget=5)
    assert verdict == f"undecided; untestable at 5 seeds an arm: {need} would detect ±2"
    verdict, _, _ = claims.decide(rule("differ"), wide, narrow, 1.0, seed_budget=need)
    assert verdict == f"no detectable effect; {need} seeds an arm would detect ±2"
    hopeless = claims.decide(rule("differ"), sample(0.0, 100.0), sample(0.0, 100.0), 1.0, seed_budget=5)[0]
    assert hopeless == f"no detectable effect; untestable at 5 seeds an arm: more than {stats.SEEDS_NEEDED_MOST} " \
                       "would detect ±2"
    # a decided claim says nothing of seeds, whatever the budget
    assert claims.decide(rule("higher"), sample(*A_HIGH), sample(60.0, 61.0, 62.0), 1.0, seed_budget=2)[0] == \
        "holds: A higher"


def test_a_verdicts_headline_keeps_its_first_clause_and_an_untestable_budget():
    assert claims.headline("does not hold: A below B by more than 2 at 0.13x B's train time") == "does not hold"
    assert claims.headline("no detectable effect; equivalent within ±2 (TOST p 0.01)") == "no detectable effect"
    assert claims.headline("undecided; untestable at 5 seeds an arm: more than 1000 would detect ±2") == \
        "undecided; untestable at 5 seeds (more than 1000 needed)"


def test_higher_and_differ_read_welchs_two_sided_test():
    low = (60.0, 61.0, 62.0)
    expected = st.ttest_ind(A_HIGH, low, equal_var=False).pvalue
    verdict, p, _ = claims.decide(rule("higher"), sample(*A_HIGH), sample(*low), 1.0)
    assert verdict == "holds: A higher" and math.isclose(p, expected, rel_tol=1e-9)
    assert claims.decide(rule("higher"), sample(*low), sample(*A_HIGH), 1.0)[0] == "does not hold: A lower"
    assert claims.decide(rule("differ"), sample(*low), sample(*A_HIGH), 1.0)[0] == "A lower"


def test_no_detectable_effect_says_equivalence_where_tost_shows_it():
    a, b = sample(70.0, 70.1, 70.2), sample(70.05, 70.15, 70.25)
    verdict, p, _ = claims.decide(rule("higher"), a, b, 1.0)
    assert verdict.startswith("no detectable effect; equivalent within ±2 (TOST p ") and p > 0.05
    assert claims.decide(rule("differ"), sample(1.0), b, 1.0)[0].startswith("not testable: 1 seed")


def claims_file(tmp_path, body: str):
    path = tmp_path / "claims.yaml"
    path.write_text(body)
    return path


GOOD = """
claims:
  arms:
    F: fast-fast2
    S: {label: ssdkd, task_target: teacher}
    S': {label: ssdkd, task_target: random}
  tests:
    - {claim: "Table 1", a: S, b: F, rule: non-inferior, time_ratio: 0.35}
    - {claim: "target", a: S, b: "S'", rule: differ}
    - {claim: "balance", a: S, b: "S'", rule: higher, metric: pool_entropy, margin: 0.01}
    - {claim: "phi", a: S, b: "S'", rule: differ, metric: pool_phi}
    - {claim: "confidence", a: S, b: "S'", rule: differ, metric: pool_confidence}
"""


@pytest.mark.parametrize("body, message", [
    ("claims: {arms: {F: fast}, tests: [{claim: x, a: F, b: G, rule: higher}]}", "b 'G' is not an arm; arms: F"),
    ("claims: {arms: {F: fast, G: kd}, tests: [{claim: x, a: F, b: G, rule: better}]}",
     "rule 'better' unknown; accepted: higher, differ, non-inferior"),
    ("claims: {arms: {F: fast, G: kd}, tests: [{claim: x, a: F, b: G, rule: higher, time_ratio: 0.3}]}",
     "time_ratio belongs to the non-inferior rule"),
    ("claims: {arms: {F: fast, G: kd}, tests: [{claim: x, a: F, b: G, rule: higher, metric: loss}]}",
     "metric 'loss' unknown; accepted: top1, pool_entropy, pool_confidence, pool_phi"),
    ("claims: {arms: {F: fast, G: kd}, tests: [{a: F, b: G, rule: higher}]}", "has no claim"),
    ("claims: {arms: {F: fast, G: kd}, margin: -1, tests: [{claim: x, a: F, b: G, rule: higher}]}",
     "claims.margin is -1; expected a positive number"),
    ("claims: {arms: {F: {task_target: x}}, tests: []}", "arm 'F' needs a label"),
    ("claims: {arms: {F: fast, G: kd}, seed_budget: 1.5, tests: [{claim: x, a: F, b: G, rule: higher}]}",
     "claims.seed_budget is 1.5; expected a whole number of seeds an arm, 2 or more"),
    ("datasets: [cifar10]\n", "has no claims: mapping"),
    ("claims: [1", "is not valid YAML"),
])
def test_a_malformed_claims_file_is_one_line_naming_what_is_accepted(tmp_path, body, message):
    with pytest.raises(UserError) as err:
        claims.load_claims(claims_file(tmp_path, body))
    assert message in str(err.value) and "\n" not in str(err.value)


def study_tree(tmp_path):
    """Fast2 at 72/73/74 (3,000 s), SSD-KD at 48/49/50 (teacher target, 300 s) and 47/48/49
    (random target); the buffers' diagnostics with known classes and confidences."""
    root = tmp_path / "results"
    for seed in range(3):
        fake_run(root, "fast", "resnet32-resnet8", seed, 72.0 + seed, 3000.0, preset="fast2")
        for target, base in (("teacher", 48.0), ("random", 47.0)):
            run = fake_run(root / target, "ssdkd", "resnet32-resnet8", seed, base + seed, 300.0, preset="paper",
                           data_scale=4)
            config = json.loads((run / "config.json").read_text())
            config["method_config"] = {"task_target": target, "gamma": 2.0}
            (run / "config.json").write_text(json.dumps(config))
            classes = np.array([0, 0, 1, 2 + seed % 2])  # class shares 1/2, 1/2, 1/4, 1/4
            last = 1.0 - 0.1 * seed if target == "teacher" else 0.1 * seed
            confidence = np.array([0.5, 0.5, 0.0, last], dtype=np.float32)
            diagnostics.write(run, {"classes": classes, "confidence": confidence,
                                    "class_names": np.array(["a", "b", "c", "d"])}, 4)
    return root


def test_report_claims_decides_each_test_on_a_known_tree(tmp_path):
    root, out = study_tree(tmp_path), tmp_path / "report"
    write_report(root, out, claims=claims.load_claims(claims_file(tmp_path, GOOD)), figures=False)
    rows = {r["claim"]: r for r in pd.read_csv(out / "claims.csv").to_dict("records")}
    assert rows["Table 1"]["verdict"].startswith("does not hold: A below B by more than 2 at 0.10x")
    assert rows["Table 1"]["diff"] == pytest.approx(-24.0) and rows["Table 1"]["n_a"] == 3
    assert rows["target"]["diff"] == pytest.approx(1.0) and rows["target"]["verdict"].startswith("no detectable")
    # phi by hand: (1 - 1/2)(0.5)^2 twice, (1 - 1/4)(1)^2, then (1 - 1/4)(1 - last)^2 with last
    # 1, 0.9, 0.8 over the seeds (teacher target: 0, 0.0075, 0.03) or 0, 0.1, 0.2 (0.75, 0.6075, 0.48)
    assert rows["phi"]["mean_a"] == pytest.approx((0.125 + 0.125 + 0.75 + 0.0125) / 4)
    assert rows["phi"]["mean_b"] == pytest.approx((0.125 + 0.125 + 0.75 + 0.6125) / 4)
    entropy = -(0.5 * math.log(0.5) + 2 * 0.25 * math.log(0.25)) / math.log(4)  # shares 1/2, 1/4, 1/4 of 4
    assert rows["balance"]["mean_a"] == pytest.approx(round(entropy, 4))
    # the teacher's mean confidence, (0.5 + 0.5 + 0 + last) / 4: 0.5, 0.475, 0.45 against 0.25, 0.275, 0.3
    assert rows["confidence"]["mean_a"] == pytest.approx(0.475) and rows["confidence"]["mean_b"] == pytest.approx(0.275)
    assert rows["confidence"]["verdict"] == "A higher" and rows["confidence"]["n_a"] == 3
    assert "### Claims" in (out / "index.md").read_text()


def test_an_arm_matching_two_experiments_is_an_error_before_anything_is_written(tmp_path, capsys):
    root, out = study_tree(tmp_path), tmp_path / "report"
    loose = GOOD.replace("S: {label: ssdkd, task_target: teacher}", "S: ssdkd")
    assert main(["report", "--results", str(root), "--out", str(out), "--claims",
                 str(claims_file(tmp_path, loose))]) == 2
    assert "claims arm S (ssdkd) matches 2 experiments; add settings that pick one (they differ in task_target)" \
        in capsys.readouterr().err
    assert not out.exists()


def test_an_arm_without_runs_says_not_run_yet(tmp_path):
    root, out = study_tree(tmp_path), tmp_path / "report"
    body = GOOD.replace("F: fast-fast2", "F: fast-fast10")
    write_report(root, out, claims=claims.load_claims(claims_file(tmp_path, body)), figures=False)
    assert "not run yet: no completed run of F with this metric" in (out / "claims.md").read_text()


def test_the_claim_study_grid_holds_valid_claims_and_still_sweeps():
    from dfkd_bench import sweep

    found = claims.load_claims("grids/claim-study.yaml")
    assert {"F", "F10", "S", "S'", "S2", "N", "R", "P", "B"} == set(found.arms) and len(found.tests) == 15
    assert sweep.load_grid("grids/claim-study.yaml")


def test_the_claims_figure_draws_the_top1_tests_with_numbers_and_nothing_else(tmp_path):
    from PIL import Image

    from dfkd_bench import figures

    found = claims.load_claims(claims_file(tmp_path, GOOD))
    table = claims.claims_table(load_done(study_tree(tmp_path)), found, of_methods)
    info = figures.claims_figure(table.raw, tmp_path / "figures")
    assert info.path_png.exists() and info.path_pdf.exists()
    width, height = Image.open(info.path_png).size
    assert (width, height) == (round(info.size_in[0] * figures.DPI), round(info.size_in[1] * figures.DPI))
    assert info.size_in[1] == pytest.approx(0.55 + 0.5 * 2)  # the two top-1 tests; entropy and phi are not drawn
    assert figures.claims_figure(table.raw[table.raw["metric"] != "top1"], tmp_path / "none") is None


def test_the_arms_table_holds_each_arms_seeds_interval_pool_readings_and_core_hours(tmp_path):
    root, out = study_tree(tmp_path), tmp_path / "report"
    write_report(root, out, claims=claims.load_claims(claims_file(tmp_path, GOOD)), figures=False)
    rows = {r["arm"]: r for r in pd.read_csv(out / "arms.csv").to_dict("records")}
    assert list(rows) == ["F", "S", "S'"]  # the claims file's order
    s = rows["S"]
    assert (s["top1_seed0"], s["top1_seed1"], s["top1_seed2"], s["top1_n"]) == (48.0, 49.0, 50.0, 3)
    half = st.t.ppf(0.975, 2) * 1.0 / math.sqrt(3)  # std 1 over three seeds
    assert (s["top1_ci_low"], s["top1_ci_high"]) == (pytest.approx(49.0 - half), pytest.approx(49.0 + half))
    assert s["pool_confidence_mean"] == pytest.approx(0.475) and s["pool_phi_n"] == 3  # as the claims test
    assert rows["S'"]["pool_phi_mean"] == pytest.approx((0.125 + 0.125 + 0.75 + 0.6125) / 4)
    assert rows["F"]["pool_entropy_n"] == 0 and math.isnan(rows["F"]["pool_entropy_mean"])  # Fast2 kept no pool here
    text = (out / "arms.md").read_text()
    assert "| F: fast-fast2 | 72.00 | 73.00 | 74.00 | 73.00 ± 1.00 [3] | [70.52, 75.48] | — | — | — | 50.0 min " \
           "| not kept [0/3] |" in text
    # each run's total seconds (train + 1 s evaluation + 0.5 s checkpoint) times its 2 threads
    assert f"9 completed runs of the arms, {(3 * 3001.5 + 6 * 301.5) * 2 / 3600:.1f} core-hours" in text
    assert "### Arms" in (out / "index.md").read_text()


def test_the_arms_figure_draws_pool_panels_only_where_an_arm_kept_a_pool(tmp_path):
    from PIL import Image

    from dfkd_bench import figures

    found = claims.load_claims(claims_file(tmp_path, GOOD))
    values = claims.arm_values(load_done(study_tree(tmp_path)), found, of_methods)
    info = figures.arms_figure(values, list(found.arms), tmp_path / "figures")
    assert Image.open(info.path_png).size == (round(7.0 * figures.DPI), round((0.75 + 0.22 * 3) * figures.DPI))
    assert "pool class entropy, teacher confidence, mean phi" in info.caption
    bare = values.assign(pool_entropy=math.nan, pool_confidence=math.nan, pool_phi=math.nan)
    assert "pool" not in figures.arms_figure(bare, list(found.arms), tmp_path / "bare").caption
    assert figures.arms_figure(values.iloc[0:0], list(found.arms), tmp_path / "none") is None


def load_done(root):
    from dfkd_bench.report import load_summaries
    from dfkd_bench.runs import completed_runs

    return completed_runs(load_summaries(root)[0])


def write_epochs(run, increments, *, resumed_at=None):
    """metrics.jsonl with cumulative train seconds (synthesis + distillation) from per-epoch
    increments; ``resumed_at`` logs that epoch twice, the first record a stale one."""
    total, lines = 0.0, []
    for epoch, step in enumerate(increments):
        if epoch == resumed_at:
            lines.append({"event": "epoch", "epoch": epoch, "seconds_synthesis": 999.0, "seconds_distillation": 0.0})
        total += step
        lines.append({"event": "epoch", "epoch": epoch, "seconds_synthesis": total / 4, "seconds_distillation": total * 3 / 4,
                      "seconds_evaluation": 50.0})
    (run / "metrics.jsonl").write_text("".join(json.dumps(r) + "\n" for r in lines))


def test_median_epoch_train_seconds_ignores_a_loaded_stretch_and_a_stale_record(tmp_path):
    from dfkd_bench.runs import median_epoch_train_seconds

    run = tmp_path / "run"
    run.mkdir()
    write_epochs(run, [1.0, 1.0, 5.0, 10.0, 10.0, 40.0, 10.0], resumed_at=4)  # 3 warm-up epochs, then 4
    assert median_epoch_train_seconds(run, warmup_epochs=3) == pytest.approx(3 * 1.0 + 4 * 10.0)
    assert median_epoch_train_seconds(run) == pytest.approx(7 * 10.0)
    write_epochs(run, [1.0, 1.0])
    (run / "metrics.jsonl").write_text((run / "metrics.jsonl").read_text().replace('"epoch": 0', '"epoch": 5'))
    assert median_epoch_train_seconds(run) is None  # a gap in the record: no estimate


def test_a_time_ratio_whose_median_epoch_reading_disagrees_says_so(tmp_path):
    root = study_tree(tmp_path)
    for run in root.rglob("summary.json"):
        fast = "fast" in run.parent.name
        write_epochs(run.parent, [200.0] * 5 if fast else [10.0, 10.0, 10.0, 10.0, 200.0])  # one loaded epoch
    arms = claims.load_claims(claims_file(tmp_path, GOOD)).arms
    rule = claims.Test("T", "S", "F", "non-inferior", "top1", 30.0, 0.07)  # -24 points is within 30
    row = claims.claims_table(load_done(root), claims.Claims(arms, [rule]), of_methods).raw.iloc[0]
    assert row["train_time_ratio"] == pytest.approx(0.10)  # the summaries' 300 s over 3,000 s
    assert row["median_train_time_ratio"] == pytest.approx(50.0 / 1000.0)
    assert row["verdict"] == ("does not hold: train time at 0.10x B's train time (over 0.07x); the median-epoch "
                              "train time ratio, 0.05x, lies on the other side")


def test_a_grid_with_a_broken_claims_section_stops_the_sweep_before_it_starts(tmp_path):
    from dfkd_bench import sweep

    grid = tmp_path / "grid.yaml"
    grid.write_text("methods: [kd]\nclaims: {arms: {F: kd}, tests: [{claim: x, a: F, b: G, rule: higher}]}\n")
    with pytest.raises(UserError, match="claims.tests\\[0\\]: b 'G' is not an arm; arms: F"):
        sweep.load_grid(grid)
