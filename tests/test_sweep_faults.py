"""Issue 29: sweeps that never lie. Slurm means Slurm; a login node without the grid's
GPU plans and checks it; a resumed cell keeps its thread count; a sweep whose cells did
not all complete exits non-zero and says why; workers die with their sweep; Slurm
timeouts and preemption are interruptions; workers get the parent's GPUs; a file system
without locks is one line; grid values are checked like the command line's."""
from __future__ import annotations

import errno
import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
import torch

from dfkd_bench import harness, store, sweep
from dfkd_bench.cli import main
from dfkd_bench.errors import interruption
from dfkd_bench.signals import sigterm_as_interrupt
from tests.conftest import ROOT
from tests.test_sweep import SLOW, TINY, _wait_for, epochs_by_run, final_results

GRID = ("datasets: [tiny]\npairs: [cnn_s-cnn_s]\nmethods: [kd]\nseeds: [0, 1]\nepochs: 2\ndevice: {device}\n"
        "set: {{batch_size: 8, kd_steps: 2}}\nout: {out}\n")


def write_grid(tmp_path: Path, device: str = "cuda") -> Path:
    grid = tmp_path / "grid.yaml"
    grid.write_text(GRID.format(device=device, out=tmp_path / "r"))
    return grid


def lock_holder_pid(rundir: Path) -> int | None:
    text = (rundir / store.LOCK).read_text() if (rundir / store.LOCK).exists() else ""
    return int(text.split()[1]) if text.startswith("process ") else None


def alive(pid: int) -> bool:
    try:
        state = Path(f"/proc/{pid}/stat").read_text().split(")")[-1].split()[0]
    except OSError:
        return False
    return state != "Z"


# --- 1. slurm means Slurm -------------------------------------------------------------

def test_executor_slurm_without_slurm_is_a_one_line_error_and_starts_nothing(tmp_path, tiny_zoo, capsys,
                                                                              monkeypatch):
    monkeypatch.setenv("PATH", str(tmp_path / "empty-bin"))  # no sbatch, no srun
    monkeypatch.setattr(sweep, "submit", lambda *a, **k: pytest.fail("submitted without Slurm"))
    out = tmp_path / "r"
    argv = ["--plugin", "tests.plugins.tiny", "sweep", str(write_grid(tmp_path, "cpu")), "--executor", "slurm"]
    assert main(argv) == 2
    err = capsys.readouterr().err
    assert len(err.strip().splitlines()) == 1
    assert "no Slurm here" in err and "--executor local" in err and "submitit-local" in err
    assert not out.exists()


def test_submit_names_slurm_and_a_large_timeout_budget_never_submitits_automatic_choice(tmp_path, monkeypatch):
    submitit = pytest.importorskip("submitit", reason="submitit is the optional extra .[slurm]")
    made = {}

    class Recording:
        def __init__(self, folder, cluster=None, **kwargs):
            made.update(folder=folder, cluster=cluster, **kwargs)

        def update_parameters(self, **params):
            made["params"] = params

        def map_array(self, job, specs):
            return list(specs)

    monkeypatch.setattr(submitit, "AutoExecutor", Recording)
    grid = sweep.Grid(methods=["kd"], slurm={"partition": "gpu", "timeout_min": 720})
    sweep.submit(["cell"], grid, tmp_path)
    assert made["cluster"] == "slurm" and made["slurm_max_num_timeout"] == sweep.MAX_NUM_TIMEOUT
    assert made["params"]["timeout_min"] == 720 and made["params"]["slurm_partition"] == "gpu"
    sweep.submit(["cell"], sweep.Grid(methods=["kd"], slurm={"max_num_timeout": 7}), tmp_path, cluster="local")
    assert made["cluster"] == "local" and made["local_max_num_timeout"] == 7
    with pytest.raises(ValueError):
        sweep.submit(["cell"], grid, tmp_path, cluster=None)


# --- 2. a login node without the grid's GPU -----------------------------------------

