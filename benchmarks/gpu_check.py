"""The device acceptance check (issue 32): one command that a session lent a GPU runs as it
is, in at most about 8 minutes, and whose JSON the README's speed section quotes.

    python benchmarks/gpu_check.py --data-root ../shared/data/cifar10-jpg --out gpu-check.json
    python benchmarks/gpu_check.py --small --out /tmp/gpu-check.json     # the CPU form (CI)

It trains a throw-away teacher for about ``--teacher-seconds`` (in a temporary zoo, never
the user's), then runs short slices of the ``paper`` presets of fast2, ssdkd, cmi, deepinv
and dda (with a tiny random diffusion pipeline: its cost, not its images) on
resnet34 -> resnet18, under each precision the device runs natively (CUDA: fp32, bf16 on
compute capability 8.0 and later, fp16; CPU: fp32, and bf16 where the CPU has it). A
slice is the preset with its epochs cut to ``--epochs`` (no warm-up) and the inner
synthesis steps capped at ``--max-synth-steps`` (DeepInv's 1,000 pixel steps a round
alone would take the budget); both are printed with the results. For each it reports KD
and synthesis steps a second, host reads (CUDA syncs) per KD step, distillation TFLOP/s
against the device's measured bf16 matmul peak, and peak and reserved memory. Then:
two identical deterministic runs (``run.deterministic``) compared weight by weight,
``run.compile`` on against off (KD steps a second, and what compiled), and one run
stopped after an epoch and resumed, compared with the uninterrupted one.

``--small`` is the same code on the embedded digits set with the quickstart's pair
(cnn_m -> cnn_s) and the ``smoke`` presets: seconds on a CPU, so the test suite runs it
(tests/test_gpu_check.py) and the script cannot rot while no GPU is lent. No timing is
asserted anywhere; the checks that must hold are the determinism, resume and sync ones,
and the script exits 1 if one fails.
"""
from __future__ import annotations

import argparse
import dataclasses
import json
import os
import platform
import statistics
import sys
import tempfile
import time
from pathlib import Path

import torch

from dfkd_bench import harness, store, syncs
from dfkd_bench.augment import build_tiny_pipeline
from dfkd_bench.config import resolve_device
from dfkd_bench.data import load_dataset
from dfkd_bench.events import StopAfter
from dfkd_bench.plan import plan_runs
from dfkd_bench.precision import cpu_bf16_support
from dfkd_bench.registry import discover_methods
from dfkd_bench.teachers import TrainRecipe, teacher_metadata, train_teacher

METHODS = ("fast:fast2", "ssdkd:paper", "cmi:paper", "deepinv:paper", "dda:paper")
SMALL_METHODS = ("fast:smoke", "ssdkd:smoke", "cmi:smoke", "deepinv:smoke", "dda:smoke")


@dataclasses.dataclass(frozen=True)
class Setting:
    """What a check runs on: data, pair, presets and budgets."""

    dataset: str
    pair: str
    methods: tuple[str, ...]
    epochs: int
    max_synth_steps: int
    teacher_seconds: float
    data_root: str | None


def precisions(device: torch.device) -> list[str]:
    """The precisions ``device`` runs natively."""
    if device.type == "cuda":
        major, _ = torch.cuda.get_device_capability(device)
        return ["fp32", *(["bf16"] if major >= 8 else []), "fp16"]
    return ["fp32", *(["bf16"] if cpu_bf16_support()[0] else [])]


