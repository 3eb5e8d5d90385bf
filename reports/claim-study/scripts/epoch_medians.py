"""Each run's median seconds per epoch, by phase, over its warm-up (synthesis-only) epochs
and over its distillation epochs, from its epoch records (``runs.epoch_records``).

Arms that do the same work in a phase should take the same time for it (every SSD-KD arm's
generator is the same; S, S', N, P and B take the same 20 KD steps an epoch), so a run
whose medians stand apart from its twins' ran beside other work for most of that phase:
the median hides a stretch of load, not load that lasts. Runs recorded since the clock
kept CPU seconds also show their CPU share (``runs.cpu_share``), the direct reading.

    python reports/claim-study/scripts/epoch_medians.py reports/claim-study/runs > reports/claim-study/epoch-medians.md
"""
from __future__ import annotations

import argparse
import json
import statistics
from pathlib import Path

from dfkd_bench.runs import cpu_share, epoch_records, epoch_steps

# (column, the epochs it reads, the phase): a warm-up epoch only synthesises
COLUMNS = (("warm-up epoch: synthesis", False, "synthesis"), ("distillation epoch: synthesis", True, "synthesis"),
           ("distillation epoch: KD", True, "distillation"))


def medians(run: Path, warmup: int) -> dict[str, float | None]:
    last = epoch_records(run)
    out: dict[str, float | None] = {}
    for column, distilling, phase in COLUMNS:
        steps = [s for e, s in epoch_steps(last, [f"seconds_{phase}"]).items()
                 if e > 0 and (e >= warmup) == distilling]  # epoch 0 also pays the process's first-use costs
        out[column] = statistics.median(steps) if steps else None
    return out


def describe(run: Path) -> tuple[str, int]:
    config = json.loads((run / "config.json").read_text())
    own, settings = config.get("method_config", {}), config.get("run", {})
    label = f"{config['method']}:{config.get('preset')}"
    extra = [f"{k}={own[k]}" for k in ("task_target",) if k in own]
    extra += [f"kd_passes={settings['kd_passes']}"] if settings.get("kd_passes", 1) != 1 else []
    return label + (f" ({', '.join(extra)})" if extra else "") + f" s{config['seed']}", int(settings.get("warmup_epochs", 0))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("runs", type=Path, help="a folder of run directories")
    args = parser.parse_args()
    rows = []
    for run in sorted(p.parent for p in args.runs.glob("*/summary.json")):
        label, warmup = describe(run)
        rows.append((label, medians(run, warmup), cpu_share(run)))
    columns = [c for c, _, _ in COLUMNS]
    print("| run | " + " | ".join(f"{c} (median s)" for c in columns) + " | CPU share |")
    print("|---|" + "---:|" * (len(columns) + 1))
    for label, values, share in sorted(rows):
        cells = ["-" if values[c] is None else f"{values[c]:.2f}" for c in columns]
        print(f"| {label} | " + " | ".join(cells) + f" | {'not recorded' if share is None else f'{share:.2f}'} |")


if __name__ == "__main__":
    main()
