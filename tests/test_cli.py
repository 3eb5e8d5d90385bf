"""User-facing errors: one line on stderr, exit code 2, nothing written; and a full
run/report through the CLI on the tiny plugin data set."""
from __future__ import annotations

import importlib.util
import json

import pytest

from dfkd_bench.cli import main
from tests.conftest import ROOT

PLUGIN = ["--plugin", "tests.plugins.tiny"]


def run_cli(capsys, *argv):
    code = main(list(argv))
    out, err = capsys.readouterr()
    return code, out, err


@pytest.mark.parametrize("argv, message", [
    (["run", "--methods", "nosuch"], "unknown method 'nosuch'; known: "),
    (["run", "--methods", "deepinv", "--preset", "nosuch"], "unknown preset 'nosuch' for method deepinv; known: cpu, paper"),
    (["run", "--methods", "deepinv", "--pair", "a-b"], "unknown pair 'a-b'; known pairs: "),
    (["run", "--methods", "deepinv", "--dataset", "mnist"], "unknown data set 'mnist'; known: "),
    (["run", "--methods", "deepinv", "--set", "steps"], "malformed --set 'steps'"),
    (["run", "--methods", "deepinv", "--set", "stepz=3"], "unknown key 'stepz'"),
    (["run", "--methods", "deepinv", "--set", "steps=many"], "expected a value of type int"),
    # a change scoped to a method not in the command is checked all the same
    (["run", "--methods", "kd", "--set", "fast.nope=1"], "fast: --set: unknown key 'nope'"),
    (["run", "--methods", "kd", "--set", "ssdkd.lr_g=abc"], "ssdkd: --set lr_g=abc: expected a value of type float"),
    (["run", "--methods", "kd", "--set", "dda.pipeline=zzz"], "dda: pipeline='zzz'; accepted: variation, img2img"),
    (["run", "--methods", "kd", "--set", "nosuch.lr=1"],
     "--set nosuch.lr=1: unknown scope 'nosuch'; accepted: run.<key>, method.<key> or <method>.<key> with a method "
     "of cmi, dafl, dda, deepinv, "),
    (["run", "--methods", "deepinv", "--seeds", "a,b"], "expected comma-separated integers"),
    (["run", "--methods", "deepinv", "--device", "tpu"], "--device 'tpu': expected one of auto, cpu, cuda"),
    (["run", "--methods", "deepinv", "--epochs", "0"], "expected a positive integer"),
    (["run", "--methods", "fast2", "--epochs", "5"], "leaves no epoch after warmup_epochs=20"),
    (["run"], "the following arguments are required: --methods"),
    (["frobnicate"], "invalid choice: 'frobnicate'"),
    (["--plugin", "no.such.module", "list"], "cannot import plugin module 'no.such.module'"),
    (["report", "--results", "/nonexistent/results"], "results directory /nonexistent/results does not exist"),
    (["report", "--results", ".", "--preamble", "/nonexistent.md"], "--preamble /nonexistent.md cannot be read"),
])
def test_user_errors_are_one_line_with_exit_code_2(capsys, argv, message, tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    code, out, err = run_cli(capsys, *argv)
    assert code == 2
    assert message in err
    if "; known" in message:
        assert any(name in err for name in ("deepinv", "cnn_m-cnn_s", "digits"))
    assert len(err.strip().splitlines()) == 1 and "Traceback" not in err
    assert not (tmp_path / "results").exists()


def test_report_on_a_file_or_an_empty_folder(capsys, tmp_path):
    (tmp_path / "summary.json").write_text("{}")
    code, _, err = run_cli(capsys, "report", "--results", str(tmp_path / "summary.json"))
    assert code == 2 and err.strip() == (f"dfkd-bench: error: --results {tmp_path / 'summary.json'} is a file, not a "
                                         "directory; pass the folder runs were written to (run's --out, default "
                                         "results/)")
    (tmp_path / "empty").mkdir()
    code, out, _ = run_cli(capsys, "report", "--results", str(tmp_path / "empty"), "--out", str(tmp_path / "rep"))
    assert code == 0 and out.strip() == f"no completed runs under {tmp_path / 'empty'}: nothing written"
    assert not (tmp_path / "rep").exists()


def test_unwritable_output_directory(capsys, tmp_path, tiny_zoo):
    blocker = tmp_path / "file"
    blocker.write_text("keep me")
    code, _, err = run_cli(capsys, *PLUGIN, "run", "--methods", "kd", "--dataset", "tiny", "--pair", "cnn_s-cnn_s",
                           "--out", str(blocker / "results"))
    assert code == 2 and "cannot be written" in err and "--out" in err
    assert blocker.read_text() == "keep me"


def test_missing_teacher_without_training_names_the_command(capsys, tmp_path, cache):
    code, out, err = run_cli(capsys, *PLUGIN, "run", "--methods", "kd", "--dataset", "tiny", "--pair", "cnn_s-cnn_s",
                           "--no-train-teacher", "--out", str(tmp_path / "r"))
    assert code == 2
    assert "dfkd-bench teachers train --dataset tiny --arch cnn_s" in err
    assert out == ""  # no progress display ("runs 0/1") above the one-line error
    assert list((tmp_path / "r").iterdir()) == []  # no run folder holding only its .lock


def test_run_then_report(capsys, tmp_path, tiny_zoo):
    common = [*PLUGIN, "run", "--dataset", "tiny", "--pair", "cnn_s-cnn_s", "--epochs", "2", "--device", "cpu",
              "--set", "batch_size=8", "--set", "kd_steps=2", "--out", str(tmp_path / "r")]
    code, out, _ = run_cli(capsys, *common, "--methods", "kd,scratch", "--seeds", "0,1")
    assert code == 0
    assert "teacher cnn_s" in out and "completed" in out
    summaries = sorted((tmp_path / "r").glob("*/summary.json"))
    assert len(summaries) == 4
    assert {json.loads(p.read_text())["status"] for p in summaries} == {"completed"}

    code, out, _ = run_cli(capsys, *common, "--methods", "kd", "--seeds", "0")
    assert code == 0 and "(cached)" in out

    code, out, _ = run_cli(capsys, "report", "--results", str(tmp_path / "r"), "--out", str(tmp_path / "rep"))
    assert code == 0
    md = (tmp_path / "rep" / "comparison.md").read_text()
    assert "| tiny | cnn_s-cnn_s | kd | - | 2 |" in md
    assert "teacher (cnn_s)" in md
    csv = (tmp_path / "rep" / "comparison.csv").read_text().splitlines()
    assert csv[0].startswith("dataset,pair,label,data_scale,seeds,top1_mean,top1_std")
    assert len(csv) == 1 + 3  # teacher, kd, scratch

    # The records a committed study keeps (benchmarks/export_runs.py) make the same report
    # with no checkpoint, pool or lock beside them; a preamble goes on top of its index.
    spec = importlib.util.spec_from_file_location("export_runs", ROOT / "benchmarks" / "export_runs.py")
    export_runs = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(export_runs)
    assert export_runs.main([str(tmp_path / "r"), str(tmp_path / "kept")]) == 0
    kept = {p.name for p in (tmp_path / "kept").rglob("*") if p.is_file()}
    assert kept == {"summary.json", "config.json", "environment.json", "metrics.jsonl"}
    assert len(list((tmp_path / "kept").iterdir())) == 4
    (tmp_path / "pre.md").write_text("# A study\n\nThe command: `sh study.sh`.\n")
    code, _, _ = run_cli(capsys, "report", "--results", str(tmp_path / "kept"), "--out", str(tmp_path / "rep2"),
                         "--preamble", str(tmp_path / "pre.md"))
    assert code == 0
    assert (tmp_path / "rep2" / "comparison.csv").read_text() == (tmp_path / "rep" / "comparison.csv").read_text()
    index = (tmp_path / "rep2" / "index.md").read_text()
    assert index.startswith("# A study\n\nThe command: `sh study.sh`.\n\n# The generated report\n")
    assert index.count("\n# ") == 1


def test_a_run_resumed_after_its_last_epoch_ends_with_its_result_on_the_bar(capsys, tmp_path, tiny_zoo, monkeypatch):
    """A run that failed after its last checkpoint resumes with no epoch left: its bar line
    says how it ended, not "resuming" for ever; a run that fails says so on its line."""
    from dfkd_bench.console import RunDisplay

    real_epoch = RunDisplay.epoch

    def fail_at_the_end(self, epoch, record):
        real_epoch(self, epoch, record)
        if epoch == 1:
            raise RuntimeError("[disk] gone")

    argv = [*PLUGIN, "run", "--methods", "kd", "--dataset", "tiny", "--pair", "cnn_s-cnn_s", "--epochs", "2",
            "--set", "batch_size=8", "--set", "kd_steps=2", "--out", str(tmp_path / "r")]
    monkeypatch.setattr(RunDisplay, "epoch", fail_at_the_end)
    code, out, err = run_cli(capsys, *argv)
    assert code == 1 and "kd seed 0: RuntimeError: [disk] gone" in err
    assert "failed: RuntimeError" in next(line for line in out.splitlines() if "kd seed 0" in line)
    monkeypatch.setattr(RunDisplay, "epoch", real_epoch)
    code, out, _ = run_cli(capsys, *argv)
    line = next(line for line in out.splitlines() if "kd seed 0" in line)
    assert code == 0 and "2/2" in line and "top-1 " in line and "resum" not in line


def test_diverging_method_fails_and_others_still_run(capsys, tmp_path, tiny_zoo):
    code, out, _ = run_cli(capsys, *PLUGIN, "run", "--dataset", "tiny", "--pair", "cnn_s-cnn_s", "--epochs", "2",
                           "--set", "batch_size=8", "--set", "kd_steps=2", "--methods", "diverging,kd",
                           "--out", str(tmp_path / "r"))
    assert code == 1
    statuses = {json.loads(p.read_text())["method"]: json.loads(p.read_text())["status"]
                for p in (tmp_path / "r").glob("*/summary.json")}
    assert statuses == {"diverging": "failed", "kd": "completed"}


def test_sigterm_records_the_run_as_interrupted_and_it_resumes(capsys, tmp_path, tiny_zoo):
    import signal

    from tests.plugins.tiny import SelfTerminating

    before = signal.getsignal(signal.SIGTERM)
    SelfTerminating.sent = False
    argv = [*PLUGIN, "run", "--dataset", "tiny", "--pair", "cnn_s-cnn_s", "--epochs", "3", "--set", "batch_size=8",
            "--set", "kd_steps=2", "--methods", "self_terminating", "--out", str(tmp_path / "r")]
    code, _, err = run_cli(capsys, *argv)
    assert code == 143 and "interrupted; re-run the same command to resume" in err
    assert signal.getsignal(signal.SIGTERM) is before  # the CLI's handler is gone again
    (summary_path,) = (tmp_path / "r").glob("*/summary.json")
    cut = json.loads(summary_path.read_text())
    assert cut["status"] == "interrupted" and cut["reason"].startswith("interrupted (SIGTERM) during epoch 1")
    code, _, _ = run_cli(capsys, *argv)  # SIGTERM is sent once: the second call resumes and finishes
    assert code == 0 and json.loads(summary_path.read_text())["status"] == "completed"


def test_preset_names_resolve_to_their_method(capsys):
    from dfkd_bench.errors import UserError
    from dfkd_bench.plan import resolve_method

    cls, preset = resolve_method("deepinv", None)
    assert cls.name == "deepinv" and preset is None
    cls, preset = resolve_method("fast10", None)
    assert cls.name == "fast" and preset == "fast10"
    cls, preset = resolve_method("fast:fast2-cpu", "paper")  # the entry's own preset wins
    assert cls.name == "fast" and preset == "fast2-cpu"
    with pytest.raises(UserError, match="'cpu' is a preset of several methods .*, e.g. cmi:cpu"):
        resolve_method("cpu", None)


def test_method_scoped_set_reaches_only_that_method():
    from dfkd_bench.cli import build_specs, make_parser

    args = make_parser().parse_args(["run", "--methods", "fast2,cmi", "--set", "fast.reset_round=12",
                                     "--set", "epochs=30", "--set", "cmi.steps=7"])
    fast, cmi = build_specs(args)
    assert fast.method_config.reset_round == 12 and fast.method_config.steps == 2
    assert cmi.method_config.steps == 7 and fast.run.epochs == cmi.run.epochs == 30


def test_every_option_of_every_command_has_help():
    import argparse

    from dfkd_bench.cli import make_parser

    def parsers(parser, name):
        yield name, parser
        for action in parser._actions:
            if isinstance(action, argparse._SubParsersAction):
                for sub_name, sub in action.choices.items():
                    yield from parsers(sub, f"{name} {sub_name}")

    found = {(name, a.option_strings[0]): a.help for name, parser in parsers(make_parser(), "dfkd-bench")
             for a in parser._actions if a.option_strings}
    assert [key for key, text in found.items() if not text] == []
    for command in ("dfkd-bench run", "dfkd-bench sweep", "dfkd-bench teachers train"):
        assert "$DFKD_BENCH_CACHE" in found[(command, "--cache-dir")]
        assert "the folder above it" in found[(command, "--data-root")]
    assert "warm-up epochs included" in found[("dfkd-bench sweep", "--epochs")]


def test_list_shows_methods_pairs_and_datasets(capsys):
    code, out, _ = run_cli(capsys, "list")
    assert code == 0
    for word in ("deepinv", "kd", "scratch", "cnn_m-cnn_s", "digits", "94,186"):
        assert word in out


def test_readme_plugin_example_runs(capsys, tmp_path, tiny_zoo, monkeypatch):
    """The worked example in README.md, taken from the README itself, runs as a plugin."""
    import re
    import sys
    from pathlib import Path

    readme = (Path(__file__).resolve().parents[1] / "README.md").read_text()
    code = re.search(r"```python\n# my_pkg/my_method.py\n(.*?)```", readme, re.S).group(1)
    pkg = tmp_path / "plugins_root" / "my_pkg"
    pkg.mkdir(parents=True)
    (pkg / "__init__.py").write_text("")
    (pkg / "my_method.py").write_text(code)
    monkeypatch.syspath_prepend(str(pkg.parent))
    monkeypatch.delitem(sys.modules, "my_pkg.my_method", raising=False)
    code_, out, err = run_cli(capsys, *PLUGIN, "--plugin", "my_pkg.my_method", "run", "--methods", "noise_shift",
                              "--dataset", "tiny", "--pair", "cnn_s-cnn_s", "--preset", "big", "--epochs", "2",
                              "--set", "kd_steps=2", "--set", "shift=0.25", "--out", str(tmp_path / "r"))
    assert code_ == 0, err
    summary = json.loads(next((tmp_path / "r").glob("*/summary.json")).read_text())
    assert summary["status"] == "completed" and summary["label"] == "noise_shift-big"
    config = json.loads(next((tmp_path / "r").glob("*/config.json")).read_text())
    assert config["method_config"] == {"n": 512, "shift": 0.25} and config["run"]["epochs"] == 2
