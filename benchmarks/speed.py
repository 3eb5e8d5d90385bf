"""How fast each method's ``cpu`` preset runs on the CPU pair, and how close that is to
the machine's own limit.

For every method entry it runs a short run of the preset (``--epochs``, default 2, no
warm-up epochs, evaluation every epoch) through the harness and reads the run store:
seconds per phase of the last epoch (the first carries one-time costs: FLOP counting,
first allocations), one evaluation's seconds and its share of an epoch at the
preset's own ``eval_every``, images per second through teacher and student, and
the achieved GFLOP/s (training FLOPs / train seconds), and the host reads of tensor
values per KD step (``dfkd_bench.syncs``: what a GPU would synchronise on). Two references are measured in
the same process, on the same threads:

- the matmul peak: 2048 x 2048 matrix products in fp32 and (where the CPU has native
  bf16: AMX or AVX-512-BF16) bf16;
- the step ceiling: a bare KD step on the pair (teacher forward, student forward and
  backward, SGD) in a tight loop at the KD batch size, in each memory format and
  precision, the fastest these small convolutions run through PyTorch here.

The distillation phase's GFLOP/s (one teacher forward and one student forward and
backward per image) over the step ceiling says how much of a KD step is the harness's
own overhead.

With ``--baseline FILE`` (a JSON this script wrote earlier, e.g. on the commit before a
change), the current numbers are also printed as ratios: baseline seconds / current
seconds, so 2.0 means twice as fast now. Results are environment-stamped (commit,
dirty flag, CPU, torch, threads).

    python benchmarks/speed.py --data-root ../shared/data/cifar10-jpg \\
        --out benchmarks/baselines/speed-after-issue16.json \\
        --baseline benchmarks/baselines/speed-before-issue16.json

The teacher of the pair must be in the zoo (``dfkd-bench teachers train ...``).
Timings are never asserted anywhere; run this on a quiet machine, or say what else ran.
"""
from __future__ import annotations

import argparse
import json
import statistics
import sys
import tempfile
import time
from pathlib import Path

import torch
import torch.nn.functional as F

from dfkd_bench import harness, store, syncs
from dfkd_bench.errors import UserError
from dfkd_bench.models import build_model
from dfkd_bench.pairs import resolve_pair
from dfkd_bench.plan import plan_runs
from dfkd_bench.registry import discover_methods

DEFAULT_METHODS = "fast:fast2-cpu,cmi:cpu,deepinv:cpu,ssdkd:cpu,dda:cpu,fast:fast10-cpu,dafl:cpu,dfq:cpu,noise:cpu"
PHASES = ("synthesis", "augmentation", "distillation", "evaluation", "checkpoint")


def cpu_has_native_bf16() -> bool:
    try:
        from dfkd_bench.precision import cpu_bf16_support  # after issue 16
        return cpu_bf16_support()[0]
    except ImportError:
        flags = Path("/proc/cpuinfo").read_text() if Path("/proc/cpuinfo").exists() else ""
        return "amx_bf16" in flags or "avx512_bf16" in flags


def median_seconds(fn, repeats: int, warmup: int = 1) -> float:
    for _ in range(warmup):
        fn()
    times = []
    for _ in range(repeats):
        started = time.perf_counter()
        fn()
        times.append(time.perf_counter() - started)
    return statistics.median(times)


def matmul_peak(dtype: torch.dtype, n: int = 2048, repeats: int = 5) -> float:
    """GFLOP/s of an n x n matrix product (median of ``repeats``)."""
    a, b = torch.randn(n, n, dtype=dtype), torch.randn(n, n, dtype=dtype)
    return 2 * n ** 3 / median_seconds(lambda: a @ b, repeats) / 1e9


