"""benchmarks/method_table.py: per-entry settings, the rows it writes (markdown + JSON),
the ranking against the published table, and its input errors."""
from __future__ import annotations

import importlib.util
import json
import math

import pytest

from dfkd_bench import published, stats
from tests.conftest import ROOT

spec = importlib.util.spec_from_file_location("method_table", ROOT / "benchmarks" / "method_table.py")
method_table = importlib.util.module_from_spec(spec)
spec.loader.exec_module(method_table)

COMMON = ["--dataset", "tiny", "--pair", "cnn_s-cnn_s", "--set", "run.epochs=2", "--set", "batch_size=8",
          "--set", "kd_steps=2", "--set", "run.device=cpu"]


def test_kendall_tau_exact_values():
    a = {"x": 1.0, "y": 2.0, "z": 3.0}
    assert stats.kendall_tau(a, {"x": 10.0, "y": 20.0, "z": 30.0, "w": 0.0}) == (1.0, 3)
    assert stats.kendall_tau(a, {"x": 30.0, "y": 20.0, "z": 10.0}) == (-1.0, 3)
    assert stats.kendall_tau(a, {"x": 10.0, "y": 30.0, "z": 20.0}) == (pytest.approx(1 / 3), 3)
    tau, n = stats.kendall_tau(a, {"x": 1.0})
    assert n == 1 and math.isnan(tau)


def test_published_keys():
    assert published.published_key("fast", "fast10-cpu") == "fast10"
    assert published.published_key("ssdkd", "cpu") == "ssdkd"
    assert published.published_key("ssdkd", "no-ps-cpu") is None  # an ablation is not the published row
    assert published.published_key("deepinv", "cpu", overridden=True) is None
    assert published.published_key("noise", "cpu") is None
    assert published.published_key("ssdkd", "relaxed") == "ssdkd-relaxed"
    assert published.published_key("dafl", "paper") == "dafl" and published.published_key("dafl", "paper-t20") is None
    assert published.cifar10("resnet34-resnet18")["cmi"] == 94.84


def test_table_with_entry_settings_json_and_ranking(tmp_path, tiny_zoo, capsys):
    out = tmp_path / "rep" / "table.md"
    argv = [*COMMON, "--methods", "deepinv+steps=2+synth_batch=8,dafl@0/1,deepinv+steps=3+synth_batch=8",
            "--results", str(tmp_path / "r"), "--out-md", str(out), "--published", "resnet34-resnet18",
            "--notes", str(tmp_path / "notes.md")]
    (tmp_path / "notes.md").write_text("## Findings\n\nHand-written.\n")
    assert method_table.main(argv) == 0
    md = out.read_text()
    assert "| deepinv (steps=2, synth_batch=8) | 0 | 2 | 16 |" in md  # 2 KD steps of 8 samples an epoch
    assert "| deepinv (steps=3, synth_batch=8) | 0 | 2 | 16 |" in md
    assert "| dafl | 0 | 2 | 16 |" in md and "| dafl | 1 | 2 | 16 |" in md  # its own seeds
    assert "python benchmarks/method_table.py --dataset tiny" in md
    rows = json.loads(out.with_suffix(".json").read_text())
    assert [(r["row"], r["seed"]) for r in rows] == [("deepinv (steps=2, synth_batch=8)", 0), ("dafl", 0), ("dafl", 1),
                                                     ("deepinv (steps=3, synth_batch=8)", 0)]
    assert len({r["name"] for r in rows}) == 4  # the settings give each entry its own run directory
    # overridden entries stand for no published row, so only dafl is ranked
    assert "| dafl |" in md.split("## Ranking")[1]
    assert "Fewer than two methods in both tables" in md
    assert md.endswith("## Findings\n\nHand-written.\n")
    # a second call reads the completed runs back instead of training again
    assert not any(r.get("skipped") for r in rows)
    assert method_table.main(argv) == 0
    assert all(r["skipped"] for r in json.loads(out.with_suffix(".json").read_text()))


@pytest.mark.parametrize("extra, message", [
    (["--methods", "deepinv+steps"], "'steps' is not key=value"),
    (["--methods", "dafl", "--published", "resnet8-resnet8"], "no published column 'resnet8-resnet8'"),
    (["--methods", "dafl", "--notes", "/nonexistent/notes.md"], "/nonexistent/notes.md"),
])
def test_bad_input_is_one_line_exit_2(tmp_path, tiny_zoo, capsys, extra, message):
    out = tmp_path / "table.md"
    out.write_text("kept")
    assert method_table.main([*COMMON, *extra, "--out-md", str(out), "--results", str(tmp_path / "r")]) == 2
    err = capsys.readouterr().err
    assert message in err and len(err.strip().splitlines()) == 1
    assert out.read_text() == "kept"
