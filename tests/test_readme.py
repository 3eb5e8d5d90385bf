"""README.md against what it describes: its method table has a row for every built-in
method, and each row's presets are exactly the method's own (``dfkd_bench.catalog``); the
Python it names is ``setup.cfg``'s ``python_requires``; CI (``.ci/run``) runs its set-up and
test commands; ``reports/README.md`` indexes every report there."""
from __future__ import annotations

import configparser
import re
import sys

from dfkd_bench import catalog
from tests.conftest import ROOT

README = ROOT / "README.md"


def test_readme_method_table_matches_the_registry():
    assert catalog.mismatches(README.read_text()) == []


def test_a_new_preset_a_new_method_or_a_stale_row_is_caught_and_the_presets_column_rewritten(tmp_path,
                                                                                              monkeypatch):
    methods = catalog.builtin_methods()
    monkeypatch.setitem(methods["deepinv"].presets, "paper-4k", {})
    monkeypatch.setitem(methods["fast"].presets, "fast20", {})
    monkeypatch.setitem(methods["fast"].presets, "fast20-cpu", {})
    readme = README.read_text().replace("| `noise` |", "| `noisy` |")
    SEG = ", ".join(f"`fast{n}-{s}`" for s in ("nyuv2", "shapes") for n in (2, 5, 10))  # Table 3's (issue 34)
    assert catalog.mismatches(readme) == [
        "noise: registered but has no row in README's method table",
        "noisy: a row in README's method table but not a registered method",
        "deepinv: README's presets are `paper`, `paper-2k`, `cpu`, the registry's `paper`, `paper-2k`, `cpu`, "
        "`paper-4k`",
        f"fast: README's presets are `fast2`/`fast2-cpu`, `fast5`/`fast5-cpu`, `fast10`/`fast10-cpu`, {SEG}, the "
        f"registry's `fast2`/`fast2-cpu`, `fast5`/`fast5-cpu`, `fast10`/`fast10-cpu`, {SEG}, `fast20`/`fast20-cpu`"]
    path = tmp_path / "README.md"
    path.write_text(readme)
    assert catalog.main([str(path)]) == 1  # the presets it rewrites; a row's prose it cannot write
    assert catalog.mismatches(path.read_text()) == catalog.mismatches(readme)[:2]
    assert len(path.read_text().splitlines()) == len(readme.splitlines())


def test_the_shared_smoke_preset_is_said_once_and_checked():
    readme = README.read_text()
    assert catalog.SHARED_NOTE in readme
    assert catalog.mismatches(readme.replace(catalog.SHARED_NOTE, "Most methods have `smoke`")) == [
        "README's ## Methods section does not say 'Every method also has `smoke`'"]


def first_bash_block(text: str, heading: str) -> list[str]:
    """The command lines of the first ```bash block under ``heading``."""
    section = text.split(f"\n{heading}", 1)[1]
    block = section.split("```bash\n", 1)[1].split("```", 1)[0]
    return [line.strip() for line in block.splitlines() if line.strip()]


def test_ci_runs_the_readme_set_up_and_test_commands():
    ci = {line.strip() for line in (ROOT / ".ci" / "run").read_text().splitlines()}
    readme = README.read_text()
    commands = first_bash_block(readme, "## Set up") + first_bash_block(readme, "## Test")
    assert commands == ['pip install -c constraints-cpu.txt -e ".[dev,slurm,dda,seg]"', "pytest"]
    assert [c for c in commands if c not in ci] == []


def test_the_python_readme_names_is_setup_cfgs_python_requires():
    cfg = configparser.ConfigParser()
    cfg.read(ROOT / "setup.cfg")
    floor = re.fullmatch(r">=(\d+)\.(\d+)", cfg["options"]["python_requires"].strip())
    assert floor, cfg["options"]["python_requires"]
    major, minor = map(int, floor.groups())
    assert f"Python {major}.{minor} or later (`python_requires` in `setup.cfg`)" in README.read_text()
    assert sys.version_info[:2] >= (major, minor)


def test_every_report_is_in_the_reports_index():
    reports = ROOT / "reports"
    index = (reports / "README.md").read_text()
    entries = sorted(p.name for p in reports.iterdir() if not p.name.startswith(".") and p.name != "README.md")
    assert "cpu-study" in entries and "claim-study" in entries
    assert [name for name in entries if f"`{name}" not in index] == []
