"""reports/cpu-structure/scripts/class_balance.py (the cpu-structure report's script, kept
beside it): its per-class counts of a finished pool run are what the harness recorded for
the same final pool in ``diagnostics.json``."""
from __future__ import annotations

import importlib.util
import json
import math

from dfkd_bench import harness
from dfkd_bench.diagnostics import DIAGNOSTICS_SUMMARY
from tests.conftest import ROOT
from tests.helpers import smoke_spec

spec = importlib.util.spec_from_file_location(
    "class_balance", ROOT / "reports" / "cpu-structure" / "scripts" / "class_balance.py")
class_balance = importlib.util.module_from_spec(spec)
spec.loader.exec_module(class_balance)


def test_the_counts_of_a_final_pool_are_the_harness_diagnostics(tiny_zoo, tmp_path, capsys):
    summary = harness.run(smoke_spec("deepinv", tmp_path / "r", precision="fp32"))
    run = tmp_path / "r" / summary.name
    assert class_balance.main([str(run), "--classes", "4"]) == 0
    line = capsys.readouterr().out.strip().splitlines()[-1]
    label, seed, samples, counts, _, entropy = [cell.strip() for cell in line.strip("|").split("|")]
    recorded = json.loads((run / DIAGNOSTICS_SUMMARY).read_text())
    assert (label, seed) == (summary.label, "0")
    assert [int(c) for c in counts.split()] == recorded["class_counts"]
    assert int(samples) == sum(recorded["class_counts"]) > 0
    assert math.isclose(float(entropy), recorded["normalised_entropy"], abs_tol=5e-4)
