"""Issue 14: the run store's diagnostics and the report's tables (paper layout, costs,
speed-ups; markdown, CSV, LaTeX) and index, on runs made here and on synthetic trees
with known numbers."""
from __future__ import annotations

import json

import numpy as np
import pytest
import torch

from dfkd_bench import diagnostics, harness
from dfkd_bench.data import Normalizer
from tests.helpers import smoke_spec


def test_a_pool_run_leaves_the_teachers_view_of_its_final_pool(tiny_zoo, tmp_path):
    summary = harness.run(smoke_spec("deepinv", tmp_path / "r", epochs=3))
    run = tmp_path / "r" / summary.name
    arrays = diagnostics.read(run)
    assert arrays["classes"].shape == (48,) and arrays["confidence"].dtype == np.float32  # 3 epochs x 16 images
    assert ((arrays["confidence"] >= 0.25) & (arrays["confidence"] <= 1)).all()  # top of 4 classes
    assert arrays["sample_images"].shape == (48, 1, 8, 8) and arrays["sample_images"].dtype == np.uint8
    assert (arrays["sample_classes"] == arrays["classes"]).all()  # fewer than 64: every image, in order
    info = json.loads((run / diagnostics.DIAGNOSTICS_SUMMARY).read_text())
    assert sum(info["class_counts"]) == 48 and 0 <= info["normalised_entropy"] <= 1
    assert info["class_counts"] == np.bincount(arrays["classes"], minlength=4).tolist()


def test_an_online_run_has_no_pool_to_diagnose(tiny_zoo, tmp_path):
    summary = harness.run(smoke_spec("dafl", tmp_path / "r"))
    assert diagnostics.read(tmp_path / "r" / summary.name) is None


def test_pixels_round_trip_and_the_sample_is_fixed():
    norm = Normalizer((0.4, 0.5, 0.6), (0.2, 0.25, 0.3))
    pixels = torch.randint(0, 256, (5, 3, 4, 4), dtype=torch.uint8)
    assert torch.equal(diagnostics.to_pixels(norm.from_uint8(pixels), norm), pixels)
    assert diagnostics.sample_indices(1000, 5).tolist() == [0, 250, 500, 749, 999]
    assert diagnostics.sample_indices(3).tolist() == [0, 1, 2]


def test_summary_of_a_balanced_pool_has_entropy_one():
    arrays = {"classes": np.repeat(np.arange(4), 5), "confidence": np.linspace(0.3, 0.9, 20, dtype=np.float32),
              "class_names": np.array(["a", "b", "c", "d"])}
    info = diagnostics.summarize(arrays, 4)
    assert info["normalised_entropy"] == pytest.approx(1.0) and info["class_counts"] == [5, 5, 5, 5]
    assert info["confidence_quantiles"]["0.5"] == pytest.approx(0.6, abs=1e-4)


# --- tables from a synthetic results tree with known numbers ---------------------------

def fake_run(root, method, pair, seed, top1, train_s, *, preset=None, status="completed", data_scale=0,
             dataset="cifar10", teacher_top1=95.0, flops=1e12, steps_per_epoch=5):
    """A run directory as the harness leaves it (summary, config, environment), with
    the given numbers: train seconds split 3:1 between synthesis and distillation."""
    from dfkd_bench.summary import RunSummary, run_label

    teacher, student = pair.split("-")
    name = f"{dataset}__{pair}__{run_label(method, preset)}__n{data_scale}__s{seed}"
    run = root / name
    run.mkdir(parents=True)
    summary = RunSummary(
        status=status, reason="" if status == "completed" else "killed", name=name, method=method, preset=preset,
        dataset=dataset, pair=pair, teacher=teacher, student=student, seed=seed, data_scale=data_scale, epochs=10,
        epochs_done=10 if status == "completed" else 4, steps_per_epoch=steps_per_epoch, final_top1=top1,
        best_top1=top1 + 1,
        teacher_top1=teacher_top1, seconds={"synthesis": 0.75 * train_s, "distillation": 0.25 * train_s,
                                            "evaluation": 1.0, "checkpoint": 0.5},
        costs={"teacher_forward_images": 1000, "student_forward_images": 500, "student_backward_images": 500},
        training_flops=flops, peak_memory_mb=512.0, device="cpu", started="t0", updated="t1")
    (run / "summary.json").write_text(json.dumps(summary.to_json()))
    config = {"method": method, "preset": preset, "dataset": dataset, "pair": pair, "teacher": teacher,
              "student": student, "seed": seed, "device": "cpu", "run": {"data_scale": data_scale}, "method_config": {}}
    (run / "config.json").write_text(json.dumps(config))
    (run / "environment.json").write_text(json.dumps({"device": "cpu", "device_name": "Test CPU", "torch": "2.9",
                                                      "python": "3.11", "threads": 2, "git_commit": "abcdef0123456",
                                                      "git_dirty": False}))
    return run


