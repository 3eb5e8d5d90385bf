"""benchmarks/online_probe.py: the class-share arithmetic, and its read of a finished run
agrees with the harness's own evaluation of the same student."""
from __future__ import annotations

import importlib.util
import math

import pytest
import torch

from dfkd_bench import harness
from dfkd_bench.data import load_dataset
from tests.conftest import ROOT
from tests.helpers import smoke_spec

spec = importlib.util.spec_from_file_location("online_probe", ROOT / "benchmarks" / "online_probe.py")
online_probe = importlib.util.module_from_spec(spec)
spec.loader.exec_module(online_probe)


def test_top_share_and_class_entropy_have_their_known_values():
    assert online_probe.top_share(torch.tensor([0, 0, 1, 2]), 3) == 0.5
    assert online_probe.class_entropy(torch.arange(4).repeat(3), 4) == pytest.approx(1.0)
    assert online_probe.class_entropy(torch.zeros(8, dtype=torch.long), 4) == 0.0
    two_of_four = online_probe.class_entropy(torch.tensor([0, 1]), 4)
    assert two_of_four == pytest.approx(math.log(2) / math.log(4))


@pytest.mark.parametrize("generator", ["dfad", "sigmoid"])
def test_the_probe_reads_the_run_the_harness_evaluated(generator, tiny_zoo, tmp_path):
    summary = harness.run(smoke_spec("dfad", tmp_path / "r", generator=generator))
    result = online_probe.probe(tmp_path / "r" / summary.name, load_dataset("tiny"), str(tiny_zoo), batches=2)
    assert result["test_top1"] == pytest.approx(summary.final_top1, abs=0.01)
    for key in ("test_student_top_class", "gen_teacher_top_class", "gen_student_top_class", "gen_agreement"):
        assert 0 <= result[key] <= 1, key