def test_a_gpu_grid_is_planned_and_checked_on_a_node_without_cuda(tmp_path, tiny_zoo, capsys, monkeypatch):
    assert not torch.cuda.is_available()
    grid = write_grid(tmp_path, "cuda")
    plugin = ["--plugin", "tests.plugins.tiny"]
    assert main([*plugin, "sweep", str(grid), "--status"]) == 0  # was: "--device cuda: no CUDA device", exit 2
    assert "cells: 0 completed, 0 running, 0 interrupted, 0 failed, 2 pending" in capsys.readouterr().out
    assert not (tmp_path / "r").exists()  # --status starts and writes nothing
    # The compute node: a worker that presents itself as the target (a CUDA device whose
    # precision auto resolves to bf16) resolves and names the runs itself.
    specs = sweep.expand(sweep.load_grid(grid))
    assert {s.run.device for s in specs} == {"cuda"} and {s.run.precision for s in specs} == {"auto"}
    monkeypatch.setattr(harness, "resolve_target",
                        lambda spec, say=None: harness.Target(torch.device("cpu"), "bf16", "cuda"))
    assert [sweep.run_cell(s) for s in specs] == ["completed", "completed"]
    names = sorted(p.name for p in (tmp_path / "r").iterdir())
    assert all(json.loads((tmp_path / "r" / n / store.CONFIG).read_text())["device"] == "cuda" for n in names)
    monkeypatch.undo()
    # Back on the login node: --status finds them, and a re-submission runs nothing.
    assert main([*plugin, "sweep", str(grid), "--status"]) == 0
    out = capsys.readouterr().out
    assert "cells: 2 completed, 0 running, 0 interrupted, 0 failed, 0 pending" in out and "cuda bf16" in out
    monkeypatch.setattr(sweep.shutil, "which", lambda tool: f"/usr/bin/{tool}")
    monkeypatch.setattr(sweep, "submit", lambda *a, **k: pytest.fail("re-submitted a completed cell"))
    assert main([*plugin, "sweep", str(grid), "--executor", "slurm"]) == 0
    assert "2 already done, 0 to run" in capsys.readouterr().out
    assert sorted(p.name for p in (tmp_path / "r").iterdir()) == names


def test_a_gpu_grid_gets_the_gpu_default_pair_and_auto_without_pairs_is_refused_on_slurm(tmp_path, capsys,
                                                                                         monkeypatch):
    (spec,) = sweep.expand(sweep.Grid(methods=["kd"], datasets=["cifar10"], device="cuda"))
    assert spec.pair == "resnet34-resnet18"  # the compute node's default, not this CPU's resnet20-resnet8
    grid = tmp_path / "g.yaml"
    grid.write_text(f"datasets: [cifar10]\nmethods: [kd]\nout: {tmp_path / 'r'}\n")
    monkeypatch.setattr(sweep.shutil, "which", lambda tool: f"/usr/bin/{tool}")
    assert main(["sweep", str(grid), "--executor", "slurm"]) == 2
    err = capsys.readouterr().err
    assert "device auto and no pairs" in err and "`pairs:`" in err and len(err.strip().splitlines()) == 1


def test_a_local_executor_needs_the_grids_device_here(tmp_path, tiny_zoo, capsys):
    assert main(["--plugin", "tests.plugins.tiny", "sweep", str(write_grid(tmp_path, "cuda"))]) == 2
    assert "no CUDA device is available here" in capsys.readouterr().err
    assert not (tmp_path / "r").exists()


# --- 3. a resumed cell keeps its thread count ---------------------------------------

def test_a_resumed_run_computes_with_the_thread_count_it_started_with(tmp_path, tiny_zoo, monkeypatch):
    from tests.plugins import tiny

    monkeypatch.setattr(tiny.SelfTerminating, "sent", False)  # it signals once a process; another test may have
    (spec,) = sweep.expand(sweep.Grid(methods=["self_terminating"], datasets=["tiny"], pairs=["cnn_s-cnn_s"],
                                      epochs=3, sets={"batch_size": 8, "kd_steps": 2}, out=str(tmp_path / "r")))
    before = torch.get_num_threads()
    try:
        torch.set_num_threads(1)
        with pytest.raises(KeyboardInterrupt), sigterm_as_interrupt():
            harness.run(spec)
        torch.set_num_threads(2)  # a process with another share of the cores resumes it
        seen = []
        monkeypatch.setattr(harness.Session, "train_epoch",
                            lambda self, epoch, f=harness.Session.train_epoch: seen.append(torch.get_num_threads())
                            or f(self, epoch))
        assert harness.run(spec).status == "completed"
        assert seen and set(seen) == {1}
        assert torch.get_num_threads() == 2  # the process's own count comes back
    finally:
        torch.set_num_threads(before)
    (rundir,) = (tmp_path / "r").iterdir()
    records = [json.loads(line) for line in (rundir / store.METRICS).read_text().splitlines()]
    (resume,) = [r for r in records if r["event"] == "resume"]
    assert resume["environment"]["threads"] == 1
    assert json.loads((rundir / store.ENVIRONMENT).read_text())["threads"] == 1


def test_worker_threads_follow_the_workers_asked_for_not_the_cells_left(monkeypatch):
    monkeypatch.setattr(os, "cpu_count", lambda: 2)
    monkeypatch.setattr(sweep, "_gpus", lambda: [])
    assert sweep.worker_layout(2, 4) == (2, 1, [None, None])
    assert sweep.worker_layout(2, 1) == (1, 1, [None])  # was: one process with 2 threads