@pytest.fixture()
def tree(tmp_path):
    root = tmp_path / "results"
    pairs = ("resnet34-resnet18", "wrn40_2-wrn16_1")
    for seed, (a, b) in enumerate([(90.0, 92.0), (92.0, 94.0)]):  # fast2: 91 ± 1.41 and 93 ± 1.41
        fake_run(root, "fast", pairs[0], seed, a, 3600.0, preset="fast2")
        fake_run(root, "fast", pairs[1], seed, b, 3000.0, preset="fast2")
        fake_run(root, "ssdkd", pairs[0], seed, a + 1, 900.0)  # better and 4x faster on the first pair
    fake_run(root, "kd", pairs[0], 0, 95.5, 60.0)  # a real-data reference is never the bold best
    fake_run(root, "ssdkd", pairs[0], 2, 10.0, 50.0, status="running")  # never averaged in
    return root


def test_paper_table_layout_bold_missing_and_time_units(tree, tmp_path):
    from dfkd_bench import report

    rep = report.write_report(tree, tmp_path / "rep", baseline="fast-fast2", figures=False)
    md = (tmp_path / "rep" / "table__cifar10.md").read_text()
    lines = [line for line in md.splitlines() if line.startswith("| ")]
    assert lines[0] == "| method | resnet34-resnet18 | wrn40_2-wrn16_1 |"
    assert lines[1] == "| Teacher | 95.00 (resnet34) | 95.00 (wrn40_2) |"
    assert lines[2] == "| ssdkd | **92.00 ± 1.41 (15.0 min) [2]** | — |"
    assert lines[3] == "| fast-fast2 | 91.00 ± 1.41 (60.0 min) [2] | **93.00 ± 1.41 (50.0 min) [2]** |"
    assert lines[4] == "| KD (real data) | 95.50 (60 s) [1] | — |"
    assert "Environment: device Test CPU; torch 2.9; Python 3.11; threads 2; commit abcdef0123 (7 runs)." in md
    tex = (tmp_path / "rep" / "table__cifar10.tex").read_text()
    assert "\\toprule" in tex and "\\bottomrule" in tex
    assert "ssdkd & \\textbf{92.00 $\\pm$ 1.41 (15.0 min) [2]} & --- \\\\" in tex
    raw = (tmp_path / "rep" / "table__cifar10.csv").read_text().splitlines()
    assert raw[0] == "row,pair,top1_mean,top1_std,seeds,train_seconds"
    # the running run is listed, not averaged
    assert len(rep.unfinished) == 1 and "`cifar10__resnet34-resnet18__ssdkd__n0__s2` | running | 4/10" in \
        (tmp_path / "rep" / "index.md").read_text()


def test_rows_tied_on_top1_come_in_name_order_whatever_the_process(tmp_path):
    from dfkd_bench import report

    root = tmp_path / "results"
    # eight methods all at chance: set order would put them in any of 8! orders
    names = ["dafl", "dfad", "dfq", "zskt", "noise", "deepinv", "cmi", "adi"]
    for method in names:
        fake_run(root, method, "resnet32-resnet8", 0, 10.0, 100.0, preset="cpu")
    report.write_report(root, tmp_path / "rep", figures=False)
    md = (tmp_path / "rep" / "table__cifar10.md").read_text()
    rows = [line.split(" | ")[0][2:] for line in md.splitlines() if line.startswith("| ") and "-cpu" in line]
    assert rows == sorted(f"{m}-cpu" for m in names)


