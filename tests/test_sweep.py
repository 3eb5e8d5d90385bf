"""Issue 15: ``dfkd-bench sweep`` with real processes: a grid on 2 local workers runs
every cell exactly once; a killed sweep resumes to the uninterrupted result; two
sweeps of one grid at once never share a cell; submitit's local executor runs a grid
and a simulated preemption requeues and resumes."""
from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from dfkd_bench import store, sweep
from dfkd_bench.cli import main
from dfkd_bench.errors import UserError
from tests.conftest import ROOT

TINY = ["--plugin", "tests.plugins.tiny", "sweep", "--dataset", "tiny", "--pair", "cnn_s-cnn_s", "--epochs", "3",
        "--set", "batch_size=8", "--set", "kd_steps=2"]
SLOW = [*TINY, "--methods", "sleepy", "--seeds", "0,1", "--set", "sleepy.sleep=0.4"]


def epochs_by_run(out: Path) -> dict[str, list]:
    """For every run under ``out``: its epoch records' epochs and whether it resumed."""
    found = {}
    for path in sorted(out.glob("*/metrics.jsonl")):
        records = [json.loads(line) for line in path.read_text().splitlines()]
        found[path.parent.name] = ([r["epoch"] for r in records if r["event"] == "epoch"],
                                   any(r["event"] == "resume" for r in records))
    return found


def final_results(out: Path) -> dict[str, float]:
    return {p.parent.name: json.loads(p.read_text())["final_top1"] for p in out.glob("*/summary.json")}


def test_a_grid_file_expands_through_the_planner(tmp_path, tiny_zoo):
    grid = tmp_path / "grid.yaml"
    grid.write_text("datasets: [tiny]\npairs: [cnn_s-cnn_s, cnn_m-cnn_s]\nmethods:\n  - kd\n"
                    "  - {method: deepinv, preset: smoke, set: {steps: 2}, pairs: [cnn_s-cnn_s]}\nseeds: [0, 1]\n"
                    f"data_scales: [16, 32]\nout: {tmp_path / 'r'}\n")
    specs = [s for s in sweep.expand(sweep.load_grid(grid)) if s.pair == "cnn_s-cnn_s"]
    assert {s.method for s in sweep.expand(sweep.load_grid(grid)) if s.pair == "cnn_m-cnn_s"} == {"kd"}
    assert [(s.method, s.run.data_scale, s.seed) for s in specs] == [
        (m, n, seed) for m in ("kd", "deepinv") for n in (16, 32) for seed in (0, 1)]
    assert {s.method_config.steps for s in specs if s.method == "deepinv"} == {2}
    assert all(sweep.cell_status(s).status == sweep.PENDING for s in specs)


def test_a_method_entry_with_seeds_runs_only_at_those_of_the_sweeps_seeds(tmp_path, tiny_zoo):
    grid = tmp_path / "grid.yaml"
    grid.write_text("datasets: [tiny]\npairs: [cnn_s-cnn_s]\nmethods:\n  - kd\n  - {method: scratch, seeds: [0, 2]}\n"
                    f"seeds: [0, 1, 2]\nout: {tmp_path / 'r'}\n")
    loaded = sweep.load_grid(grid)
    assert [(s.method, s.seed) for s in sweep.expand(loaded)] == [
        ("kd", 0), ("kd", 1), ("kd", 2), ("scratch", 0), ("scratch", 2)]
    loaded.seeds = [1]  # as --seeds 1 sets it: the limited entry has no cell left
    assert [(s.method, s.seed) for s in sweep.expand(loaded)] == [("kd", 1)]


@pytest.mark.parametrize("text, message", [
    ("methods: [kd]\nmodels: [x]\n", "unknown key 'models'"),
    ("pairs: [cnn_s-cnn_s]\n", "names no methods"),
    ("methods: [kd]\nslurm: {gpus: 2}\n", "slurm key 'gpus' unknown"),
    ("methods: [{name: kd}]\n", "must be a name or a mapping with method, preset, set, pairs and seeds"),
    ("methods: [{method: kd, seeds: [0.5]}]\n", "grid: method entry seeds"),
    ("methods: [kd\n", "is not valid YAML"),
])
def test_bad_grid_files_are_one_line_errors(tmp_path, text, message, capsys):
    grid = tmp_path / "grid.yaml"
    grid.write_text(text)
    assert main(["sweep", str(grid), "--out", str(tmp_path / "r")]) == 2
    err = capsys.readouterr().err
    assert message in err and len(err.strip().splitlines()) == 1
    assert not (tmp_path / "r").exists()


def test_two_local_workers_run_every_cell_exactly_once(tmp_path, tiny_zoo, capsys):
    out = tmp_path / "r"
    argv = [*TINY, "--methods", "kd,scratch", "--seeds", "0,1", "--workers", "2", "--out", str(out)]
    assert main(argv) == 0
    runs = epochs_by_run(out)
    assert len(runs) == 4 and all(epochs == [0, 1, 2] and not resumed for epochs, resumed in runs.values())
    capsys.readouterr()
    assert main(argv) == 0  # a second sweep finds every cell done and starts nothing
    assert "4 cells, 4 already done, 0 to run" in capsys.readouterr().out
    assert epochs_by_run(out) == runs
    assert main([*argv, "--status"]) == 0
    assert "cells: 4 completed, 0 running, 0 interrupted, 0 failed, 0 pending" in capsys.readouterr().out


