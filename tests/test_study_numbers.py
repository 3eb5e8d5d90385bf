"""benchmarks/study_numbers.py: the CPU study's quoted numbers from a synthetic run
store with known values (no training)."""
from __future__ import annotations

import importlib.util
import json

from tests.conftest import ROOT
from tests.test_report import fake_run

spec = importlib.util.spec_from_file_location("study_numbers", ROOT / "benchmarks" / "study_numbers.py")
study_numbers = importlib.util.module_from_spec(spec)
spec.loader.exec_module(study_numbers)

PAIR = "resnet32-resnet8"


def test_the_numbers_of_a_small_study(tmp_path, capsys):
    root = tmp_path / "runs"
    for seed, sign in ((0, 1), (1, -1)):
        fake_run(root, "ssdkd", PAIR, seed, 20.0 + sign, 100.0, preset="cpu", data_scale=256, steps_per_epoch=2)
        fake_run(root, "fast", PAIR, seed, 30.0 + sign, 400.0, preset="fast2-cpu", data_scale=5000)
        fake_run(root, "noise", PAIR, seed, 12.0 + sign, 50.0, preset="cpu")
    fake_run(root, "fast", PAIR, 0, 50.0, 1000.0, preset="fast10-cpu")
    fake_run(root, "ssdkd", PAIR, 0, 21.0, 250.0, preset="cpu-40steps", steps_per_epoch=40)
    fake_run(root, "ssdkd", PAIR, 0, 25.0, 150.0, preset="cpu", data_scale=1250)
    fake_run(root, "ssdkd", PAIR, 0, 40.0, 300.0, preset="cpu", data_scale=5000)
    # ablations in the paper's order but for the last two, which swap
    for preset, top1 in [("none-cpu", 15.0), ("only-difficulty-cpu", 16.0), ("only-diversity-cpu", 17.0),
                         ("no-ps-cpu", 18.0), ("no-balance-cpu", 26.0)]:
        fake_run(root, "ssdkd", PAIR, 0, top1, 150.0, preset=preset, data_scale=1250)
    fake_run(root, "dda", PAIR, 0, 30.0, 200.0, preset="no-aug-cpu")
    fake_run(root, "dda", PAIR, 0, 33.0, 300.0, preset="cpu")
    teacher = tmp_path / "teacher.json"
    teacher.write_text(json.dumps({"train_seconds": 3600.0, "threads": 2, "init_from": {"train_seconds": 7200.0}}))
    out = tmp_path / "numbers.md"
    assert study_numbers.main([str(root), "--teacher", str(teacher), "--out", str(out)]) == 0
    text = out.read_text()
    assert text.rstrip("\n") == capsys.readouterr().out.rstrip("\n")
    # SSD-KD (20 ± 1.41, 100 s) against Fast2 at 5,000 (30 ± 1.41, 400 s): a quarter of its train time;
    # totals add 1.5 s a run (evaluation and checkpoints)
    assert "| fast-fast2-cpu (N=5,000) | 30.00 ± 1.41 [2] | 400 | 402 | -10.00 | 0.250 | 0.253 |" in text
    assert "| ssdkd-cpu (N=256) | 20.00 ± 1.41 [2] | 100 | 102 | +0.00 | 1.000 | 1.000 |" in text
    assert "| fast-fast10-cpu | 50.00 [1] | 1,000 | 1,002 | -30.00 | 0.100 | 0.101 |" in text
    assert "| fast5 | not run |" in text
    assert "- Fast10 - Fast2 = +20.00 points (n = 1 vs 2): not testable: 1 seed on one side" in text
    # the step control: the 256 buffer with 40 KD steps an epoch (21.0, 250 s) against its 2 (20.0, 100 s)
    assert "| ssdkd-cpu | 256 | 2 | 20.00 ± 1.41 [2] | 100 |" in text
    assert "| ssdkd-cpu-40steps | preset | 40 | 21.00 [1] | 250 |" in text
    assert "The control against the main row, for 2.50x its train time: control - main row = +1.00 points " \
           "(n = 1 vs 2): not testable: 1 seed on one side (two or more on each are needed)." in text
    # noise 12 ± 1.41: Fast10's one seed is 38 points above it, but one seed cannot be tested
    assert "| fast-fast10-cpu | 50.00 [1] | +38.00 | not testable | - |" in text
    # the full method at 1,250 (25) falls below +PS (26): 14 of 15 pairs agree, (14 - 1) / 15
    assert "| +PS | no-balance-cpu | 26.00 [1] | 1 | 90.28 (2) | 87.19 |" in text
    assert "| full (PS + both terms) | cpu | 25.00 [1] | 2 | 92.92 (1) | 88.07 |" in text
    assert "over the 6 rows run: 0.87" in text
    assert "- no-ps-cpu - full = -7.00 points (n = 1 vs 1): not testable: 1 seed on one side" in text  # one seed
    assert "- none-cpu - full = -10.00 points (n = 1 vs 1): not testable" in text
    assert "- augmentation, for 1.50x the train time: cpu - no-aug-cpu = +3.00 points (n = 1 vs 1): not testable" \
        in text
    assert "of it augmentation not recorded" in text  # these fake runs time no augmentation phase
    # SSD-KD at 256, 1,250, 5,000 with train 100, 150, 300 s: least squares 0.0416 s a sample, 93.2 s
    assert "| ssdkd:cpu | 3 | 256: 20.00, 1,250: 25.00, 5,000: 40.00 | 0.0416 | 93.2 | 0.998 |" in text
    assert "- 17 runs on Test CPU, 2 thread(s), ?" in text
    assert "Runs: 17 completed, 4,076 s of one thread each" in text
    assert "Teacher: 10,800 s wall-clock on 2 thread(s) (7,200 s for the first cycle, 3,600 s for the second), " \
           "6.0 core-hours." in text


