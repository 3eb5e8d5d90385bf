"""Each claims arm's final top-1 seed by seed, its mean ± std [n] (``dfkd_bench.stats``),
and its mean train time three ways: recorded wall seconds, and the processes' CPU seconds
(``runs.cpu_train_seconds``) over the runs that kept them. Arms and their runs are the
claims file's (``claims.arm_runs``), so the table and ``claims.md`` read the same runs; a
findings page quotes this table instead of copying numbers by hand.

    python reports/claim-study/scripts/seed_table.py reports/claim-study/runs grids/claim-study.yaml \
        > reports/claim-study/seeds.md
"""
from __future__ import annotations

import argparse
from pathlib import Path

from dfkd_bench import claims, stats
from dfkd_bench.report import load_summaries, of_methods
from dfkd_bench.runs import completed_runs, cpu_train_seconds, run_threads


def minutes(seconds: float) -> str:
    return f"{seconds / 3600:.2f} h" if seconds >= 5400 else f"{seconds / 60:.1f} min"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("runs", type=Path, help="a folder of run directories")
    parser.add_argument("claims", type=Path, help="the claims file (the study's grid)")
    args = parser.parse_args()
    study = claims.load_claims(args.claims)
    done = completed_runs(load_summaries(args.runs)[0])
    seeds = sorted({int(s) for s in done["seed"]})
    print("| arm | " + " | ".join(f"seed {s}" for s in seeds) + " | mean ± std [n] | train time (recorded) "
          "| train time (CPU seconds) [runs] |")
    print("|---|" + "---:|" * (len(seeds) + 3))
    for arm in study.arms.values():
        runs = claims.arm_runs(done, arm, of_methods)
        by_seed = {int(r.seed): float(r.final_top1) for r in runs.itertuples()}
        cells = [f"{by_seed[s]:.2f}" if s in by_seed else "-" for s in seeds]
        if by_seed:
            sample = stats.Sample.of(list(by_seed.values()))
            spread = f" ± {sample.std:.2f}" if sample.n > 1 else ""
            mean = f"{sample.mean:.2f}{spread} [{sample.n}]"
            wall = minutes(float(runs["train_seconds"].mean()))
        else:
            mean, wall = "- [0]", "-"
        cpu = [s for s in map(cpu_train_seconds, runs["path"]) if s is not None]
        cpu_cell = f"{minutes(sum(cpu) / len(cpu))} [{len(cpu)}/{len(runs)}]" if cpu else f"not kept [0/{len(runs)}]"
        print(f"| {arm.name}: {arm.describe()} | " + " | ".join(cells) + f" | {mean} | {wall} | {cpu_cell} |")
    threads = [run_threads(Path(p)) for p in done["path"]]
    core_hours = sum(t * s for t, s in zip(threads, done["total_seconds"])) / 3600
    print(f"\n{len(done)} completed runs, {core_hours:.1f} core-hours (each run's total seconds times its threads).")


if __name__ == "__main__":
    main()