def synchronize(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def bf16_peak_tflops(device: torch.device, n: int, repeats: int = 5) -> float | None:
    """The device's measured bf16 matmul peak (n x n products), or None without native bf16."""
    if "bf16" not in precisions(device):
        return None
    a, b = (torch.randn(n, n, device=device, dtype=torch.bfloat16) for _ in range(2))
    times = []
    for i in range(repeats + 1):
        synchronize(device)
        start = time.perf_counter()
        a @ b
        synchronize(device)
        if i:
            times.append(time.perf_counter() - start)
    return 2 * n ** 3 / statistics.median(times) / 1e12


def throwaway_teacher(setting: Setting, device: torch.device, cache: Path) -> dict:
    """A teacher trained for about ``teacher_seconds`` into the temporary zoo: one epoch
    timed, then as many more as the budget holds."""
    data = load_dataset(setting.dataset, setting.data_root, cache=cache)
    arch = setting.pair.split("-")[0]
    recipe = dataclasses.replace(TrainRecipe.for_dataset(setting.dataset), epochs=1)
    start = time.perf_counter()
    train_teacher(data, arch, device, recipe, cache, resumable=False)
    first = time.perf_counter() - start
    epochs = max(1, int(setting.teacher_seconds / max(first, 1e-6)))
    if epochs > 1:
        recipe = dataclasses.replace(recipe, epochs=epochs)
        _, meta = train_teacher(data, arch, device, recipe, cache, resumable=False)
    else:
        meta = teacher_metadata(data.name, arch, cache) or {}
    return {"arch": arch, "epochs": epochs, "top1": meta.get("top1"), "seconds": round(time.perf_counter() - start, 1)}


def spec_for(setting: Setting, entry: str, precision: str, out: Path, cache: Path, pipeline: Path,
             epochs: int | None = None, **sets):
    """A slice of ``entry``: its preset with ``epochs`` (default the setting's), no warm-up,
    the inner synthesis steps capped, DDA on the tiny pipeline; ``sets`` are run fields."""
    epochs = epochs or setting.epochs
    changes = {"precision": precision, "warmup_epochs": 0, "eval_every": epochs, **sets}
    if entry.split(":")[0] == "dda":
        changes.update({"dda.augment": "diffusion", "dda.model": str(pipeline), "dda.diffusion_steps": 2})
    (spec,) = plan_runs([entry], dataset=setting.dataset, pair=setting.pair, epochs=epochs, sets=changes, out=out,
                        data_root=setting.data_root, cache=str(cache), train_missing_teacher=False)
    steps = getattr(spec.method_config, "steps", None)
    if steps is not None and steps > setting.max_synth_steps:
        spec = dataclasses.replace(spec, method_config=dataclasses.replace(spec.method_config,
                                                                           steps=setting.max_synth_steps))
    return spec


def slice_row(spec, peak: float | None) -> dict:
    """One slice: run it, count its host reads, and read its rates from the run store."""
    with syncs.counting() as reads:
        summary = harness.run(spec)
    rundir = harness.run_dir(spec)
    epochs = [r for r in rundir.read_metrics() if r.get("event") == "epoch"]
    last, before = epochs[-1], (epochs[-2] if len(epochs) > 1 else {})
    per = {p: last.get(f"seconds_{p}", 0.0) - before.get(f"seconds_{p}", 0.0) for p in ("synthesis", "distillation")}
    costs, steps = summary.costs, summary.steps_per_epoch
    kd_flops = spec.run.batch_size * steps * (costs.get("teacher_flops_per_image", 0)
                                              + 3 * costs.get("student_flops_per_image", 0))
    tflops = kd_flops / max(per["distillation"], 1e-9) / 1e12
    synth_steps = getattr(spec.method_config, "steps", None)
    return {
        "method": spec.label, "precision": spec.run.precision, "status": summary.status,
        "synth_steps_per_round": synth_steps,
        "kd_steps_per_s": round(steps / max(per["distillation"], 1e-9), 2),
        "synth_steps_per_s": round(synth_steps / per["synthesis"], 2) if synth_steps and per["synthesis"] else None,
        "syncs_per_kd_step": round(reads.total / max(1, len(epochs) * steps), 2),
        "distill_tflops": round(tflops, 4),
        "share_of_bf16_peak": round(tflops / peak, 4) if peak else None,
        "peak_memory_mb": summary.peak_memory_mb, "peak_reserved_mb": summary.peak_reserved_mb,
        "startup_s": round(summary.seconds.get("startup", 0.0), 2), "top1": summary.final_top1,
    }


def student_of(spec) -> dict:
    ckpt = torch.load(harness.run_dir(spec).file(store.CHECKPOINT), map_location="cpu", weights_only=True)
    return ckpt["trainer"]["student"]


def same_weights(a: dict, b: dict) -> bool:
    return a.keys() == b.keys() and all(torch.equal(a[k], b[k]) for k in a)


def checks(setting: Setting, out: Path, cache: Path, pipeline: Path) -> dict:
    """Determinism, compile on and off, and a kill-and-resume, on the first method."""
    entry = setting.methods[0]
    det = [spec_for(setting, entry, "fp32", out / f"det{i}", cache, pipeline, deterministic=True) for i in (0, 1)]
    for spec in det:
        harness.run(spec)
    compiled = {}
    for on in (False, True):
        spec = spec_for(setting, entry, "fp32", out / "compile", cache, pipeline, compile=on)
        row = slice_row(spec, None)
        env = json.loads(harness.run_dir(spec).file(store.ENVIRONMENT).read_text())
        compiled["on" if on else "off"] = {"kd_steps_per_s": row["kd_steps_per_s"], "startup_s": row["startup_s"],
                                           "compiled": env.get("compiled")}
    epochs = max(2, setting.epochs)
    whole = spec_for(setting, entry, "fp32", out / "whole", cache, pipeline, epochs, deterministic=True)
    cut = spec_for(setting, entry, "fp32", out / "cut", cache, pipeline, epochs, deterministic=True)
    harness.run(whole)
    try:
        harness.run(cut, StopAfter(0))
        stopped = False
    except KeyboardInterrupt:
        stopped = True
    resumed = harness.run(cut)
    return {
        "deterministic_runs_identical": same_weights(student_of(det[0]), student_of(det[1])),
        "compile": compiled,
        "resume": {"stopped_after_epoch_1": stopped, "status": resumed.status,
                   "identical_to_uninterrupted": same_weights(student_of(whole), student_of(cut))},
    }


def environment(device: torch.device) -> dict:
    env = {"device": str(device), "torch": torch.__version__, "python": platform.python_version(),
           "threads": torch.get_num_threads(), "cpu": platform.processor() or platform.machine()}
    if device.type == "cuda":
        env.update(gpu=torch.cuda.get_device_name(device), capability=".".join(map(str, torch.cuda.get_device_capability(device))),
                   cudnn=torch.backends.cudnn.version())
    return env


def markdown(result: dict) -> str:
    lines = [f"device: {result['environment']}", f"setting: {result['setting']}",
             f"teacher: {result['teacher']}", f"bf16 matmul peak: {result['bf16_peak_tflops']} TFLOP/s", "",
             "syncs/KD step: host reads over the run / its KD steps, an upper bound (per-epoch reads included; "
             "tests/test_syncs.py measures the marginal count)", "",
             "| method | precision | KD steps/s | synthesis steps/s | syncs/KD step | distill TFLOP/s | of bf16 peak "
             "| peak MiB | reserved MiB | start-up s |", "|---|---|---:|---:|---:|---:|---:|---:|---:|---:|"]
    for r in result["slices"]:
        lines.append(f"| {r['method']} | {r['precision']} | {r['kd_steps_per_s']} | {r['synth_steps_per_s']} "
                     f"| {r['syncs_per_kd_step']} | {r['distill_tflops']} | {r['share_of_bf16_peak']} "
                     f"| {r['peak_memory_mb']} | {r['peak_reserved_mb']} | {r['startup_s']} |")
    lines += ["", f"checks: {json.dumps(result['checks'])}", f"passed: {result['passed']}"]
    return "\n".join(lines)


def parse(argv: list[str] | None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--small", action="store_true", help="the CPU form: digits, cnn_m-cnn_s, smoke presets")
    p.add_argument("--data-root", default="../shared/data/cifar10-jpg", help="CIFAR-10 (not used with --small)")
    p.add_argument("--device", default="auto", help="auto | cpu | cuda")
    p.add_argument("--epochs", type=int, default=2, help="epochs of each slice (default 2)")
    p.add_argument("--max-synth-steps", type=int, default=200, help="cap on a round's inner synthesis steps")
    p.add_argument("--teacher-seconds", type=float, default=60.0, help="the throw-away teacher's training budget")
    p.add_argument("--out", type=Path, required=True, help="the JSON written")
    return p.parse_args(argv)


def main(argv: list[str] | None = None) -> int:
    args = parse(argv)
    discover_methods()
    device = resolve_device(args.device)
    setting = Setting("digits", "cnn_m-cnn_s", SMALL_METHODS, args.epochs, args.max_synth_steps, 0.0, None) \
        if args.small else Setting("cifar10", "resnet34-resnet18", METHODS, args.epochs, args.max_synth_steps,
                                   args.teacher_seconds, args.data_root)
    with tempfile.TemporaryDirectory(prefix="gpu-check-") as tmp:
        tmp = Path(tmp)
        os.environ["DFKD_BENCH_CACHE"] = str(tmp / "cache")  # a throw-away zoo, never the user's
        pipeline = build_tiny_pipeline(tmp / "tiny-variation", "variation")
        result = {"environment": environment(device), "setting": dataclasses.asdict(setting),
                  "teacher": throwaway_teacher(setting, device, tmp / "cache"),
                  "bf16_peak_tflops": bf16_peak_tflops(device, 1024 if args.small else 8192)}
        peak = result["bf16_peak_tflops"]
        result["slices"] = [slice_row(spec_for(setting, m, p, tmp / "runs", tmp / "cache", pipeline, device=device.type),
                                      peak) for p in precisions(device) for m in setting.methods]
        result["checks"] = checks(setting, tmp / "checks", tmp / "cache", pipeline)
    c = result["checks"]
    result["passed"] = bool(c["deterministic_runs_identical"] and c["resume"]["identical_to_uninterrupted"]
                            and c["resume"]["stopped_after_epoch_1"]
                            and all(r["status"] == "completed" for r in result["slices"]))
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(result, indent=2) + "\n")
    print(markdown(result))
    return 0 if result["passed"] else 1


if __name__ == "__main__":
    sys.exit(main())