def test_kd_at_a_preset_and_data_scale_is_a_reference_never_the_bold_best(tmp_path):
    from dfkd_bench import report

    root = tmp_path / "results"
    pair = "resnet32-resnet8"
    for scale in (500, 5000):
        fake_run(root, "kd", pair, 0, 60.0 + scale / 1000, 100.0, preset="cpu", data_scale=scale)
    fake_run(root, "scratch", pair, 0, 70.0, 100.0, preset="cpu")
    fake_run(root, "fast", pair, 0, 40.0, 100.0, preset="fast2-cpu")
    report.write_report(root, tmp_path / "rep", figures=False)
    lines = [line for line in (tmp_path / "rep" / "table__cifar10.md").read_text().splitlines()
             if line.startswith("| ")]
    # the data-free row comes first and holds the bold; real-data rows follow, plain
    assert lines[2] == "| fast-fast2-cpu | **40.00 (100 s) [1]** |"
    assert sorted(lines[3:]) == ["| kd-cpu (N=5,000) | 65.00 (100 s) [1] |", "| kd-cpu (N=500) | 60.50 (100 s) [1] |",
                                 "| scratch-cpu | 70.00 (100 s) [1] |"]


def test_speedup_and_cost_tables(tree, tmp_path):
    from dfkd_bench import report

    report.write_report(tree, tmp_path / "rep", baseline="fast-fast2", figures=False)
    speed = (tmp_path / "rep" / "speedup__cifar10.md").read_text()
    assert "| resnet34-resnet18 | ssdkd | 92.00 ± 1.41 | +1.00 | 15.0 min | **4.00** | yes |" in speed
    assert "| resnet34-resnet18 | KD (real data) | 95.50 | +4.50 | 60 s | **60.00** | yes |" in speed
    assert "| wrn40_2-wrn16_1 | fast-fast2 | 93.00 ± 1.41 | — | 50.0 min | 1.00 | yes |" in speed
    costs = (tmp_path / "rep" / "costs__cifar10.csv").read_text().splitlines()
    header = costs[0].split(",")
    first = dict(zip(header, costs[1].split(",")))
    assert first["method"] == "KD (real data)" and float(first["seconds_synthesis"]) == 45.0
    assert float(first["total_seconds"]) == 61.5 and float(first["teacher_forward_images"]) == 1000