# --- 7. GPUs through the parent's CUDA_VISIBLE_DEVICES --------------------------------

@pytest.mark.parametrize("visible, count, expected", [
    (None, 2, ["0", "1"]),
    ("2,3", 2, ["2", "3"]),
    ("MIG-aaaa,MIG-bbbb", 2, ["MIG-aaaa", "MIG-bbbb"]),
    ("5,6,7", 2, ["5", "6"]),  # torch counts the first valid entries
])
def test_workers_get_the_parents_gpus(monkeypatch, visible, count, expected):
    monkeypatch.setattr(torch.cuda, "is_available", lambda: True)
    monkeypatch.setattr(torch.cuda, "device_count", lambda: count)
    if visible is None:
        monkeypatch.delenv("CUDA_VISIBLE_DEVICES", raising=False)
    else:
        monkeypatch.setenv("CUDA_VISIBLE_DEVICES", visible)
    assert sweep._gpus() == expected
    assert sweep.worker_layout(3, 3)[2] == [expected[0], expected[1], expected[0]]


# --- 4 and 5. dead workers, a dead sweep --------------------------------------------

def _sweep(out: Path, *extra: str) -> subprocess.Popen:
    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    return subprocess.Popen([sys.executable, "-m", "dfkd_bench.cli", *SLOW, "--out", str(out), *extra], env=env,
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, start_new_session=True)


def _checkpointed_holder(out: Path) -> tuple[Path, int]:
    """A run under ``out`` with a checkpoint, and the PID of the process writing it."""
    found = []

    def ready():
        for ckpt in out.glob(f"*/{store.CHECKPOINT}"):
            pid = lock_holder_pid(ckpt.parent)
            summary = ckpt.parent / store.SUMMARY
            if pid and summary.exists() and json.loads(summary.read_text())["status"] == "running":
                found.append((ckpt.parent, pid))
                return True
        return False

    _wait_for(ready)
    return found[0]


def test_a_dead_worker_fails_the_sweep_by_name_and_the_rerun_resumes_to_the_same_result(tmp_path, tiny_zoo):
    assert main([*SLOW, "--out", str(tmp_path / "full"), "--workers", "2"]) == 0
    cut = tmp_path / "cut"
    proc = _sweep(cut, "--workers", "2")
    rundir, worker = _checkpointed_holder(cut)
    os.kill(worker, signal.SIGKILL)
    out, err = proc.communicate(timeout=300)
    assert proc.returncode == 1, (out, err)  # was 0
    assert f"1 interrupted" in out and "1 worker died: worker" in out and "exit code -9" in out
    assert "interrupted: worker" in err and "re-run the sweep to resume it" in err
    assert main([*SLOW, "--out", str(cut), "--workers", "2"]) == 0
    assert final_results(cut) == final_results(tmp_path / "full")
    assert any(resumed for _, resumed in epochs_by_run(cut).values())


def test_killing_the_sweep_ends_its_workers_and_the_rerun_resumes(tmp_path, tiny_zoo):
    assert main([*SLOW, "--out", str(tmp_path / "full"), "--workers", "1"]) == 0
    cut = tmp_path / "cut"
    proc = _sweep(cut, "--workers", "1")
    rundir, worker = _checkpointed_holder(cut)
    os.kill(proc.pid, signal.SIGKILL)  # the main process only: its worker is left without a parent
    proc.communicate(timeout=30)
    _wait_for(lambda: not alive(worker), timeout=60)  # was: it ran every cell, then idled for ever
    assert json.loads((rundir / store.SUMMARY).read_text())["status"] == "interrupted"
    assert main([*SLOW, "--out", str(cut), "--workers", "1"]) == 0
    assert final_results(cut) == final_results(tmp_path / "full")


def test_failed_cells_left_without_retry_failed_make_a_nonzero_exit_that_says_so(tmp_path, tiny_zoo, capsys):
    argv = [*TINY, "--methods", "diverging,kd", "--out", str(tmp_path / "r")]
    assert main(argv) == 1
    capsys.readouterr()
    assert main(argv) == 1  # was: "2 already done or failed, 0 to run", exit 0
    captured = capsys.readouterr()
    assert "1 already done, 1 failed and left as they are (--retry-failed runs them), 0 to run" in captured.out
    assert "diverging seed 0 (scale -): failed: non-finite" in captured.err and "--retry-failed" in captured.err


# --- 6. Slurm timeouts and preemption are interruptions ------------------------------