def test_an_ablation_difference_carries_its_welch_test_and_holm_correction(tmp_path, capsys):
    root = tmp_path / "runs"
    for seed, (full, no_ps) in enumerate([(24.0, 18.0), (26.0, 20.0)]):  # 25 ± 1.41 and 19 ± 1.41
        fake_run(root, "ssdkd", PAIR, seed, full, 150.0, preset="cpu", data_scale=1250)
        fake_run(root, "ssdkd", PAIR, seed, no_ps, 150.0, preset="no-ps-cpu", data_scale=1250)
    assert study_numbers.main([str(root)]) == 0
    text = capsys.readouterr().out
    # se sqrt(2 / 2 + 2 / 2) = 1.41, t = -6 / 1.41 = -4.24 on df 2: p = 0.0513; one contrast, Holm leaves it
    assert "- no-ps-cpu - full = -6.00 points (n = 2 vs 2), 95% CI [-12.08, +0.08], Welch t = -4.24 (df 2.0), " \
           "p = 0.0513: no detectable effect; Holm-adjusted p = 0.0513" in text


def test_data_free_rows_are_read_off_the_real_subset_curve(tmp_path, capsys):
    root = tmp_path / "runs"
    fake_run(root, "kd", PAIR, 0, 30.0, 50.0, preset="cpu", data_scale=500)
    fake_run(root, "kd", PAIR, 0, 60.0, 100.0, preset="cpu", data_scale=5000)
    fake_run(root, "kd", PAIR, 0, 80.0, 900.0, preset="cpu")
    fake_run(root, "scratch", PAIR, 0, 65.0, 300.0, preset="cpu")
    for method, top1 in (("cmi", 45.0), ("dafl", 20.0), ("deepinv", 70.0)):
        fake_run(root, method, PAIR, 0, top1, 200.0, preset="cpu")
    teacher = tmp_path / "teacher.json"
    teacher.write_text(json.dumps({"top1": 89.67}))
    assert study_numbers.main([str(root), "--teacher", str(teacher)]) == 0
    text = capsys.readouterr().out
    assert "- teacher: 89.67%" in text
    assert "- student from scratch, all 50,000 images: 65.00 [1], train 300 s" in text
    assert "- KD on all 50,000 images: 80.00 [1], train 900 s" in text
    # 45 is halfway from 30 (500) to 60 (5,000): sqrt(500 * 5,000) = 1,581 in log N; 45 / 80 = 56%
    assert "| cmi-cpu | 45.00 | 56 | 1,581 |" in text
    assert "| dafl-cpu | 20.00 | 25 | <500 |" in text
    # 70 is halfway from 60 (5,000) to KD on all 50,000 (80): sqrt(5,000 * 50,000) = 15,811
    assert "| deepinv-cpu | 70.00 | 88 | 15,811 |" in text
    assert "sizes 500, 5,000, 50,000" in text
    assert study_numbers.real_equivalent([(500.0, 30.0), (5000.0, 60.0)], 61.0) == ">5,000"


def test_a_row_at_the_noise_floor_with_no_spread_is_not_testable(tmp_path, capsys):
    root = tmp_path / "runs"
    for seed in (0, 1):
        fake_run(root, "noise", PAIR, seed, 10.0, 50.0, preset="cpu")
        fake_run(root, "zskt", PAIR, seed, 10.0, 600.0, preset="cpu")
        fake_run(root, "dfq", PAIR, seed, 30.0 + seed, 600.0, preset="cpu")
    assert study_numbers.main([str(root)]) == 0
    text = capsys.readouterr().out
    assert "| zskt-cpu | 10.00 ± 0.00 [2] | +0.00 | not testable | - |" in text
    # 30.5 ± 0.71 against 10 ± 0: se 0.5, t = 41.0 on df 1 (only dfq's side has spread): p = 0.0155
    assert "| dfq-cpu | 30.50 ± 0.71 [2] | +20.50 | 41.00 (1.0), 0.0155 | above noise |" in text
