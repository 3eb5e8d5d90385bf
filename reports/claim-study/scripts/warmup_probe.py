"""What a Fast-N generator makes during a synthesis-only warm-up, round by round: the
one-hot CE and BN loss the run logged (metrics.jsonl), and the teacher's view of the
images each round added to the pool (their normalised class entropy, the teacher's mean
top probability, its agreement with the round's random targets). Issue 31's first gate
reads these (one-hot CE below 1.0 and class entropy above 0.98 before distillation).

    python reports/claim-study/scripts/warmup_probe.py RUN_DIR [RUN_DIR ...] \
        --teacher results/claim-study/cache/teachers/cifar10/resnet32.pt --window 25

The run directories are `dfkd-bench run` folders of a fast preset with a long
``warmup_epochs`` (the pool holds one shard per round, in order). Prints a Markdown table
per run."""
from __future__ import annotations

import argparse
import json
import math
from pathlib import Path

import torch

from dfkd_bench.models import build_model
from dfkd_bench.teachers import load_state_dict_file


def round_views(run: Path, teacher: torch.nn.Module) -> list[dict]:
    """The teacher's view of each round's images (the pool's shards, one a round)."""
    views = []
    for shard in sorted((run / "pool").glob("shard-*.pt")):
        part = torch.load(shard, weights_only=True)
        with torch.no_grad():
            probs = teacher(part["images"]).softmax(1)
        views.append({"classes": probs.argmax(1), "top": probs.max(1).values,
                      "agree": probs.argmax(1) == part["labels"]})
    return views


def window_row(start: int, logs: list[dict], views: list[dict], classes: int) -> str:
    counts = torch.bincount(torch.cat([v["classes"] for v in views]), minlength=classes).float()
    share = counts / counts.sum()
    entropy = float(-(share[share > 0] * share[share > 0].log()).sum()) / math.log(classes)
    mean = lambda key: sum(r[key] for r in logs) / len(logs)  # noqa: E731
    top = float(torch.cat([v["top"] for v in views]).mean())
    agree = float(torch.cat([v["agree"].float() for v in views]).mean())
    return (f"| {start}-{start + len(logs) - 1} | {mean('synth_oh'):.2f} | {min(r['synth_oh'] for r in logs):.2f} "
            f"| {mean('synth_bn'):.2f} | {entropy:.3f} | {top:.2f} | {100 * agree:.1f} |")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("runs", nargs="+", type=Path)
    parser.add_argument("--teacher", type=Path, required=True)
    parser.add_argument("--arch", default="resnet32")
    parser.add_argument("--classes", type=int, default=10)
    parser.add_argument("--window", type=int, default=25)
    args = parser.parse_args()
    teacher = build_model(args.arch, args.classes, 3)
    teacher.load_state_dict(load_state_dict_file(args.teacher))
    teacher.eval()
    for run in args.runs:
        logs = [r for r in map(json.loads, (run / "metrics.jsonl").read_text().splitlines())
                if r.get("event") == "epoch" and "synth_oh" in r and "kd" not in r]
        views = round_views(run, teacher)[:len(logs)]
        print(f"\n{run.name}: {len(logs)} warm-up rounds, batch {len(views[0]['classes'])}\n")
        print("| rounds | one-hot CE (mean) | (min) | BN loss | class entropy | teacher top p | agrees with target % |")
        print("|---|---:|---:|---:|---:|---:|---:|")
        for start in range(0, len(logs), args.window):
            print(window_row(start, logs[start:start + args.window], views[start:start + args.window], args.classes))


if __name__ == "__main__":
    main()
