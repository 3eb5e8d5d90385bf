"""Checkpoint cost against pool size: a pool method whose pool grows every epoch, with
per-epoch seconds in the checkpoint phase, the checkpoint file's size and the bytes of
pool shards written that epoch. Since pool images are written once as shards, the
checkpoint's size and time stay flat while the pool grows.

    python benchmarks/checkpoint_cost.py --epochs 10 --synth-batch 2048
"""
from __future__ import annotations

import argparse
import tempfile
from pathlib import Path

from dfkd_bench import harness, store
from dfkd_bench.events import RunObserver
from dfkd_bench.plan import plan_runs
from dfkd_bench.registry import discover_methods


class Sizes(RunObserver):
    """Per epoch: pool size, checkpoint MB, shard MB written, and the checkpoint phase's
    running total (a record holds the totals from before its own checkpoint)."""

    def __init__(self, rundir: Path):
        self.rundir, self.rows, self.totals, self.shard_bytes = rundir, [], [], 0

    def epoch(self, epoch, record):
        shards = sum(f.stat().st_size for f in (self.rundir / store.POOL_DIR).glob("*.pt"))
        ckpt = (self.rundir / store.CHECKPOINT).stat().st_size
        self.rows.append([epoch, record.get("pool_size"), ckpt / 2**20, (shards - self.shard_bytes) / 2**20])
        self.totals.append(record["seconds_checkpoint"])
        self.shard_bytes = shards

    def done(self, summary):
        totals = [*self.totals[1:], summary.seconds["checkpoint"]]
        for row, before, after in zip(self.rows, self.totals, totals):
            row.append(after - before)


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--method", default="deepinv")
    p.add_argument("--epochs", type=int, default=10)
    p.add_argument("--synth-batch", type=int, default=2048)
    p.add_argument("--steps", type=int, default=1, help="synthesis steps a round (the cost is not what is measured)")
    args = p.parse_args(argv)
    discover_methods()
    with tempfile.TemporaryDirectory() as out:
        (spec,) = plan_runs([args.method], epochs=args.epochs, out=out, device="cpu",
                            sets={"synth_batch": args.synth_batch, "steps": args.steps, "kd_steps": 2})
        rundir = Path(out) / harness.run_name(harness.resolved_config(spec, harness.resolve_device("cpu")))
        sizes = Sizes(rundir)
        harness.run(spec, sizes)
    print(f"{args.method}, digits, {args.synth_batch} images a round, {args.epochs} epochs")
    print("| epoch | pool images | checkpoint MB | shard MB written | checkpoint s |")
    print("|---|---|---|---|---|")
    for epoch, pool, ckpt, shard, seconds in sizes.rows:
        print(f"| {epoch} | {pool} | {ckpt:.2f} | {shard:.2f} | {seconds:.3f} |")
    first, last = sizes.rows[0], sizes.rows[-1]
    print(f"\npool x{last[1] / first[1]:.0f}; checkpoint size x{last[2] / first[2]:.2f}; "
          f"checkpoint seconds x{last[4] / max(first[4], 1e-9):.2f} (last epoch / first)")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
