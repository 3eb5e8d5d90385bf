"""benchmarks/speed.py's arithmetic: per-epoch phase seconds from the run store's running
totals, and the ratios against a stored baseline (no timing is asserted)."""
from __future__ import annotations

import importlib.util

from tests.conftest import ROOT

spec = importlib.util.spec_from_file_location("speed", ROOT / "benchmarks" / "speed.py")
speed = importlib.util.module_from_spec(spec)
spec.loader.exec_module(speed)


def test_the_last_epoch_is_the_difference_of_running_totals():
    records = [{"event": "epoch", "epoch": 0, "seconds_synthesis": 5.0, "seconds_distillation": 3.0},
               {"event": "resume", "epoch": 0},
               {"event": "epoch", "epoch": 1, "seconds_synthesis": 7.5, "seconds_distillation": 4.0,
                "seconds_evaluation": 1.0}]
    per_epoch = speed.phase_seconds_per_epoch(records)
    assert per_epoch == {"synthesis": 2.5, "augmentation": 0.0, "distillation": 1.0, "evaluation": 1.0,
                         "checkpoint": 0.0}


def test_ratios_are_baseline_over_current_per_phase():
    def entry(synth, distill, train, epoch):
        return {"entry": "fast:fast2-cpu", "train_seconds_per_epoch": train, "epoch_seconds_at_preset": epoch,
                "seconds_per_epoch": {"synthesis": synth, "augmentation": 0.0, "distillation": distill,
                                      "evaluation": 2.0}}
    base = {"methods": [entry(6.0, 9.0, 15.0, 18.0), {**entry(1, 1, 1, 1), "entry": "cmi:cpu"}]}
    current = {"methods": [entry(2.0, 4.5, 6.5, 8.0)]}
    (row,) = speed.ratios(current, base)
    assert row == {"entry": "fast:fast2-cpu", "synthesis": 3.0, "augmentation": None, "distillation": 2.0,
                   "evaluation": 1.0, "train": 2.31, "epoch_at_preset": 2.25}
