"""Table 3 of the SSD-KD paper on segmentation (issue 34, item 5): every row has a NYUv2 and a
CPU (shapes) preset, both grids plan every cell, and the report writes a Table 3-shaped table
(method, training data scale, mIoU, train time) for a segmentation data set and none for a
classification one."""
from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch

from dfkd_bench import harness, report, sweep
from dfkd_bench.data import load_dataset
from dfkd_bench.errors import UserError
from dfkd_bench.plan import plan_runs, resolve_method
from dfkd_bench.tables import compact_count, format_seconds
from dfkd_bench.teachers import TrainRecipe, train_teacher
from tests.test_segmentation_task import TINY

ROOT = Path(__file__).resolve().parents[1]
ROWS = {"kd": "nyuv2", "scratch": "nyuv2", "dfad": "nyuv2", "dafl": "nyuv2", "fast": "fast10-nyuv2",
        "ssdkd": "nyuv2"}


def test_every_table3_row_has_a_nyuv2_and_a_shapes_preset():
    for method, preset in ROWS.items():
        cls, _ = resolve_method(method)
        assert preset in cls.presets and preset.replace("nyuv2", "shapes") in cls.presets
        assert "smoke" in cls.presets and "segmentation" in cls.tasks
    assert resolve_method("fast10-nyuv2")[1] == "fast10-nyuv2"  # one owner: addressable alone
    with pytest.raises(UserError, match="'nyuv2' is a preset of several methods"):
        resolve_method("nyuv2")
    ssd = plan_runs(["ssdkd:nyuv2"], dataset="nyuv2", device="cuda", device_here=False)[0]
    fast = plan_runs(["fast10-nyuv2"], dataset="nyuv2", device="cuda", device_here=False)[0]
    dfad = plan_runs(["dfad:nyuv2"], dataset="nyuv2", device="cuda", device_here=False)[0]
    # the paper's data scales: SSD-KD's 16K buffer is every sample it makes, Fast10's pool 17K,
    # DFAD's 300 x 50 generator batches of 64 are 960K
    assert ssd.run.data_scale == 16000 == ssd.run.epochs * ssd.method_config.synth_batch
    assert fast.run.epochs * fast.method_config.synth_batch == 17024
    assert dfad.run.epochs * dfad.run.steps_per_epoch() // dfad.method_config.g_every * dfad.run.batch_size == 960_000
    assert ssd.pair == fast.pair == "deeplabv3_r50-deeplabv3_mbv2"


@pytest.mark.parametrize("grid, dataset, pair", [("ssdkd-table3.yaml", "nyuv2", "deeplabv3_r50-deeplabv3_mbv2"),
                                                 ("ssdkd-table3-cpu.yaml", "shapes", "segnet_m-segnet_s")])
def test_the_table3_grids_plan_every_row_at_three_seeds(grid, dataset, pair):
    specs = sweep.expand(sweep.load_grid(ROOT / "grids" / grid))
    preset = "nyuv2" if dataset == "nyuv2" else "shapes"
    labels = [f"{m}-{p.replace('nyuv2', preset)}" for m, p in ROWS.items()]
    floor = ["noise-shapes"] if dataset == "shapes" else []  # the CPU grid's noise floor
    assert [s.label for s in specs[::3]] == labels + floor and len(specs) == 3 * len(labels + floor)
    assert {s.seed for s in specs} == {0, 1, 2} and {(s.dataset, s.pair) for s in specs} == {(dataset, pair)}


def test_compact_counts_read_as_the_paper_writes_them():
    assert [compact_count(n) for n in (795, 2000, 17024, 16000, 960_000, 4_800_000, 1_000_000)] == \
        ["795", "2,000", "17K", "16K", "960K", "4.8M", "1M"]


def test_the_report_writes_table3_for_a_segmentation_set(cache, tmp_path):
    data = load_dataset(TINY)
    train_teacher(data, "segnet_m", torch.device("cpu"), TrainRecipe(epochs=2, batch_size=16, lr=0.05),
                  precision="fp32", resumable=False)
    specs = plan_runs(["kd", "scratch", "dfad", "fast", "ssdkd"], dataset=TINY, pair="segnet_m-segnet_s",
                      preset="smoke", device="cpu", sets={"precision": "fp32"}, out=tmp_path / "results")
    summaries = {s.method: harness.run(s) for s in specs}
    assert all(s.completed for s in summaries.values())
    report.write_report(tmp_path / "results", tmp_path / "report", figures=False)
    out = tmp_path / "report"
    lines = (out / f"table3__{TINY}.md").read_text().splitlines()
    assert lines[0] == f"### Table 3 layout, {TINY}"
    assert lines[2] == "| method | training data | mIoU % | train time |"
    teacher = json.loads(next((tmp_path / "results").rglob("summary.json")).read_text())["teacher_top1"]

    def row(method, data):
        s = summaries[method]
        return f"| {s.label} | {data} | {s.final_top1:.2f} [1] | {format_seconds(s.train_seconds)} |"

    # smoke: 48 real images; DFAD online 2 epochs x 3 steps x 8; Fast's pool 2 rounds of 16;
    # SSD-KD's buffer of 24 (data scale) after 32 made
    assert lines[4:10] == [f"| Teacher (segnet_m) | 48 {TINY} | {teacher:.2f} | — |",
                           row("scratch", f"48 {TINY}"), row("kd", f"48 {TINY}"),
                           row("dfad", "48 synthetic (online)"), row("fast", "32 synthetic (pool)"),
                           row("ssdkd", "24 synthetic (buffer)")]
    assert lines[10] == "" and lines[11].startswith(f"{TINY}: the SSD-KD paper's Table 3 layout")
    assert lines[12].startswith("Environment: ") and len(lines) == 13
    csv = (out / f"table3__{TINY}.csv").read_text().splitlines()
    assert csv[0] == "pair,method,data_kind,data_samples,mIoU_mean,mIoU_std,seeds,train_seconds"
    assert [c.split(",")[2:4] for c in csv[1:]] == [["real", "48"], ["real", "48"], ["real", "48"],
                                                     ["online", "48"], ["pool", "32"], ["buffer", "24"]]
    assert (out / f"table3__{TINY}.tex").exists()
    assert f"Table 3 layout, {TINY}" in (out / "index.md").read_text()
