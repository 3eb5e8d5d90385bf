"""Throughput of a sweep on an n-core machine: n runs of 1 thread side by side against
fewer runs of more threads (runs per hour), the measurement behind ``dfkd-bench
sweep``'s default worker count.

The workload of one "run" is a fixed number of bare KD steps on the pair (teacher
forward, student forward and backward, SGD, batch 128, channels_last fp32), the
operation that dominates every method's epoch; each layout runs the same total number
of runs (n), so the comparison is wall-clock for the same work.

    python benchmarks/threads.py --steps 20 --out reports/speed/threads.json
"""
from __future__ import annotations

import argparse
import multiprocessing
import os
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))


def one_run(threads: int, steps: int, teacher: str, student: str, batch: int) -> float:
    import torch

    from speed import step_ceiling

    torch.set_num_threads(threads)
    started = time.perf_counter()
    step_ceiling(teacher, student, batch, channels_last=True, bf16=False, repeats=steps)
    return time.perf_counter() - started


def layout(workers: int, threads: int, runs: int, args) -> dict:
    """``runs`` runs on ``workers`` processes of ``threads`` threads each; wall-clock."""
    ctx = multiprocessing.get_context("spawn")
    started = time.perf_counter()
    with ctx.Pool(workers) as pool:
        per_run = pool.starmap(one_run, [(threads, args.steps, args.teacher, args.student, args.batch)] * runs)
    wall = time.perf_counter() - started
    return {"workers": workers, "threads": threads, "runs": runs, "wall_s": round(wall, 2),
            "run_s_median": round(sorted(per_run)[len(per_run) // 2], 2), "runs_per_hour": round(runs * 3600 / wall, 1)}


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--steps", type=int, default=20, help="KD steps a run")
    p.add_argument("--teacher", default="resnet20")
    p.add_argument("--student", default="resnet8")
    p.add_argument("--batch", type=int, default=128)
    p.add_argument("--cores", type=int, default=os.cpu_count() or 1)
    p.add_argument("--out", type=Path, default=None)
    args = p.parse_args(argv)
    n = args.cores
    results = []
    # Every way of splitting n cores into equal workers, each layout doing n runs.
    for workers in [w for w in range(n, 0, -1) if n % w == 0]:
        results.append(layout(workers, n // workers, n, args))
        r = results[-1]
        print(f"{r['workers']} worker(s) x {r['threads']} thread(s): {r['runs']} runs in {r['wall_s']:.1f} s, "
              f"{r['runs_per_hour']:.0f} runs/h (one run {r['run_s_median']:.1f} s)", flush=True)
    best = max(results, key=lambda r: r["runs_per_hour"])
    worst = min(results, key=lambda r: r["runs_per_hour"])
    print(f"best: {best['workers']} worker(s) x {best['threads']} thread(s), "
          f"{best['runs_per_hour'] / worst['runs_per_hour']:.2f}x the throughput of "
          f"{worst['workers']} x {worst['threads']}")
    if args.out:
        from dfkd_bench import store
        import torch

        args.out.parent.mkdir(parents=True, exist_ok=True)
        store.atomic_write_json(args.out, {"environment": store.environment(torch.device("cpu")), "cores": n,
                                           "steps": args.steps, "pair": f"{args.teacher}-{args.student}",
                                           "layouts": results, "best": best})
    return 0


if __name__ == "__main__":
    sys.exit(main())
