"""Every method (or a chosen list) on one pair with one preset: student top-1, seconds
per epoch by phase, training FLOPs. Writes a markdown table with the command that
regenerates it.

    python benchmarks/method_table.py --dataset digits --out-md reports/digits-baseline.md
    python benchmarks/method_table.py --dataset cifar10 --data-root ../shared/data/cifar10-jpg \
        --pair resnet20-resnet8 --preset cpu --published resnet34-resnet18 \
        --methods noise,deepinv,fast:fast2-cpu,ssdkd:cpu+is_norm=mean --out-md reports/cpu-baseline.md

An entry is ``method[:preset][+key=value...][@seed/seed...]``; the ``+`` settings and
``@`` seeds apply to that entry only, and the settings show in its row.
"""
from __future__ import annotations

import argparse
import json
import shlex
import sys
from pathlib import Path

import pandas as pd

from dfkd_bench import harness, published, store, tables
from dfkd_bench.signals import sigterm_as_interrupt
from dfkd_bench.errors import UserError
from dfkd_bench.events import RunObserver
from dfkd_bench.plan import plan_runs
from dfkd_bench.registry import METHODS, discover_methods
from dfkd_bench.runs import preset_samples_per_epoch
from dfkd_bench.summary import RunSummary


def parse_entry(entry: str, preset: str | None, seeds: str) -> tuple[str, str | None, list[str], list[int]]:
    """``method[:preset][+key=value...][@seed/seed...]`` -> (method, preset, --set items,
    seeds). Without its own preset an entry takes the common ``--preset`` where the
    method has it; without its own seeds, the common ``--seeds``."""
    entry, _, own_seeds = entry.partition("@")
    head, *sets = entry.split("+")
    method, _, own = head.partition(":")
    chosen = own or (preset if preset and preset in METHODS.get(method).presets else None)
    for item in sets:
        if "=" not in item:
            raise UserError(f"entry {entry!r}: {item!r} is not key=value; "
                            f"accepted: method[:preset][+key=value...][@seed/seed...]")
    try:
        seed_list = [int(t) for t in (own_seeds.replace("/", ",") or seeds).split(",") if t.strip()]
    except ValueError:
        raise UserError(f"entry {entry!r}: seeds must be integers, e.g. @0/1") from None
    return method, chosen, sets, seed_list


def row_label(summary: RunSummary, sets: list[str]) -> str:
    return summary.label + (f" ({', '.join(sets)})" if sets else "")


class Announce(RunObserver):
    def message(self, text: str) -> None:
        print(text, flush=True)


def table(rows: list[dict]) -> list[str]:
    lines = ["| run | seed | epochs | samples/epoch | top-1 % | best epoch % | synth s/epoch | distill s/epoch | "
             "eval s/epoch | train s | training FLOPs | status |", "|---|---|---|---|---|---|---|---|---|---|---|---|"]
    for r in sorted(rows, key=lambda r: (r["final_top1"] is None, -(r["final_top1"] or 0))):
        e = max(1, r["epochs_done"])
        fmt = (lambda v: "-" if v is None else format(v, ".2f"))
        lines.append(f"| {r['row']} | {r['seed']} | {r['epochs_done']} | {r['samples_per_epoch']} | "
                     f"{fmt(r['final_top1'])} | {fmt(r.get('best_top1'))} | "
                     f"{r['seconds']['synthesis'] / e:.2f} | {r['seconds']['distillation'] / e:.2f} | "
                     f"{r['seconds']['evaluation'] / e:.2f} | {r['train_seconds']:.0f} | "
                     f"{r['training_flops']:.3g} | {r['status']} |")
    return lines


