"""Class balance of what a pool method trains on at the end of its run: the teacher's
predicted class of every sample in the final pool (SSD-KD's buffer, Fast's pool), read
from the run directory's shards, as counts per class with the largest/smallest share and
the normalised entropy (1 = perfectly balanced). SSD-KD's Fig. 2 claim is that its
buffer is better balanced than Fast's pool. The script of reports/cpu-structure.md's
class-balance table (issue 12); runs made since record the same for their final pool in
``diagnostics.json``, which the report draws.

    python reports/cpu-structure/scripts/class_balance.py results/cpu-structure/*ssdkd* results/cpu-structure/*fast2*
"""
from __future__ import annotations

import argparse
import json
import math
import sys
from pathlib import Path

import torch

from dfkd_bench import store
from dfkd_bench.data import load_dataset
from dfkd_bench.registry import discover_methods
from dfkd_bench.teachers import load_teacher
from dfkd_bench.summary import RunSummary


def final_pool(rundir: store.RunDir) -> dict[str, torch.Tensor]:
    state = rundir.load_checkpoint()["feed"]
    parts = [rundir.shards().read(name) for name, _ in state["shards"]]
    size = state["pool"]["size"]
    return {k: torch.cat([p[k] for p in parts])[-size:] for k in parts[0]}


@torch.no_grad()
def teacher_classes(run: Path, summary: RunSummary, data_root: str | None) -> torch.Tensor:
    pool = final_pool(store.RunDir(run.parent, run.name))
    if "teacher_classes" in pool:
        return pool["teacher_classes"]
    data = load_dataset(summary.dataset, data_root)
    teacher = load_teacher(data, summary.teacher, data.image_shape[0]).eval()
    return torch.cat([teacher(x).argmax(1) for x in pool["images"].split(512)])


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("runs", nargs="+", help="run directories of pool methods")
    p.add_argument("--data-root", default=None)
    p.add_argument("--classes", type=int, default=10, help="classes of the data set (default 10)")
    args = p.parse_args(argv)
    discover_methods()
    print("| run | seed | samples | per-class counts | max/min share | normalised entropy |")
    print("|---|---|---|---|---|---|")
    for run in map(Path, args.runs):
        summary = store.RunDir(run.parent, run.name).summary()
        target = json.loads((run / store.CONFIG).read_text())["method_config"].get("task_target")
        label = summary.label + (f" (task_target={target})" if target else "")
        counts = torch.bincount(teacher_classes(run, summary, args.data_root), minlength=args.classes).tolist()
        n = sum(counts)
        shares = [c / n for c in counts]
        entropy = -sum(s * math.log(s) for s in shares if s > 0) / math.log(len(counts))
        ratio = max(counts) / max(1, min(counts))
        print(f"| {label} | {summary.seed} | {n} | {' '.join(map(str, counts))} | "
              f"{ratio:.1f}{'+' if min(counts) == 0 else ''} | {entropy:.3f} |")
    return 0


if __name__ == "__main__":
    sys.exit(main())