def test_ranking_against_the_published_columns_with_kendall_tau(tmp_path):
    from dfkd_bench import report, runs

    root, pair = tmp_path / "results", "resnet32-resnet8"
    for method, preset, scale, top1 in [("fast", "fast2-cpu", 500, 20.0), ("fast", "fast2-cpu", 5000, 30.0),
                                        ("ssdkd", "cpu", 256, 12.0), ("ssdkd", "cpu", 5000, 35.0),
                                        ("deepinv", "cpu", 0, 25.0), ("cmi", "cpu", 0, 40.0),
                                        ("ssdkd", "no-ps-cpu", 1250, 50.0), ("kd", "cpu", 0, 60.0)]:
        fake_run(root, method, pair, 0, top1, 100.0, preset=preset, data_scale=scale)
    report.write_report(root, tmp_path / "rep", figures=False, baseline="fast-fast2-cpu")
    speed = (tmp_path / "rep" / "speedup__cifar10.md").read_text()
    # the baseline ran at 500 and 5,000: rows at other scales are set against its main row (5,000)
    assert "| resnet32-resnet8 | deepinv-cpu | 25.00 | -5.00 | 100 s | 1.00 | no |" in speed
    assert "| resnet32-resnet8 | ssdkd-cpu (N=256) | 12.00 | -18.00 | 100 s | 1.00 | no |" in speed
    assert "| resnet32-resnet8 | fast-fast2-cpu (N=500) | 20.00 | — | 100 s | 1.00 | yes |" in speed
    assert "against its main row (resnet32-resnet8: fast-fast2-cpu (N=5,000))." in speed
    lines = [line for line in (tmp_path / "rep" / "ranking__cifar10.md").read_text().splitlines()
             if line.startswith("| ")]
    assert lines[0] == ("| method | stands in | here top-1 % (rank) | resnet34-resnet18 | vgg11-resnet18 | "
                        "wrn40_2-wrn16_1 | wrn40_2-wrn40_1 | wrn40_2-wrn16_2 |")
    # Fast2 at the data scale nearest its preset's 5,120 samples an epoch, SSD-KD at its preset's 256;
    # the ablation and KD are not published rows
    assert [line.split(" | ")[:3] for line in lines[1:5]] == [
        ["| cmi", "cmi-cpu [1]", "40.00 (1)"], ["| fast2", "fast-fast2-cpu (N=5,000) [1]", "30.00 (2)"],
        ["| deepinv", "deepinv-cpu [1]", "25.00 (3)"], ["| ssdkd", "ssdkd-cpu (N=256) [1]", "12.00 (4)"]]
    assert lines[1].endswith("| 94.84 (1) | 91.13 (1) | 90.01 (1) | 92.78 (1) | 92.52 (1) |")
    # resnet34-resnet18: cmi 94.84 > deepinv 93.26 > ssdkd 92.92 > fast2 92.62; 4 of 6 pairs agree: (4 - 2) / 6
    assert lines[5].startswith("| Kendall tau |  |  | 0.33 (n=4) |")
    assert runs.preset_samples_per_epoch("fast", "fast2-cpu") == 5120
    assert runs.preset_samples_per_epoch("ssdkd", "cpu") == 256
    assert runs.preset_samples_per_epoch("nosuch", None) is None


def test_filters_and_a_baseline_missing_on_one_data_set(tree, tmp_path):
    from dfkd_bench import report

    fake_run(tree, "dafl", "resnet34-resnet18", 0, 80.0, 100.0, dataset="cifar100")
    rep = report.write_report(tree, tmp_path / "rep", pairs=["resnet34-resnet18"], baseline="dafl", figures=False)
    assert set(rep.table["pair"]) == {"resnet34-resnet18"}
    index = (tmp_path / "rep" / "index.md").read_text()
    assert "No `dafl` runs on cifar10: no speed-up table." in index
    assert (tmp_path / "rep" / "speedup__cifar100.md").exists()
    rep = report.write_report(tree, tmp_path / "rep2", methods=["ssdkd"], figures=False)
    assert set(rep.table["label"]) == {"ssdkd", "teacher (resnet34)"}


def test_a_baseline_or_filter_that_matches_no_run_is_an_error_before_anything_is_written(tree, tmp_path):
    from dfkd_bench import report
    from dfkd_bench.errors import UserError

    with pytest.raises(UserError, match=r"^--baseline 'nosuch' matches no completed run in .*; accepted: a method "
                                        r"label there \(KD \(real data\), fast-fast2, kd, ssdkd\)$"):
        report.write_report(tree, tmp_path / "rep", baseline="nosuch", figures=False)
    with pytest.raises(UserError, match=r"^--baseline 'fast-fast2' matches no completed run .*accepted: .*\(ssdkd\)"):
        report.write_report(tree, tmp_path / "rep", methods=["ssdkd"], baseline="fast-fast2", figures=False)
    with pytest.raises(UserError) as info:
        report.write_report(tree, tmp_path / "rep", methods=["nosuch"], pairs=["wrn40_2-wrn16_1"], figures=False)
    assert str(info.value) == (
        f"no run in {tree} matches --pair wrn40_2-wrn16_1 --methods nosuch; its 8 runs are of methods fast-fast2, "
        "kd, ssdkd; pairs resnet34-resnet18, wrn40_2-wrn16_1; data sets cifar10")
    assert not (tmp_path / "rep").exists()


