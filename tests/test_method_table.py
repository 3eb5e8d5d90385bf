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
    # the published columns are CIFAR-10's: no ranking of digits-like runs (the ranking itself: below)
    assert "No ranking: the published columns are CIFAR-10's, these runs tiny's." in md.split("## Ranking")[1]
    assert md.endswith("## Findings\n\nHand-written.\n")
    # a second call reads the completed runs back instead of training again
    assert not any(r.get("skipped") for r in rows)
    assert method_table.main(argv) == 0
    assert all(r["skipped"] for r in json.loads(out.with_suffix(".json").read_text()))


def ranked_row(method: str, preset: str, seed: int, top1: float, sets=(), status="completed") -> dict:
    """A row as ``main`` makes it, with the fields the ranking reads."""
    label = f"{method}-{preset}"
    return {"row": label + (f" ({', '.join(sets)})" if sets else ""), "sets": list(sets), "status": status,
            "pair": "resnet20-resnet8", "method": method, "preset": preset, "data_scale": 0, "seed": seed,
            "final_top1": top1}


def test_the_ranking_is_the_packages_table_in_the_chosen_column():
    rows = [ranked_row("fast", "fast2-cpu", 0, 30.0), ranked_row("fast", "fast2-cpu", 1, 34.0),
            ranked_row("cmi", "cpu", 0, 40.0), ranked_row("deepinv", "cpu", 0, 25.0),
            ranked_row("dafl", "cpu", 0, 90.0, sets=["lr_g=0"]),  # its own settings: no published row
            ranked_row("dfq", "cpu", 0, 95.0, status="failed"), ranked_row("noise", "cpu", 0, 10.0)]
    md = "\n".join(method_table.ranking(rows, "cifar10", "resnet34-resnet18"))
    assert md.startswith("### Ranking against the published CIFAR-10 tables, cifar10, resnet20-resnet8\n")
    body = [line for line in md.splitlines() if line.startswith("| ")]
    # resnet34-resnet18: cmi 94.84 > deepinv 93.26 > fast2 92.62; 2 of 3 pairs agree: (2 - 1) / 3
    assert body == ["| method | stands in | here top-1 % (rank) | resnet34-resnet18 |",
                    "| cmi | cmi-cpu [1] | 40.00 (1) | 94.84 (1) |",
                    "| fast2 | fast-fast2-cpu [2] | 32.00 (2) | 92.62 (3) |",
                    "| deepinv | deepinv-cpu [1] | 25.00 (3) | 93.26 (2) |",
                    "| Kendall tau |  |  | 0.33 (n=3) |"]
    one = method_table.ranking(rows[3:], "cifar10", "resnet34-resnet18")
    assert one[-1] == ("No ranking: fewer than two completed runs without settings of their own stand for a "
                       "published row.")
    assert method_table.ranking([], "cifar10", "resnet34-resnet18")[-1] == one[-1]


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
