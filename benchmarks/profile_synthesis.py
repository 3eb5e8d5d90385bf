"""The operators of one synthesis round of each method, by self CPU time
(torch.profiler), to see what in a round is not the models' own work.

For each entry the run's session is built as the harness builds it (same teacher,
student, method, feed and precision), one round is run to warm up (first-call
allocations, FLOP counting) and the next is profiled: ``method.synthesize`` only,
as the synthesis phase runs it. Prints, per method, the round's seconds and the top
operators; ``--out`` writes it all to a text file.

    python benchmarks/profile_synthesis.py --data-root ../shared/data/cifar10-jpg \\
        --methods fast:fast2-cpu,cmi:cpu,deepinv:cpu,ssdkd:cpu,dda:cpu --out reports/speed/profile-after.txt
"""
from __future__ import annotations

import argparse
import sys
import tempfile
import time
from pathlib import Path

import torch
from torch.profiler import ProfilerActivity, profile

from dfkd_bench import harness
from dfkd_bench.events import RunObserver
from dfkd_bench.plan import plan_runs
from dfkd_bench.registry import discover_methods


def session_for(entry: str, args, out: Path) -> harness.Session:
    spec = plan_runs([entry], dataset=args.dataset, pair=args.pair, sets=[f"num_threads={args.threads}", *args.set],
                     data_root=args.data_root, out=out, train_missing_teacher=False)[0]
    device = torch.device("cpu")
    spec = harness.effective_spec(spec, device)
    resolved = harness.resolved_config(spec, device)
    rundir = harness.run_dir(spec, device)
    rundir.create()
    return harness.Session(spec, device, rundir, resolved, RunObserver())


def profile_round(session: harness.Session, rows: int) -> tuple[float, str]:
    feed = session.feed
    feed.synthesize(0)  # warm-up round
    with profile(activities=[ProfilerActivity.CPU]) as prof:
        started = time.perf_counter()
        feed.synthesize(1)
        seconds = time.perf_counter() - started
    table = prof.key_averages().table(sort_by="self_cpu_time_total", row_limit=rows, max_name_column_width=48)
    return seconds, table


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--dataset", default="cifar10")
    p.add_argument("--data-root", default=None)
    p.add_argument("--pair", default="resnet20-resnet8")
    p.add_argument("--methods", default="fast:fast2-cpu,cmi:cpu,deepinv:cpu,ssdkd:cpu,dda:cpu")
    p.add_argument("--threads", type=int, default=1)
    p.add_argument("--rows", type=int, default=15)
    p.add_argument("--set", action="append", default=[], help="key=value for every session")
    p.add_argument("--out", type=Path, default=None)
    args = p.parse_args(argv)
    torch.set_num_threads(args.threads)
    discover_methods()
    parts = []
    with tempfile.TemporaryDirectory(prefix="dfkd-profile-") as tmp:
        for entry in [e.strip() for e in args.methods.split(",") if e.strip()]:
            session = session_for(entry, args, Path(tmp))
            seconds, table = profile_round(session, args.rows)
            text = f"## {entry}: one synthesis round {seconds:.2f} s (under the profiler)\n\n{table}\n"
            print(text, flush=True)
            parts.append(text)
    if args.out:
        args.out.parent.mkdir(parents=True, exist_ok=True)
        args.out.write_text("\n".join(parts))
    return 0


if __name__ == "__main__":
    sys.exit(main())
