"""Issue 11: the run store never loses or mixes results. Each test reproduces one
failure seen on the code before the fix (see the issue) and pins the behaviour now."""
from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
from pathlib import Path

import pytest
import torch

from dfkd_bench import harness, store
from dfkd_bench.cli import main
from dfkd_bench.errors import RunLocked
from tests.conftest import ROOT
from tests.helpers import Recorder, StopAfter, smoke_spec

PLUGIN = ["--plugin", "tests.plugins.tiny"]
TINY = [*PLUGIN, "run", "--dataset", "tiny", "--pair", "cnn_s-cnn_s", "--device", "cpu", "--set", "batch_size=8",
        "--set", "kd_steps=2"]


def run_cli(capsys, *argv):
    code = main(list(argv))
    out, err = capsys.readouterr()
    return code, out, err


class Messages(Recorder):
    def message(self, text):
        self.events.append(("message", text))


def interrupted_run(method: str, out, epochs: int, after: int):
    """A smoke run of ``method`` stopped (as by Ctrl-C) once epoch ``after`` is saved."""
    spec = smoke_spec(method, out, epochs=epochs)
    with pytest.raises(KeyboardInterrupt):
        harness.run(spec, StopAfter(after))
    return spec, harness.run_dir(spec)


def messages(recorder) -> list[str]:
    return [e[1] for e in recorder.events if e[0] == "message"]


# 1. report rows never average different settings -------------------------------------

def test_report_rows_are_experiments_not_method_names(capsys, tmp_path, tiny_zoo):
    out = str(tmp_path / "r")
    assert run_cli(capsys, *TINY, "--methods", "kd", "--epochs", "2", "--seeds", "0,1", "--out", out)[0] == 0
    assert run_cli(capsys, *TINY, "--methods", "kd", "--epochs", "3", "--out", out)[0] == 0
    code, _, _ = run_cli(capsys, "report", "--results", out, "--out", str(tmp_path / "rep"))
    md = (tmp_path / "rep" / "comparison.md").read_text()
    rows = {line.split(" | ")[2]: line for line in md.splitlines() if line.startswith("| tiny")}
    assert set(rows) == {"teacher (cnn_s)", "kd (epochs=2)", "kd (epochs=3)"}
    assert " | 2 | " in rows["kd (epochs=2)"] and " ± " in rows["kd (epochs=2)"]  # two seeds averaged
    assert " | 1 | " in rows["kd (epochs=3)"] and " ± " not in rows["kd (epochs=3)"]  # one seed: no "± 0.00"


def test_device_auto_and_cpu_are_one_experiment(capsys, tmp_path, tiny_zoo):
    out = str(tmp_path / "r")
    common = [a for a in TINY if a not in ("--device", "cpu")]
    run_cli(capsys, *common, "--methods", "kd", "--epochs", "2", "--seeds", "0", "--device", "cpu", "--out", out)
    run_cli(capsys, *common, "--methods", "kd", "--epochs", "2", "--seeds", "1", "--device", "auto", "--out", out)
    run_cli(capsys, "report", "--results", out, "--out", str(tmp_path / "rep"))
    md = (tmp_path / "rep" / "comparison.md").read_text()
    assert "| tiny | cnn_s-cnn_s | kd | - | 2 |" in md


# 2. one writer per run directory -------------------------------------------------------

def test_a_locked_run_is_skipped_with_the_holder_named(capsys, tmp_path, tiny_zoo):
    spec = smoke_spec("kd", tmp_path / "r", epochs=2, batch_size=8, kd_steps=2)  # as the command below plans it
    rundir = harness.run_dir(spec)
    rundir.create()
    with rundir.lock():
        with pytest.raises(RunLocked, match=f"is being written by process {os.getpid()}"):
            harness.run(spec)
        code, _, err = run_cli(capsys, *TINY, "--methods", "kd,scratch", "--epochs", "2", "--out", str(tmp_path / "r"),
                               "--preset", "smoke")
    assert code == 3  # kd was skipped because another process held it; scratch ran
    (line,) = [e for e in err.splitlines() if "being written" in e]
    assert rundir.path.name in line and "skipped" in line
    assert not rundir.file(store.METRICS).exists()
    assert harness.run(spec).status == "completed"  # the lock went with its holder


