"""Issue 32, items 3, 7, 8: every run sets cuDNN autotuning, TF32 and determinism
explicitly and records them; a run's peak memory is its own, not the process's."""
from __future__ import annotations

import json
import os

import torch

from dfkd_bench import backends, harness, store
from tests.helpers import smoke_spec


def test_a_cuda_run_autotunes_and_computes_fp32_in_fp32_and_the_switches_come_back():
    before = backends._state()
    with backends.applied("cuda"):
        assert torch.backends.cudnn.benchmark and not torch.backends.cudnn.allow_tf32
        assert not torch.backends.cuda.matmul.allow_tf32 and not torch.are_deterministic_algorithms_enabled()
    with backends.applied("cuda", tf32=True):
        assert torch.backends.cudnn.allow_tf32 and torch.backends.cuda.matmul.allow_tf32
    with backends.applied("cpu"):
        assert not torch.backends.cudnn.benchmark
    assert backends._state() == before


def test_deterministic_turns_off_autotuning_and_fixes_cublas_workspace():
    before = backends._state()
    with backends.applied("cuda", deterministic=True):
        assert torch.are_deterministic_algorithms_enabled() and torch.backends.cudnn.deterministic
        assert not torch.backends.cudnn.benchmark and os.environ["CUBLAS_WORKSPACE_CONFIG"] == ":4096:8"
        record = backends.record()
        assert record["deterministic"] and record["cublas_workspace_config"] == ":4096:8"
    assert backends._state() == before and not torch.are_deterministic_algorithms_enabled()


def test_environment_records_the_switches_and_deterministic_is_a_setting(tiny_zoo, tmp_path):
    plain = harness.run(smoke_spec("kd", tmp_path / "r"))
    env = json.loads((tmp_path / "r" / plain.name / store.ENVIRONMENT).read_text())
    assert {"cudnn_version", "cudnn_benchmark", "deterministic", "tf32_matmul", "tf32_cudnn"} <= set(env)
    assert env["deterministic"] is False and env["tf32_cudnn"] is False and env["cudnn_benchmark"] is False
    strict = harness.run(smoke_spec("kd", tmp_path / "r", deterministic=True))
    assert strict.name != plain.name and strict.final_top1 == plain.final_top1  # the CPU was deterministic already
    assert json.loads((tmp_path / "r" / strict.name / store.ENVIRONMENT).read_text())["deterministic"] is True
    assert not torch.are_deterministic_algorithms_enabled()
    config = json.loads((tmp_path / "r" / plain.name / store.CONFIG).read_text())
    assert "deterministic" not in config["run"] and "tf32" not in config["run"]  # neutral: old names kept


def test_a_runs_peak_memory_is_its_own_not_the_processs(tiny_zoo, tmp_path):
    big = torch.ones(100_000_000)  # 400 MB, touched, then freed: the process's peak is above it
    big += 1
    del big
    process_peak = backends.peak_memory(torch.device("cpu"))[0]
    summary = harness.run(smoke_spec("kd", tmp_path / "r"))
    assert summary.peak_reserved_mb is None  # the CPU has no allocator reserve
    assert summary.peak_memory_mb < process_peak - 300  # was: the process's peak, the 400 MB included