def step_ceiling(teacher_arch: str, student_arch: str, batch: int, channels_last: bool, bf16: bool,
                 repeats: int = 8, compile: bool = False) -> dict:
    """Seconds and GFLOP/s of a bare KD step (teacher forward under no_grad, student
    forward and backward, SGD) with random weights and images; with ``compile``, both
    models through ``torch.compile`` and the first (compiling) step timed apart."""
    from torch.utils.flop_counter import FlopCounterMode

    teacher, student = build_model(teacher_arch, 10, 3).eval(), build_model(student_arch, 10, 3).train()
    fmt = torch.channels_last if channels_last else torch.contiguous_format
    teacher.to(memory_format=fmt)
    student.to(memory_format=fmt)
    x = torch.randn(batch, 3, 32, 32).contiguous(memory_format=fmt)
    opt = torch.optim.SGD(student.parameters(), lr=0.01, momentum=0.9)
    autocast = torch.autocast("cpu", dtype=torch.bfloat16, enabled=bf16)

    def step():
        with autocast:
            with torch.no_grad():
                t = teacher(x)
            s = student(x)
        loss = F.kl_div(F.log_softmax(s.float() / 4, 1), F.softmax(t.float() / 4, 1), reduction="batchmean")
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()

    with torch.no_grad(), FlopCounterMode(display=False) as fc_t:
        teacher(x[:1])
    with torch.no_grad(), FlopCounterMode(display=False) as fc_s:
        student(x[:1])
    flops = batch * (fc_t.get_total_flops() + 3 * fc_s.get_total_flops())
    compile_seconds = None
    if compile:
        teacher, student = torch.compile(teacher), torch.compile(student)
        compile_seconds = median_seconds(step, 1, warmup=0)
    seconds = median_seconds(step, repeats, warmup=2)
    out = {"seconds": seconds, "gflops": flops / seconds / 1e9, "flops_per_image": flops / batch}
    return {**out, "compile_seconds": compile_seconds} if compile else out


def phase_seconds_per_epoch(records: list[dict]) -> dict[str, float]:
    """Per-phase seconds of the last epoch record (the records hold running totals)."""
    epochs = [r for r in records if r.get("event") == "epoch"]
    last, before = epochs[-1], (epochs[-2] if len(epochs) > 1 else {})
    return {p: last.get(f"seconds_{p}", 0.0) - before.get(f"seconds_{p}", 0.0) for p in PHASES}


def measure_method(entry: str, args, out: Path) -> dict:
    method, _, preset = entry.partition(":")
    sets = [f"num_threads={args.threads}", "eval_every=1", "warmup_epochs=0", *args.set]
    spec = plan_runs([entry], dataset=args.dataset, pair=args.pair, epochs=args.epochs, sets=sets, out=out,
                     data_root=args.data_root, train_missing_teacher=False)[0]
    preset_eval_every = plan_runs([entry], dataset=args.dataset, pair=args.pair, data_root=args.data_root,
                                  out=out)[0].run.eval_every
    with syncs.counting() as reads:  # what a GPU would wait for (dfkd_bench.syncs)
        summary = harness.run(spec)
    rundir = harness.run_dir(spec)
    records = [json.loads(line) for line in rundir.file(store.METRICS).read_text().splitlines() if line.strip()]
    per_epoch = phase_seconds_per_epoch(records)
    train_epoch = sum(per_epoch[p] for p in ("synthesis", "augmentation", "distillation"))
    epoch_total = train_epoch + per_epoch["evaluation"] / preset_eval_every + per_epoch["checkpoint"]
    c = summary.costs
    kd_images = summary.steps_per_epoch * spec.run.batch_size
    kd_flops_per_image = c.get("teacher_flops_per_image", 0) + 3 * c.get("student_flops_per_image", 0)
    config = json.loads(rundir.file(store.CONFIG).read_text())
    return {
        "entry": entry, "label": summary.label, "status": summary.status, "epochs": args.epochs,
        "precision": config["run"].get("precision", "fp32"),
        "channels_last": config["run"].get("channels_last", False),
        "seconds_per_epoch": {k: round(v, 3) for k, v in per_epoch.items()},
        "train_seconds_per_epoch": round(train_epoch, 3),
        "eval_every": preset_eval_every,
        "eval_share_of_epoch": round(per_epoch["evaluation"] / preset_eval_every / max(epoch_total, 1e-9), 4),
        "epoch_seconds_at_preset": round(epoch_total, 3),
        "teacher_images_per_s": round(c.get("teacher_forward_images", 0) / max(summary.train_seconds, 1e-9), 1),
        "student_images_per_s": round(c.get("student_forward_images", 0) / max(summary.train_seconds, 1e-9), 1),
        "training_gflops_per_s": round(summary.training_flops / max(summary.train_seconds, 1e-9) / 1e9, 2),
        "distill_gflops_per_s": round(kd_images * kd_flops_per_image / max(per_epoch["distillation"], 1e-9) / 1e9,
                                      2),
        "final_top1": summary.final_top1,
        # host reads of tensor values (CUDA syncs) over the run's KD steps: an upper bound per
        # step, since the run's per-epoch reads (logs, evaluation, checkpoint) are included
        "syncs_per_kd_step": round(reads.total / max(1, args.epochs * summary.steps_per_epoch), 2),
        "syncs_by_kind": reads.by_kind,
    }