def test_a_run_that_never_starts_leaves_no_folder_and_a_lock_on_a_removed_file_is_taken_again(tmp_path,
                                                                                               monkeypatch):
    from dfkd_bench.errors import UserError

    rundir = store.RunDir(tmp_path / "r", "run")
    rundir.create()
    with pytest.raises(UserError):
        with rundir.lock():  # the data set is missing: nothing but the lock was written
            raise UserError("cifar10 not found")
    assert not rundir.path.exists() and (tmp_path / "r").exists()
    # A second process opened .lock just before the first removed it: its lock would be on a
    # file no one else opens, so it takes the lock again on the file now at the path.
    removed, real_open, opened = tmp_path / "removed-lock", os.open, []

    def open_removed_first(path, flags, *args):
        if Path(path) == rundir.file(store.LOCK) and not opened:
            opened.append(path)
            fd = real_open(removed, flags, *args)
            removed.unlink()
            return fd
        return real_open(path, flags, *args)

    monkeypatch.setattr(os, "open", open_removed_first)
    with rundir.lock():
        monkeypatch.setattr(os, "open", real_open)
        assert rundir.is_locked()  # the lock at the path is held, not only the removed file's
        store.atomic_write_json(rundir.file(store.SUMMARY), {})
    assert rundir.file(store.SUMMARY).exists()  # a folder holding more than the lock stays


def test_a_holder_that_has_not_written_its_name_yet_is_waited_for(tmp_path):
    """The race CI hit: the second process met the lock between the holder's flock and its
    write of its name, read an empty file and said "another process"."""
    import fcntl
    import threading

    rundir = store.RunDir(tmp_path, "run")
    rundir.path.mkdir(parents=True)
    fd = os.open(rundir.file(store.LOCK), os.O_RDWR | os.O_CREAT)
    try:
        fcntl.flock(fd, fcntl.LOCK_EX)  # held, name not written yet
        late = threading.Timer(0.2, os.pwrite, (fd, b"process 4242 on node7 since now", 0))
        late.start()
        with pytest.raises(RunLocked, match="being written by process 4242 on node7"):
            with rundir.lock():
                pass
        late.join()
        os.ftruncate(fd, 0)  # a holder that never writes its name: named generically, in bounded time
        with pytest.raises(RunLocked, match="being written by another process"):
            with rundir.lock():
                pass
    finally:
        os.close(fd)
    with rundir.lock():  # released: the lock is taken and its holder written in full
        assert rundir.file(store.LOCK).read_text().startswith(f"process {os.getpid()} on ")


def test_the_kernel_releases_the_lock_of_a_killed_process(tmp_path, tiny_zoo):
    spec = smoke_spec("kd", tmp_path / "r")
    rundir = harness.run_dir(spec)
    rundir.create()
    holder = subprocess.Popen([sys.executable, "-c", (
        "import sys, time; sys.path.insert(0, sys.argv[1]); from dfkd_bench.store import RunDir\n"
        "with RunDir(sys.argv[2], sys.argv[3]).lock():\n    print('held', flush=True); time.sleep(60)"),
        str(ROOT), str(rundir.path.parent), rundir.path.name], stdout=subprocess.PIPE, text=True)
    try:
        assert holder.stdout.readline().strip() == "held"
        with pytest.raises(RunLocked, match=f"process {holder.pid}"):
            harness.run(spec)
    finally:
        holder.send_signal(signal.SIGKILL)
        holder.wait()
    assert harness.run(spec).status == "completed"


