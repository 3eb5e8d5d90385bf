"""Every method (or a chosen list) on one pair with one preset: student top-1, seconds
per epoch by phase, training FLOPs. Writes a markdown table with the command that
regenerates it.

    python benchmarks/method_table.py --dataset digits --out-md reports/digits-baseline.md
    python benchmarks/method_table.py --dataset cifar10 --data-root ../shared/data/cifar10-jpg \
        --pair resnet20-resnet8 --preset cpu --out-md reports/cpu-baseline.md
"""
from __future__ import annotations

import argparse
import shlex
import sys
from pathlib import Path

from dfkd_bench import harness, store
from dfkd_bench.cli import build_specs, make_parser
from dfkd_bench.registry import METHODS, discover_methods


def method_args(name: str, preset: str | None) -> tuple[str, list[str]]:
    """``name`` may carry its own preset as ``method:preset``; otherwise the common
    ``--preset`` is used where the method has it."""
    method, _, own = name.partition(":")
    chosen = own or (preset if preset and preset in METHODS.get(method).presets else None)
    return method, (["--preset", chosen] if chosen else [])


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--methods", default=None, help="comma-separated, each optionally method:preset (default: all)")
    p.add_argument("--dataset", default="digits")
    p.add_argument("--pair", default=None)
    p.add_argument("--preset", default=None, help="preset applied to each method that has it")
    p.add_argument("--seeds", default="0")
    p.add_argument("--data-root", default=None)
    p.add_argument("--results", default="results/benchmarks")
    p.add_argument("--out-md", default=None)
    p.add_argument("--set", action="append", default=[])
    args = p.parse_args(argv)
    discover_methods()
    names = args.methods.split(",") if args.methods else METHODS.names()
    rows = []
    for name in names:
        method, preset_args = method_args(name, args.preset)
        cmd = ["run", "--methods", method, *preset_args, "--dataset", args.dataset, "--seeds", args.seeds,
               "--out", args.results]
        cmd += (["--pair", args.pair] if args.pair else []) + (["--data-root", args.data_root] if args.data_root else [])
        for item in args.set:
            cmd += ["--set", item]
        for spec in build_specs(make_parser().parse_args(cmd)):
            summary = harness.run(spec, announce=print)
            print(f"{summary['label']} seed {summary['seed']}: {summary['status']}, top-1 {summary['final_top1']}, "
                  f"train {summary['train_seconds']:.0f} s", flush=True)
            rows.append(summary)
    lines = ["| method | seed | epochs | top-1 % | synth s/epoch | distill s/epoch | eval s/epoch | train s | "
             "training FLOPs | status |", "|---|---|---|---|---|---|---|---|---|---|"]
    for s in sorted(rows, key=lambda r: (r["final_top1"] is None, -(r["final_top1"] or 0))):
        e = max(1, s["epochs_done"])
        lines.append(f"| {s['label']} | {s['seed']} | {s['epochs_done']} | "
                     f"{'-' if s['final_top1'] is None else format(s['final_top1'], '.2f')} | "
                     f"{s['seconds']['synthesis'] / e:.2f} | {s['seconds']['distillation'] / e:.2f} | "
                     f"{s['seconds']['evaluation'] / e:.2f} | {s['train_seconds']:.0f} | "
                     f"{s['training_flops']:.3g} | {s['status']} |")
    teacher = rows[0] if rows else None
    header = [f"# {args.dataset}, {teacher['pair'] if teacher else args.pair}",
              "", f"Teacher top-1: {teacher['teacher_top1']:.2f}%" if teacher else "",
              "", "Regenerate with:", "", "```",
              "python benchmarks/method_table.py " + " ".join(shlex.quote(a) for a in (argv or sys.argv[1:])), "```", ""]
    text = "\n".join(header + lines) + "\n"
    print(text)
    if args.out_md:
        Path(args.out_md).parent.mkdir(parents=True, exist_ok=True)
        store.atomic_write_bytes(Path(args.out_md), text.encode())
    return 0


if __name__ == "__main__":
    sys.exit(main())