def ranking(rows: list[dict], dataset: str, pair: str) -> list[str]:
    """The package's ranking (``tables.ranking_table``, as ``dfkd-bench report`` writes it)
    of this table's completed runs beside the published CIFAR-10 column for ``pair``; an
    entry with settings of its own (``+key=value``) stands for no published row."""
    plain = [{**r, "label": r["row"]} for r in rows if not r["sets"] and r["status"] == "completed"]
    made = None
    if plain:
        exp = pd.DataFrame(plain).groupby(["pair", "label", "method", "preset", "data_scale"], dropna=False).agg(
            seeds=("seed", "size"), top1_mean=("final_top1", "mean")).reset_index()
        made = tables.ranking_table(exp, dataset, preset_samples_per_epoch, pairs=(pair,))
    if made is None:
        why = (f"the published columns are CIFAR-10's, these runs {dataset}'s" if dataset != "cifar10" else
               "fewer than two completed runs without settings of their own stand for a published row")
        return [f"## Ranking against the published CIFAR-10 table ({pair})", "", f"No ranking: {why}."]
    return [made.markdown().rstrip()]


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--methods", default=None,
                   help="comma-separated entries method[:preset][+key=value...][@seed/seed...] (default: all methods)")
    p.add_argument("--dataset", default="digits")
    p.add_argument("--pair", default=None)
    p.add_argument("--preset", default=None, help="preset applied to each method that has it")
    p.add_argument("--seeds", default="0")
    p.add_argument("--data-root", default=None)
    p.add_argument("--results", default="results/benchmarks")
    p.add_argument("--out-md", default=None, help="markdown table; a .json with every row's summary goes beside it")
    p.add_argument("--published", default=None, metavar="PAIR",
                   help=f"add the ranking against this published CIFAR-10 column ({', '.join(published.PAIRS)})")
    p.add_argument("--notes", default=None, help="a markdown file of findings appended below the tables")
    p.add_argument("--set", action="append", default=[])
    args = p.parse_args(argv)
    discover_methods()
    try:
        if args.published:
            published.cifar10(args.published)
        notes = Path(args.notes).read_text() if args.notes else ""
        entries = [parse_entry(e, args.preset, args.seeds)
                   for e in (args.methods.split(",") if args.methods else METHODS.names())]
        plans = []
        for method, preset, sets, seeds in entries:
            specs = plan_runs([method], preset=preset, dataset=args.dataset, pair=args.pair, seeds=seeds,
                              out=args.results, data_root=args.data_root, sets=[*args.set, *sets])
            plans += [(spec, sets) for spec in specs]
    except (UserError, ValueError, OSError) as exc:
        print(f"method_table: {exc}", file=sys.stderr)
        return 2
    rows = []
    for spec, sets in plans:
        with sigterm_as_interrupt():  # a killed run is recorded as interrupted, as under the CLI
            summary = harness.run(spec, Announce())
        row = {**summary.row(), "seconds": summary.seconds, "row": row_label(summary, sets), "sets": sets,
               "samples_per_epoch": summary.steps_per_epoch * spec.run.batch_size}
        print(f"{row['row']} seed {row['seed']}: {row['status']}, top-1 {row['final_top1']}, "
              f"train {row['train_seconds']:.0f} s", flush=True)
        rows.append(row)
    first = rows[0] if rows else None
    header = [f"# {args.dataset}, {first['pair'] if first else args.pair}",
              "", f"Teacher top-1: {first['teacher_top1']:.2f}%" if first else "",
              "", "Regenerate with (completed runs under --results are read back, not rerun):", "", "```",
              "python benchmarks/method_table.py " + " ".join(shlex.quote(a) for a in (argv or sys.argv[1:])), "```", ""]
    lines = header + table(rows)
    if args.published:
        lines += [""] + ranking(rows, args.dataset, args.published)
    if notes:
        lines += ["", notes.rstrip()]
    text = "\n".join(lines) + "\n"
    print(text)
    if args.out_md:
        out = Path(args.out_md)
        out.parent.mkdir(parents=True, exist_ok=True)
        store.atomic_write_bytes(out, text.encode())
        store.atomic_write_bytes(out.with_suffix(".json"), json.dumps(rows, indent=1, sort_keys=True).encode())
    return 1 if any(r["status"] != "completed" for r in rows) else 0


if __name__ == "__main__":
    sys.exit(main())