def ratios(current: dict, baseline: dict) -> list[dict]:
    """Baseline seconds / current seconds per method (matched by entry) and phase."""
    base = {m["entry"]: m for m in baseline["methods"]}
    rows = []
    for m in current["methods"]:
        b = base.get(m["entry"])
        if b is None:
            continue
        row = {"entry": m["entry"]}
        for p in ("synthesis", "augmentation", "distillation", "evaluation"):
            cur, old = m["seconds_per_epoch"][p], b["seconds_per_epoch"][p]
            row[p] = round(old / cur, 2) if cur > 0 and old > 0 else None
        row["train"] = round(b["train_seconds_per_epoch"] / m["train_seconds_per_epoch"], 2)
        row["epoch_at_preset"] = round(b["epoch_seconds_at_preset"] / m["epoch_seconds_at_preset"], 2)
        rows.append(row)
    return rows


def markdown(result: dict, ratio_rows: list[dict] | None) -> str:
    env, ref = result["environment"], result["references"]
    lines = [f"commit {env['git_commit'][:10] if env['git_commit'] else '?'}"
             f"{' (dirty)' if env['git_dirty'] else ''}, {env['cpu_model']} ({env.get('cpu_kind', 'kind not recorded')}), torch {env['torch']}, "
             f"{result['threads']} thread(s)", "",
             f"matmul 2048^2: fp32 {ref['matmul_fp32_gflops']:.1f} GFLOP/s"
             + (f", bf16 {ref['matmul_bf16_gflops']:.1f} GFLOP/s" if ref.get("matmul_bf16_gflops") else
                ", bf16 not measured (no native bf16 on this CPU)"), "",
             "| KD step ceiling (bare loop) | batch | ms | GFLOP/s | share of fp32 matmul |", "|---|---|---|---|---|"]
    for name, c in ref["step_ceiling"].items():
        compiled = f" (compile {c['compile_seconds']:.0f} s)" if c.get("compile_seconds") else ""
        lines.append(f"| {name}{compiled} | {ref['ceiling_batch']} | {c['seconds'] * 1e3:.0f} | {c['gflops']:.1f} | "
                     f"{c['gflops'] / ref['matmul_fp32_gflops']:.2f} |")
    best = max((c["gflops"] for c in ref["step_ceiling"].values()), default=None)
    lines += ["", "| method | precision | synth s | aug s | distill s | eval s (one) | eval share | train s/epoch | "
                  "teacher img/s | student img/s | train GFLOP/s | distill GFLOP/s | distill / ceiling |",
              "|---|---|---|---|---|---|---|---|---|---|---|---|---|"]
    for m in result["methods"]:
        s = m["seconds_per_epoch"]
        lines.append(f"| {m['label']} | {m['precision']} | {s['synthesis']:.2f} | {s['augmentation']:.2f} | "
                     f"{s['distillation']:.2f} | {s['evaluation']:.2f} | {m['eval_share_of_epoch'] * 100:.1f}% "
                     f"(every {m['eval_every']}) | {m['train_seconds_per_epoch']:.2f} | {m['teacher_images_per_s']:.0f} | "
                     f"{m['student_images_per_s']:.0f} | {m['training_gflops_per_s']:.1f} | "
                     f"{m['distill_gflops_per_s']:.1f} | "
                     + (f"{m['distill_gflops_per_s'] / best:.2f} |" if best else "— |"))
    if ratio_rows:
        lines += ["", "Baseline seconds / current seconds (higher is faster now):", "",
                  "| method | synthesis | augmentation | distillation | evaluation | train | epoch at preset |",
                  "|---|---|---|---|---|---|---|"]
        fmt = (lambda v: "—" if v is None else f"{v:.2f}x")
        for r in ratio_rows:
            lines.append(f"| {r['entry']} | {fmt(r['synthesis'])} | {fmt(r['augmentation'])} | "
                         f"{fmt(r['distillation'])} | {fmt(r['evaluation'])} | {fmt(r['train'])} | "
                         f"{fmt(r['epoch_at_preset'])} |")
    return "\n".join(lines) + "\n"


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--dataset", default="cifar10")
    p.add_argument("--data-root", default=None)
    p.add_argument("--pair", default="resnet20-resnet8")
    p.add_argument("--methods", default=DEFAULT_METHODS, help="comma-separated method[:preset] entries")
    p.add_argument("--epochs", type=int, default=2)
    p.add_argument("--threads", type=int, default=1)
    p.add_argument("--set", action="append", default=[], help="key=value for every run, e.g. precision=fp32")
    p.add_argument("--no-ceiling", action="store_true", help="skip the bare KD-step references")
    p.add_argument("--compile", action="store_true", help="also a torch.compile'd bare KD step, its compile time apart")
    p.add_argument("--out", type=Path, required=True, help="JSON file to write (with --from-json: to read)")
    p.add_argument("--from-json", action="store_true", help="measure nothing: print --out's table (and ratios)")
    p.add_argument("--out-md", type=Path, default=None)
    p.add_argument("--baseline", type=Path, default=None, help="a JSON of an earlier run of this script")
    args = p.parse_args(argv)
    if args.epochs < 2:
        print("speed.py: --epochs must be at least 2 (the first epoch carries one-time costs)", file=sys.stderr)
        return 2
    baseline = None
    if args.baseline is not None:
        try:
            baseline = json.loads(args.baseline.read_text())
        except (OSError, ValueError) as exc:
            print(f"speed.py: cannot read baseline {args.baseline}: {exc}", file=sys.stderr)
            return 2
    if args.from_json:
        result = json.loads(args.out.read_text())
        text = markdown(result, ratios(result, baseline) if baseline else None)
        if args.out_md:
            args.out_md.write_text(text)
        print(text)
        return 0
    torch.set_num_threads(args.threads)
    discover_methods()
    pair = resolve_pair(args.pair, args.dataset, "cpu")
    bf16 = cpu_has_native_bf16()
    refs = {"matmul_fp32_gflops": round(matmul_peak(torch.float32), 2),
            "matmul_bf16_gflops": round(matmul_peak(torch.bfloat16), 2) if bf16 else None,
            "ceiling_batch": 128, "step_ceiling": {}}
    if not args.no_ceiling:
        variants = [("fp32 NCHW", False, False, False), ("fp32 channels_last", True, False, False)]
        variants += [("bf16 channels_last", True, True, False)] if bf16 else []
        variants += [("fp32 channels_last, torch.compile", True, False, True)] if args.compile else []
        for name, cl, b, comp in variants:
            refs["step_ceiling"][name] = step_ceiling(pair.teacher, pair.student, 128, cl, b, compile=comp)
            print(f"ceiling {name}: {refs['step_ceiling'][name]['seconds'] * 1e3:.0f} ms a step", flush=True)
    methods = []
    with tempfile.TemporaryDirectory(prefix="dfkd-speed-") as tmp:
        for entry in [e.strip() for e in args.methods.split(",") if e.strip()]:
            try:
                methods.append(measure_method(entry, args, Path(tmp)))
            except UserError as exc:
                print(f"speed.py: {entry}: {exc}", file=sys.stderr)
                return 2
            m = methods[-1]
            print(f"{m['label']}: {m['train_seconds_per_epoch']:.2f} train s/epoch "
                  f"({', '.join(f'{k} {v:.2f}' for k, v in m['seconds_per_epoch'].items() if v)})", flush=True)
    result = {"environment": store.environment(torch.device("cpu")), "threads": args.threads,
              "command": " ".join(sys.argv),
              "native_bf16": bf16, "pair": pair.name, "dataset": args.dataset, "sets": args.set,
              "references": refs, "methods": methods}
    args.out.parent.mkdir(parents=True, exist_ok=True)
    store.atomic_write_json(args.out, result)
    text = markdown(result, ratios(result, baseline) if baseline else None)
    if args.out_md:
        args.out_md.write_text(text)
    print(text)
    return 0


if __name__ == "__main__":
    sys.exit(main())