def _sweep_process(out: Path, *extra: str) -> subprocess.Popen:
    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    return subprocess.Popen([sys.executable, "-m", "dfkd_bench.cli", *SLOW, "--out", str(out), *extra], env=env,
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, start_new_session=True)


def _wait_for(predicate, timeout: float = 120.0) -> None:
    deadline = time.monotonic() + timeout
    while not predicate():
        if time.monotonic() > deadline:
            raise TimeoutError("condition not reached")
        time.sleep(0.1)


def test_a_killed_sweep_resumes_to_the_uninterrupted_result(tmp_path, tiny_zoo):
    assert main([*SLOW, "--out", str(tmp_path / "full")]) == 0
    cut = tmp_path / "cut"
    proc = _sweep_process(cut, "--workers", "1")
    # kill -9 the sweep and its worker once the first cell has checkpointed an epoch
    _wait_for(lambda: any((p.parent / store.CHECKPOINT).exists() for p in cut.glob("*/metrics.jsonl")))
    os.killpg(proc.pid, signal.SIGKILL)
    proc.wait()
    first = sweep.expand(sweep.Grid(methods=["sleepy"], datasets=["tiny"], pairs=["cnn_s-cnn_s"], seeds=[0],
                                    epochs=3, sets={"batch_size": 8, "kd_steps": 2, "sleepy.sleep": 0.4},
                                    out=str(cut)))[0]
    # the kernel drops the dead worker's lock; its "running" summary then reads as interrupted
    _wait_for(lambda: sweep.cell_status(first).status != sweep.RUNNING, timeout=30)
    assert sweep.cell_status(first).status == sweep.INTERRUPTED
    assert main([*SLOW, "--out", str(cut)]) == 0  # the lock died with its holder: the cell resumes
    assert final_results(cut) == final_results(tmp_path / "full")
    runs = epochs_by_run(cut)
    assert any(resumed for _, resumed in runs.values())
    assert all(sorted(set(epochs)) == [0, 1, 2] for epochs, _ in runs.values())


def test_two_sweeps_of_one_grid_at_once_never_share_a_cell(tmp_path, tiny_zoo):
    out = tmp_path / "r"
    procs = [_sweep_process(out, "--workers", "1") for _ in range(2)]
    for proc in procs:
        _, err = proc.communicate(timeout=300)
        assert proc.returncode == 0, err
    runs = epochs_by_run(out)
    assert len(runs) == 2
    assert all(epochs == [0, 1, 2] and not resumed for epochs, resumed in runs.values())


def test_slurm_without_submitit_names_the_extra(monkeypatch):
    monkeypatch.setitem(sys.modules, "submitit", None)
    with pytest.raises(UserError, match=r'pip install -e "\.\[slurm\]"'):
        sweep.make_cell_job()


def test_submitit_local_executor_requeues_a_preempted_cell_and_it_resumes(tmp_path, tiny_zoo):
    pytest.importorskip("submitit", reason="submitit is the optional extra .[slurm]")
    from tests.plugins import tiny  # noqa: F401

    def grid(out):
        return sweep.Grid(methods=["sleepy"], datasets=["tiny"], pairs=["cnn_s-cnn_s"], seeds=[0], epochs=4,
                          sets={"batch_size": 8, "kd_steps": 2, "sleepy.sleep": 0.5}, out=str(out))

    full = grid(tmp_path / "full")
    plugins = ["tests.plugins.tiny"]
    (full_job,) = sweep.submit(sweep.expand(full), full, tmp_path / "logs-full", cluster="local", plugins=plugins)
    assert full_job.result() == "completed"
    cut = grid(tmp_path / "cut")
    (job,) = sweep.submit(sweep.expand(cut), cut, tmp_path / "logs", cluster="local", plugins=plugins)
    _wait_for(lambda: any((p.parent / store.CHECKPOINT).exists() for p in (tmp_path / "cut").glob("*/metrics.jsonl")))
    # What Slurm sends the job's process on preemption or timeout (submitit's USR2); the job
    # process is the child of the local executor's controller process.
    (task,) = Path(f"/proc/{job._process.pid}/task/{job._process.pid}/children").read_text().split()
    os.kill(int(task), signal.SIGUSR2)
    assert job.result() == "completed"
    (runs,) = epochs_by_run(tmp_path / "cut").values()
    assert runs[1] and sorted(set(runs[0])) == [0, 1, 2, 3]  # it resumed, every epoch recorded
    assert final_results(tmp_path / "cut") == final_results(tmp_path / "full")


def test_workers_auto_is_one_a_core_as_memory_allows_or_one_a_gpu(monkeypatch, capsys):
    from dfkd_bench import cli

    monkeypatch.setattr(sweep, "_gpus", lambda: [])
    monkeypatch.setattr(os, "cpu_count", lambda: 8)
    pages = {"SC_PAGE_SIZE": 4096, "SC_PHYS_PAGES": 64 * 2**30 // 4096}
    monkeypatch.setattr(os, "sysconf", lambda name: pages[name])
    assert sweep.default_workers() == 8  # 64 GB holds 8 workers of 3 GB
    pages["SC_PHYS_PAGES"] = 12 * 2**30 // 4096
    assert sweep.default_workers() == 4  # 12 GB: 4 of them
    monkeypatch.setattr(sweep, "_gpus", lambda: ["0", "1"])
    assert sweep.default_workers() == 2
    assert cli._workers("auto") == 2 and cli._workers("3") == 3
    for bad in ("0", "-1", "two"):
        with pytest.raises(UserError, match="expected a positive integer or auto"):
            cli._workers(bad)
