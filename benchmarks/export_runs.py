"""Copy the records of a run store that a report reads, and nothing else, into another
tree: summary.json, config.json, environment.json, metrics.jsonl and the diagnostics
files of every run directory (checkpoints, pools and locks stay behind). This is how
reports/cpu-study/runs is made from the study's run store, so that

    dfkd-bench report --results reports/cpu-study/runs --out reports/cpu-study

regenerates the study's report on a fresh clone without training anything.

    python benchmarks/export_runs.py results/cpu-study/runs reports/cpu-study/runs

Only completed runs are exported unless ``--all``; a run already exported is replaced
whole, atomically file by file, so an export killed part-way leaves every file either
the old one or the new one. Prints what it copied.
"""
from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

from dfkd_bench import diagnostics, store

RECORDS = (store.SUMMARY, store.CONFIG, store.ENVIRONMENT, store.METRICS, diagnostics.DIAGNOSTICS_SUMMARY,
           diagnostics.DIAGNOSTICS)


def export(source: Path, dest: Path, completed_only: bool = True) -> list[str]:
    """Copy each run directory's records from ``source`` to ``dest``; returns the names
    of the runs copied."""
    copied = []
    for summary in sorted(source.glob(f"*/{store.SUMMARY}")):
        run = summary.parent
        status = json.loads(summary.read_text()).get("status")
        if completed_only and status != "completed":
            continue
        target = dest / run.name
        target.mkdir(parents=True, exist_ok=True)
        for name in RECORDS:
            if (run / name).is_file():
                store.atomic_write_bytes(target / name, (run / name).read_bytes())
        copied.append(run.name)
    return copied


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("source", type=Path, help="a run store (a sweep's out)")
    p.add_argument("dest", type=Path, help="where the records go")
    p.add_argument("--all", action="store_true", help="also runs not completed (the report lists them apart)")
    args = p.parse_args(argv)
    if not args.source.is_dir():
        print(f"export_runs: {args.source} is not a directory; give a run store such as results/cpu-study/runs",
              file=sys.stderr)
        return 2
    copied = export(args.source, args.dest, completed_only=not args.all)
    print(f"exported {len(copied)} run(s) from {args.source} to {args.dest}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