def test_two_identical_commands_at_once_write_each_epoch_once(tmp_path, tiny_zoo):
    out = tmp_path / "r"
    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    argv = [sys.executable, "-m", "dfkd_bench.cli", *TINY, "--methods", "deepinv", "--epochs", "4",
            "--set", "steps=20", "--set", "synth_batch=32", "--out", str(out)]
    procs = [subprocess.Popen(argv, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
             for _ in range(2)]
    results = []
    for p in procs:
        err = p.communicate(timeout=300)[1]  # reads both pipes while waiting: never a full pipe
        results.append((p.returncode, err))
    (run,) = out.iterdir()
    epochs = [r["epoch"] for r in store.RunDir(out, run.name).read_metrics() if r["event"] == "epoch"]
    assert epochs == [0, 1, 2, 3]
    codes = sorted(code for code, _ in results)
    # both finish cleanly: either one waits out the other's lock (3), or they ran one
    # after the other and the second found the run completed (0)
    assert codes in ([0, 3], [0, 0]), results
    if codes == [0, 3]:
        assert any("being written by process" in err for _, err in results)


# 3. resume never deletes valid records -------------------------------------------------

def test_junk_first_line_keeps_the_valid_records(tiny_zoo, tmp_path):
    spec, rundir = interrupted_run("kd", tmp_path / "r", epochs=4, after=2)
    path = rundir.file(store.METRICS)
    lines = path.read_bytes().splitlines(keepends=True)
    path.write_bytes(b"junk\n" + b"".join(lines[1:]))  # epoch 0's record replaced by junk
    recorder = Messages()
    assert harness.run(spec, recorder).status == "completed"
    epochs = [(r["event"], r["epoch"]) for r in store.RunDir(tmp_path / "r", path.parent.name).read_metrics()]
    assert epochs == [("epoch", 1), ("epoch", 2), ("resume", 2), ("epoch", 3)]
    assert any("1 unreadable line(s)" in m for m in messages(recorder))
    assert list(path.parent.glob("metrics.jsonl.corrupt-*"))


def test_a_deleted_checkpoint_restarts_without_mixing_old_records(tiny_zoo, tmp_path):
    spec, rundir = interrupted_run("kd", tmp_path / "r", epochs=4, after=1)
    for name in (store.CHECKPOINT, store.PREVIOUS_CHECKPOINT):
        rundir.file(name).unlink()
    recorder = Messages()
    assert harness.run(spec, recorder).status == "completed"
    assert [r["epoch"] for r in rundir.read_metrics()] == [0, 1, 2, 3]
    assert any("starts over" in m for m in messages(recorder))
    (stale,) = rundir.path.glob("metrics.jsonl.stale-*")
    assert [json.loads(line)["epoch"] for line in stale.read_text().splitlines()] == [0, 1]


# 4. corrupt files never leave a run stuck ----------------------------------------------

def test_a_non_utf8_summary_is_rewritten_and_force_always_works(capsys, tmp_path, tiny_zoo):
    out = str(tmp_path / "r")
    argv = [*TINY, "--methods", "kd", "--epochs", "2", "--out", out]
    assert run_cli(capsys, *argv)[0] == 0
    (summary,) = Path(out).glob("*/summary.json")
    summary.write_bytes(b"\xff\xfe garbage")
    code, out, err = run_cli(capsys, *argv)
    assert code == 0 and "summary.json cannot be read" in out + err and "rewritten" in out + err
    summary.write_bytes(b"\xff\xfe garbage")
    assert run_cli(capsys, *argv, "--force")[0] == 0
    assert json.loads(summary.read_text())["status"] == "completed"


@pytest.mark.parametrize("damage", [b"", b"PK\x03\x04 not a zip", b"\x80\x02}q\x00."])
def test_a_corrupt_checkpoint_falls_back_to_the_previous_one(damage, tiny_zoo, tmp_path):
    full = harness.run(smoke_spec("kd", tmp_path / "full", epochs=4))
    spec, rundir = interrupted_run("kd", tmp_path / "r", epochs=4, after=2)
    rundir.file(store.CHECKPOINT).write_bytes(damage)
    recorder = Messages()
    resumed = harness.run(spec, recorder)
    assert resumed.status == "completed" and resumed.final_top1 == full.final_top1
    (warning,) = [m for m in messages(recorder) if "cannot be read" in m]
    assert "checkpoint.pt" in warning and "trying the previous checkpoint" in warning
    assert ("start", resumed.name, 4, 2) in recorder.events  # resumed after epoch 1, the previous checkpoint
    assert [r["epoch"] for r in rundir.read_metrics() if r["event"] == "epoch"] == [0, 1, 2, 3]


def test_both_checkpoints_corrupt_restart_with_a_warning_and_leftover_temp_files_go(tiny_zoo, tmp_path):
    spec, rundir = interrupted_run("deepinv", tmp_path / "r", epochs=3, after=1)
    for name in (store.CHECKPOINT, store.PREVIOUS_CHECKPOINT):
        rundir.file(name).write_bytes(b"\x00" * 10)
    (rundir.path / ".summary.json.abc123.tmp").write_text("half")
    (rundir.path / "pool" / ".shard-000005.pt.xyz.tmp").write_text("half")
    recorder = Messages()
    assert harness.run(spec, recorder).status == "completed"
    warnings = messages(recorder)
    assert any("checkpoint.prev.pt cannot be read" in m and "starts over" in m for m in warnings)
    assert not list(rundir.path.glob(".*.tmp")) and not list((rundir.path / "pool").glob(".*.tmp"))
    assert [r["epoch"] for r in rundir.read_metrics() if r["event"] == "epoch"] == [0, 1, 2]


def test_a_full_disk_leaves_the_run_failed_not_running(tiny_zoo, tmp_path, monkeypatch):
    spec = smoke_spec("kd", tmp_path / "r", epochs=3)
    real_save = store.RunDir.save_checkpoint

    def full_disk(self, state):
        if state["progress"]["epoch"] == 1:
            raise OSError(28, "No space left on device")
        real_save(self, state)

    monkeypatch.setattr(store.RunDir, "save_checkpoint", full_disk)
    with pytest.raises(OSError):
        harness.run(spec)
    summary = harness.run_dir(spec).summary()
    assert summary.status == "failed" and "No space left on device" in summary.reason and summary.epochs_done == 1


TORCH_FULL_DISK = "[enforce fail at inline_container.cc:672] . unexpected pos 832 vs 726"


@pytest.mark.parametrize("failure", [RuntimeError(TORCH_FULL_DISK), OSError(28, "No space left on device")],
                         ids=["torch-writer", "oserror"])
def test_a_full_disk_is_named_as_one_and_the_run_resumes_once_space_is_freed(failure, capsys, tmp_path, tiny_zoo,
                                                                              monkeypatch):
    import collections

    real_save, full = torch.save, [True]
    usage = collections.namedtuple("usage", "total used free")

    def save(obj, f, *args, **kwargs):  # torch.save as a full disk fails it: part written, then the error
        if full[0] and isinstance(obj, dict) and obj.get("progress", {}).get("epoch") == 1:
            Path(f).write_bytes(b"PK" * 363)
            raise failure
        return real_save(obj, f, *args, **kwargs)

    monkeypatch.setattr(torch, "save", save)
    monkeypatch.setattr(store.shutil, "disk_usage", lambda p: usage(10 << 30, 10 << 30, 0 if full[0] else 5 << 30))
    argv = [*TINY, "--methods", "kd", "--epochs", "3", "--out", str(tmp_path / "r")]
    code, _, err = run_cli(capsys, *argv)
    (rundir,) = (tmp_path / "r").iterdir()
    assert code == 1 and f"kd seed 0: NoSpaceLeft: no space left on {rundir} (writing checkpoint.pt, 0.0 MiB " \
        "free there); free some and run the same command again" in err
    assert "unexpected pos" not in err and "Errno" not in err
    summary = json.loads((rundir / "summary.json").read_text())
    assert summary["status"] == "failed" and summary["reason"].startswith("NoSpaceLeft: no space left on ")
    assert not list(rundir.glob(".*.tmp"))
    full[0] = False  # space freed: the same command resumes after the last checkpoint and completes
    assert run_cli(capsys, *argv)[0] == 0
    assert json.loads((rundir / "summary.json").read_text())["status"] == "completed"
    records = store.RunDir(tmp_path / "r", rundir.name).read_metrics()
    assert [r["epoch"] for r in records if r["event"] == "resume"] == [0]


def test_a_torch_write_failure_with_space_left_is_not_called_a_full_disk(tmp_path, monkeypatch):
    import collections

    def save(obj, f, *args, **kwargs):
        raise RuntimeError(TORCH_FULL_DISK)

    monkeypatch.setattr(torch, "save", save)
    usage = collections.namedtuple("usage", "total used free")
    monkeypatch.setattr(store.shutil, "disk_usage", lambda p: usage(10 << 30, 5 << 30, 5 << 30))
    with pytest.raises(RuntimeError, match="unexpected pos"):
        store.atomic_torch_save(tmp_path / "x.pt", {"a": 1})
    assert not list(tmp_path.iterdir())


# 5. report: unreadable runs are listed, the rest still reported -------------------------

def test_report_lists_unreadable_runs_and_builds_the_rest(capsys, tmp_path, tiny_zoo):
    out = tmp_path / "r"
    assert run_cli(capsys, *TINY, "--methods", "kd", "--epochs", "2", "--out", str(out))[0] == 0
    for name, content in (("bytes", b"\xff\xfe"), ("null", b"null"), ("list", b"[]"), ("torn", b'{"status": "comp')):
        (out / name).mkdir()
        (out / name / "summary.json").write_bytes(content)
    code, stdout, err = run_cli(capsys, "report", "--results", str(out), "--out", str(tmp_path / "rep"))
    assert code == 0 and " kd " in stdout
    md = (tmp_path / "rep" / "comparison.md").read_text()
    assert "| tiny | cnn_s-cnn_s | kd |" in md
    listed = md.split("## Run directories that could not be read")[1]
    for name in ("bytes", "null", "list", "torn"):
        assert f"{out / name}`" in listed
        assert f"skipped {out / name}:" in err


# 6. changed data never meets a stale teacher --------------------------------------------

def test_swapped_class_folders_need_a_new_teacher(capsys, tmp_path, cache):
    from tests.test_data_teachers import make_imagefolder

    root = tmp_path / "folder"
    make_imagefolder(root, ["ant", "cat"], per_class=4, size=8)
    dataset = f"imagefolder:{root}"
    code, _, err = run_cli(capsys, "teachers", "train", "--dataset", dataset, "--arch", "cnn_s", "--epochs", "1",
                           "--device", "cpu")
    assert code == 0, err
    for split in ("train", "test"):  # swap the two classes in place
        d = root / split
        os.rename(d / "ant", d / "tmp")
        os.rename(d / "cat", d / "ant")
        os.rename(d / "tmp", d / "cat")
    code, _, err = run_cli(capsys, "run", "--methods", "kd", "--dataset", dataset, "--pair", "cnn_s-cnn_s",
                           "--epochs", "1", "--device", "cpu", "--out", str(tmp_path / "r"))
    assert code == 2 and "made with other data than it holds now" in err
    assert f"dfkd-bench teachers train --dataset imagefolder:{root.resolve()} --arch cnn_s --force" in err
    assert len(err.strip().splitlines()) == 1
    assert not list((tmp_path / "r").glob("*/metrics.jsonl"))  # refused before any epoch


# 7. a preset file never steers where a run is written -----------------------------------

def test_a_preset_path_names_the_run_by_stem_and_content(capsys, tmp_path, tiny_zoo):
    deep = tmp_path / "a" / "b"
    deep.mkdir(parents=True)
    (tmp_path / "h4").mkdir()
    (tmp_path / "h4" / "ok.yaml").write_text("epochs: 2\n")
    out = deep / "OUT"
    code, _, err = run_cli(capsys, *TINY, "--methods", "kd", "--preset", "../../h4/ok.yaml", "--out", str(out))
    # relative to the working directory, as any path argument
    assert code == 2 and "cannot read preset file" in err
    os.chdir(deep)
    try:
        code, _, err = run_cli(capsys, *TINY, "--methods", "kd", "--preset", "../../h4/ok.yaml", "--out", "OUT")
    finally:
        os.chdir(ROOT)
    assert code == 0, err
    (run,) = out.iterdir()
    assert run.name.startswith("tiny__cnn_s-cnn_s__kd-ok-") and "/" not in run.name
    assert sorted(p.name for p in tmp_path.iterdir()) == ["a", "cache", "h4"]  # nothing written outside OUT


# 8. plugins and methods that break the contract ----------------------------------------

@pytest.mark.parametrize("source, message", [
    ("from dfkd_bench.method import Method, register_method\n@register_method\nclass NoName(Method):\n    pass\n",
     "has no `name`"),
    ("from dfkd_bench.method import Method, register_method\n@register_method\nclass Dup(Method):\n    name = 'kd'\n",
     "method name 'kd' of"),
    ("raise RuntimeError('boom')\n", "failed to import: RuntimeError: boom"),
])
def test_plugin_registration_errors_are_one_line(source, message, capsys, tmp_path, monkeypatch):
    (tmp_path / "bad_plugin_mod.py").write_text(source)
    monkeypatch.syspath_prepend(str(tmp_path))
    monkeypatch.delitem(sys.modules, "bad_plugin_mod", raising=False)
    code, _, err = run_cli(capsys, "--plugin", "bad_plugin_mod", "list")
    assert code == 2 and message in err and len(err.strip().splitlines()) == 1


def test_a_method_breaking_the_contract_is_failed_in_the_table(capsys, tmp_path, tiny_zoo, monkeypatch):
    from dfkd_bench.registry import METHODS
    from tests.plugins.tiny import Diverging

    monkeypatch.setattr(Diverging, "synthesize", lambda self, epoch: torch.zeros(8, 1, 8, 8))
    code, out, err = run_cli(capsys, *TINY, "--methods", "diverging,kd", "--epochs", "2", "--out", str(tmp_path / "r"))
    assert "diverging" in METHODS
    assert code == 1
    assert "must return (Batch, dict of float logs), got Tensor" in err
    table = out.replace("│", "|")
    assert "failed" in table and "completed" in table


# 9. bad input: one line, exit 2, nothing written ----------------------------------------

@pytest.mark.parametrize("extra, message", [
    (["--set", "batch_size=-5"], "batch_size=-5; expected a positive integer"),
    (["--set", "batch_size=0"], "batch_size=0; expected a positive integer"),
    (["--set", "steps=0"], "steps=0; expected a positive integer"),
    (["--set", "synth_batch=0"], "synth_batch=0; expected a positive integer"),
    (["--set", "run.lr=nan"], "lr=nan; expected a finite positive number"),
    (["--set", "T=0"], "T=0.0; expected a finite positive number"),
    (["--set", "lr_x=-1"], "lr_x=-1.0; expected a positive finite number"),
    (["--seeds", ""], "--seeds is empty"),
    (["--seeds", "-1"], "seed -1: expected an integer from 0"),
    (["--seeds", "99999999999"], "expected an integer from 0 to 2**32 - 1"),
])
def test_bad_input_is_refused_before_anything_is_written(extra, message, capsys, tmp_path, tiny_zoo):
    code, _, err = run_cli(capsys, *TINY, "--methods", "deepinv", "--out", str(tmp_path / "r"), *extra)
    assert code == 2 and message in err and len(err.strip().splitlines()) == 1
    assert not (tmp_path / "r").exists()


def test_an_empty_class_folder_is_refused(capsys, tmp_path, cache):
    from tests.test_data_teachers import make_imagefolder

    root = tmp_path / "folder"
    make_imagefolder(root, ["ant", "cat"], per_class=2, size=8)
    (root / "train" / "empty").mkdir()
    code, _, err = run_cli(capsys, "teachers", "train", "--dataset", f"imagefolder:{root}", "--arch", "cnn_s",
                           "--epochs", "1", "--device", "cpu")
    assert code == 2 and "class folder(s) empty hold no images" in err


# 10. smaller ------------------------------------------------------------------------------

def test_method_colon_preset_runs_and_ambiguous_presets_are_named(capsys, tmp_path, tiny_zoo):
    code, out, _ = run_cli(capsys, *TINY, "--methods", "kd:smoke", "--out", str(tmp_path / "r"))
    assert code == 0 and "kd-smoke" in out
    code, _, err = run_cli(capsys, *TINY, "--methods", "cpu", "--out", str(tmp_path / "r"))
    assert code == 2 and "'cpu' is a preset of several methods" in err


def test_report_help_describes_its_options(capsys):
    with pytest.raises(SystemExit):
        main(["report", "--help"])
    out = capsys.readouterr().out
    assert "results tree to read" in out and "folder the report is written to" in out and "--baseline" in out


def test_a_second_ctrl_c_while_exiting_still_exits_130(tmp_path):
    script = (
        "import os, signal, sys\n"
        f"sys.path.insert(0, {str(ROOT)!r})\n"
        "from dfkd_bench import cli\n"
        "real = cli.err_console.print\n"
        "def twice(*a, **k):\n"
        "    os.kill(os.getpid(), signal.SIGINT)  # the second Ctrl-C, while the message prints\n"
        "    return real(*a, **k)\n"
        "cli.err_console.print = twice\n"
        "def interrupted(args):\n"
        "    raise KeyboardInterrupt\n"
        "cli.cmd_list = interrupted\n"
        "sys.exit(cli.main(['list']))\n")
    proc = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, timeout=120)
    assert proc.returncode == 130, proc.stderr[-500:]
    assert "Traceback" not in proc.stderr


def test_a_method_that_changes_but_keeps_no_state_is_warned_about(tiny_zoo, tmp_path):
    from dfkd_bench.registry import METHODS
    from tests.plugins.tiny import Diverging  # keeps self.epoch but has no state_dict

    assert METHODS.get("diverging") is Diverging
    recorder = Messages()
    harness.run(smoke_spec("diverging", tmp_path / "r", preset=None, epochs=2, batch_size=8, kd_steps=2,
                           at_epoch=5), recorder)
    (warning,) = [m for m in messages(recorder) if "keeps no state" in m]
    assert warning.startswith("diverging: epoch changed during the epoch")
    recorder = Messages()
    harness.run(smoke_spec("fast", tmp_path / "r"), recorder)  # a method with state: no warning
    assert not [m for m in messages(recorder) if "keeps no state" in m]