def test_submitits_timeout_and_requeue_exits_leave_the_cell_interrupted_and_resumable(tmp_path, tiny_zoo,
                                                                                     monkeypatch):
    submitit_utils = pytest.importorskip("submitit.core.utils", reason="submitit is the optional extra .[slurm]")
    from tests.plugins.tiny import Sleepy

    assert interruption(submitit_utils.UncompletedJobError("Job not requeued because: timed-out too many times."))
    assert interruption(SystemExit(-1)) and interruption(RuntimeError("x")) is None
    grid = sweep.Grid(methods=["sleepy"], datasets=["tiny"], pairs=["cnn_s-cnn_s"], epochs=3,
                      sets={"batch_size": 8, "kd_steps": 2, "sleepy.sleep": 0.0}, out=str(tmp_path / "r"))
    (spec,) = sweep.expand(grid)
    original = Sleepy.synthesize
    for stop in (submitit_utils.UncompletedJobError("Job not requeued because: timed-out too many times."),
                 SystemExit(-1)):
        def synthesize(self, epoch, stop=stop):
            if epoch == 1:
                raise stop
            return original(self, epoch)

        monkeypatch.setattr(Sleepy, "synthesize", synthesize)
        with pytest.raises(type(stop)):
            harness.run(spec)
        status = sweep.cell_status(spec)
        assert status.status == "interrupted" and status.epochs_done == 1, status  # was: failed
    monkeypatch.setattr(Sleepy, "synthesize", original)
    assert harness.run(spec).status == "completed"


# --- 8. a file system without locks ---------------------------------------------------

def test_a_file_system_without_flock_is_one_line_and_locks_off_runs(tmp_path, tiny_zoo, capsys, monkeypatch):
    def no_flock(fd, op):
        raise OSError(errno.ENOSYS, "Function not implemented")

    monkeypatch.setattr(store.fcntl, "flock", no_flock)
    run = ["--plugin", "tests.plugins.tiny", "run", *TINY[3:], "--methods", "kd", "--out", str(tmp_path / "r")]
    for argv in (run, [*TINY, "--methods", "kd", "--out", str(tmp_path / "r")]):  # a sweep checks before it starts
        assert main(argv) == 2
        err = capsys.readouterr().err
        assert len(err.strip().splitlines()) == 1
        assert "does not support file locks (flock: ENOSYS" in err and "DFKD_BENCH_LOCKS=off" in err
    monkeypatch.setenv("DFKD_BENCH_LOCKS", "off")
    assert main(run) == 0


# --- 9. grid values are checked like the command line's ---------------------------

@pytest.mark.parametrize("line, message", [
    ('seeds: ["a"]', "seeds ['a']: expected comma-separated integers"),
    ("seeds: [0.5]", "seeds [0.5]: expected comma-separated integers"),  # was: silently seed 0
    ("seeds: [true]", "seeds [True]: expected comma-separated integers"),
    ("data_scales: [100, x]", "data_scales [100, 'x']: expected comma-separated positive integers"),
    ("epochs: 2.5", "epochs 2.5: expected a positive integer"),
    ("epochs: 0", "epochs 0: expected a positive integer"),
    ("device: gpu", "device 'gpu': expected one of auto, cpu, cuda"),
    ("pairs: [1]", "pairs [1]: expected names"),
    ("out: [a, b]", "out ['a', 'b']: expected a non-empty string"),
    ("slurm: {timeout_min: soon}", "slurm.timeout_min 'soon': expected a positive integer"),
    ("slurm: {partition: 3}", "slurm.partition 3: expected a non-empty string"),
])
def test_grid_values_are_checked_as_the_command_line_checks_them(tmp_path, capsys, line, message):
    grid = tmp_path / "grid.yaml"
    grid.write_text(f"methods: [kd]\n{line}\n")
    assert main(["sweep", str(grid), "--out", str(tmp_path / "r")]) == 2
    err = capsys.readouterr().err
    assert message in err and len(err.strip().splitlines()) == 1
    assert not (tmp_path / "r").exists()
    assert main(["sweep", str(grid), "--out", str(tmp_path / "r"), "--status"]) == 2


def test_the_command_line_and_the_grid_read_seeds_alike(tmp_path, capsys):
    assert main(["sweep", "--methods", "kd", "--seeds", "0.5", "--status"]) == 2
    assert "--seeds '0.5': expected comma-separated integers" in capsys.readouterr().err
    grid = tmp_path / "grid.yaml"
    grid.write_text('methods: [kd]\nseeds: ["1", 2]\nepochs: "3"\n')
    loaded = sweep.load_grid(grid)
    assert loaded.seeds == [1, 2] and loaded.epochs == 3  # as --seeds 1,2 --epochs 3