def test_without_a_completed_run_nothing_is_written(tmp_path):
    from dfkd_bench import report

    (tmp_path / "results").mkdir()
    rep = report.write_report(tmp_path / "results", tmp_path / "rep", figures=False)
    assert rep.rows == [] and rep.files == [] and not (tmp_path / "rep").exists()
    fake_run(tmp_path / "results", "kd", "a-b", 0, 50.0, 10.0, status="failed")
    rep = report.write_report(tmp_path / "results", tmp_path / "rep", figures=False)
    assert len(rep.unfinished) == 1 and not (tmp_path / "rep").exists()


def test_run_folders_without_a_summary_are_listed_with_why(tree, tmp_path):
    from dfkd_bench import report, store

    for name, files in (("never-started", [store.LOCK]), ("summary-gone", [store.LOCK, store.CONFIG, store.METRICS])):
        (tree / name).mkdir()
        for f in files:
            (tree / name / f).write_text("{}")
    (tree / "sweep-logs").mkdir()
    (tree / "sweep-logs" / "job_0.out").write_text("")
    rep = report.write_report(tree, tmp_path / "rep", figures=False)
    assert rep.problems == [
        (str(tree / "never-started"), "holds only .lock: a run that stopped before it started (the folder can go)"),
        (str(tree / "summary-gone"), "no summary.json (it holds .lock, config.json, metrics.jsonl)")]
    index = (tmp_path / "rep" / "index.md").read_text()
    assert "(8 runs read, 7 completed and averaged;" in index and "; 2 run folders skipped, listed at the end" in index
    assert f"- `{tree / 'never-started'}`: holds only .lock" in index


@pytest.mark.parametrize("seconds, text", [(5.0, "5.0 s"), (45.2, "45 s"), (130, "2.2 min"), (14112, "3.92 h"),
                                           (None, "—")])
def test_time_is_given_in_the_unit_that_reads_best(seconds, text):
    from dfkd_bench.tables import format_seconds

    assert format_seconds(seconds) == text


def test_labels_name_the_fewest_settings_and_prefer_ones_every_config_has():
    import pandas as pd

    from dfkd_bench.runs import distinguishing_labels

    settings = [{"task_target": "teacher", "epochs": 30}, {"task_target": "random", "epochs": 30},
                {"task_target": "teacher", "epochs": 30, "teacher_sha256": "e908ee14f0297c276ecd46bb"}]
    done = pd.DataFrame({"dataset": "d", "pair": "p", "label": "ssdkd", "data_scale": 512,
                         "config_id": ["a", "b", "c"], "settings": settings})
    assert list(distinguishing_labels(done)) == [
        "ssdkd (task_target=teacher, teacher_sha256=None)", "ssdkd (task_target=random, teacher_sha256=None)",
        "ssdkd (task_target=teacher, teacher_sha256=e908ee14f0…)"]
    assert list(distinguishing_labels(done.iloc[:2])) == ["ssdkd (task_target=teacher)", "ssdkd (task_target=random)"]


def test_a_data_scale_grid_compares_like_with_like(tmp_path):
    from dfkd_bench import report

    root = tmp_path / "results"
    for scale, (fast, ssd, kd) in {320: (20.0, 25.0, 50.0), 640: (40.0, 30.0, 80.0)}.items():
        fake_run(root, "fast", "a-b", 0, fast, 100.0 * scale / 320, data_scale=scale)
        fake_run(root, "ssdkd", "a-b", 0, ssd, 25.0 * scale / 320, data_scale=scale)
        fake_run(root, "kd", "a-b", 0, kd, 5.0, data_scale=scale)
    report.write_report(root, tmp_path / "rep", baseline="fast", figures=False)
    table = (tmp_path / "rep" / "table__cifar10.md").read_text()
    assert "| fast (N=640) | **40.00 (3.3 min) [1]** |" in table  # the best data-free row, not KD's
    assert table.index("| KD (real data) (N=640) |") > table.index("| ssdkd (N=320) |")  # references last
    speed = (tmp_path / "rep" / "speedup__cifar10.md").read_text()
    assert "| a-b | ssdkd (N=320) | 25.00 | +5.00 | 25 s | **4.00** | yes |" in speed  # against fast at 320
    assert "| a-b | ssdkd (N=640) | 30.00 | -10.00 | 50 s | 4.00 | no |" in speed  # against fast at 640
