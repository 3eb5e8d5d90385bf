"""Issue 32, items 3, 7, 8: every run sets cuDNN autotuning, TF32 and determinism
explicitly and records them; a run's peak memory is its own, not the process's."""
from __future__ import annotations

import json
import os

import pytest
import torch

from dfkd_bench import backends, harness, store
from tests.helpers import StopAfter, same_tensors, smoke_spec, student_state


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


def test_start_up_is_its_own_phase_changes_nothing_and_each_process_pays_it(tiny_zoo, tmp_path, monkeypatch):
    """Issue 32, item 9: the kernels' first run (autotuning on CUDA) is timed as "startup",
    outside train time, and the warm-up leaves every number of the run as it was."""
    timed = harness.run(smoke_spec("deepinv", tmp_path / "a", epochs=2))
    assert timed.seconds["startup"] > 0
    assert timed.train_seconds == sum(timed.seconds[p] for p in ("synthesis", "augmentation", "distillation"))
    calls = []

    def no_warm_up(*args, **kwargs):
        calls.append(args[4:7])  # synthesis batch, KD batch, device
        return 0.0

    monkeypatch.setattr(backends, "warm_up_kernels", no_warm_up)
    bare = harness.run(smoke_spec("deepinv", tmp_path / "b", epochs=2))
    assert calls and calls[0][0] == 16 and bare.seconds["startup"] == 0.0  # deepinv smoke: synth_batch 16
    assert bare.final_top1 == timed.final_top1
    assert same_tensors(student_state(timed, tmp_path / "a"), student_state(bare, tmp_path / "b"))
    # a resume is a new process: it pays the start-up again, added to the first one's
    monkeypatch.setattr(backends, "warm_up_kernels", lambda *args, **kwargs: 1.5)
    with pytest.raises(KeyboardInterrupt):
        harness.run(smoke_spec("kd", tmp_path / "c", epochs=3), StopAfter(0))
    resumed = harness.run(smoke_spec("kd", tmp_path / "c", epochs=3))
    assert resumed.seconds["startup"] == 3.0 and resumed.status == "completed"


def test_compile_runs_the_student_compiled_records_it_and_falls_back_when_it_cannot(tiny_zoo, tmp_path, monkeypatch):
    """Issue 32, item 6: ``run.compile`` compiles the student in the start-up phase and
    environment.json says what ran; the compiled run computes what the eager one does."""
    eager = harness.run(smoke_spec("kd", tmp_path / "r", epochs=2))
    compiled = harness.run(smoke_spec("kd", tmp_path / "r", epochs=2, compile=True))
    assert compiled.name != eager.name and compiled.status == "completed"
    env = json.loads((tmp_path / "r" / compiled.name / store.ENVIRONMENT).read_text())
    assert env["compiled"] == "student"
    assert json.loads((tmp_path / "r" / eager.name / store.ENVIRONMENT).read_text())["compiled"] == "off"
    a, b = student_state(eager, tmp_path / "r"), student_state(compiled, tmp_path / "r")
    # the same arithmetic up to the fused kernels' rounding (measured: at most 1.5e-3 after 2 epochs)
    assert a.keys() == b.keys() and all(torch.allclose(a[k].float(), b[k].float(), atol=1e-2) for k in a)

    def broken(*args, **kwargs):
        raise RuntimeError("inductor: no working C++ compiler\nsecond line")

    monkeypatch.setattr(torch.nn.Module, "compile", lambda self, **kw: setattr(self, "_compiled_call_impl", broken))
    fallback = harness.run(smoke_spec("kd", tmp_path / "f", epochs=2, compile=True))
    env = json.loads((tmp_path / "f" / fallback.name / store.ENVIRONMENT).read_text())
    assert env["compiled"] == "eager (torch.compile failed: RuntimeError: inductor: no working C++ compiler)"
    assert fallback.final_top1 == eager.final_top1
