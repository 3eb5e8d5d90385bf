"""``dfkd-bench sweep``: a grid of runs (methods x data sets x pairs x data scales x
seeds) on local worker processes or on Slurm through submitit.

A sweep writes nothing of its own: every cell is an ordinary run directory (the same
name ``dfkd-bench run`` gives it), so the run store is the sweep's state. A completed
cell is skipped, an interrupted one resumes from its last epoch, a failed one waits for
``--retry-failed``. Two writers never share a cell: the run's lock (``RunDir.lock``)
turns the second away, and the sweep comes back to that cell after the others. The
kernel drops the lock of a killed process, so its cell simply resumes.

A grid file (YAML)::

    datasets: [cifar10]
    pairs: [resnet34-resnet18, vgg11-resnet18]
    methods:                       # method, method:preset, or a mapping with changes
      - ssdkd
      - {method: fast, preset: fast2, pairs: [vgg11-resnet18], set: {adv: 1.0}}
    seeds: [0, 1, 2]
    data_scales: [5000]            # optional; a method's own default without it
    set: {eval_every: 10}          # changes for every run (``--set``)
    epochs: 200                    # optional, as ``--epochs``
    device: cuda                   # optional
    out: results/table1
    slurm: {partition: gpu, timeout_min: 600, gpus_per_node: 1, cpus_per_task: 8, mem_gb: 32,
            array_parallelism: 16}
"""
from __future__ import annotations

import multiprocessing
import os
import queue
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable

import yaml

from . import harness, plan
from .errors import RunLocked, UserError
from .pairs import DEFAULT_DATASET
from .registry import load_plugin

GRID_KEYS = {"datasets", "dataset", "pairs", "pair", "methods", "seeds", "data_scales", "data_scale", "set",
             "epochs", "device", "preset", "out", "data_root", "cache", "slurm"}
SLURM_KEYS = {"partition", "timeout_min", "gpus_per_node", "cpus_per_task", "mem_gb", "array_parallelism",
              "account", "qos", "constraint"}
PENDING, DONE, RUNNING, FAILED, INTERRUPTED, LOCKED = "pending", "completed", "running", "failed", "interrupted", \
    "locked"


@dataclass
class Grid:
    methods: list[Any]
    datasets: list[str] = field(default_factory=lambda: [DEFAULT_DATASET])
    pairs: list[str | None] = field(default_factory=lambda: [None])
    seeds: list[int] = field(default_factory=lambda: [0])
    data_scales: list[int] | None = None
    sets: dict[str, Any] = field(default_factory=dict)
    epochs: int | None = None
    device: str | None = None
    preset: str | None = None
    out: str = "results"
    data_root: str | None = None
    cache: str | None = None
    slurm: dict[str, Any] = field(default_factory=dict)


def _as_list(value, key: str) -> list:
    if value is None:
        return []
    if isinstance(value, (list, tuple)):
        return list(value)
    if isinstance(value, (str, int)):
        return [value]
    raise UserError(f"grid: {key} must be a value or a list, got {type(value).__name__}")


def load_grid(path: str | Path) -> Grid:
    """A grid from a YAML file; unknown or malformed keys are one-line errors."""
    path = Path(path)
    try:
        data = yaml.safe_load(path.read_text())
    except OSError as exc:
        raise UserError(f"grid file {path} cannot be read ({exc.strerror or exc})") from None
    except yaml.YAMLError as exc:
        raise UserError(f"grid file {path} is not valid YAML ({str(exc).splitlines()[0]})") from None
    if not isinstance(data, dict):
        raise UserError(f"grid file {path} must be a mapping of keys (methods, pairs, seeds, ...)")
    unknown = sorted(set(data) - GRID_KEYS)
    if unknown:
        raise UserError(f"grid file {path}: unknown key {unknown[0]!r}; known: {', '.join(sorted(GRID_KEYS))}")
    methods = _as_list(data.get("methods"), "methods")
    if not methods:
        raise UserError(f"grid file {path} names no methods; add e.g. `methods: [ssdkd, fast2]`")
    slurm = data.get("slurm") or {}
    if not isinstance(slurm, dict) or set(slurm) - SLURM_KEYS:
        bad = sorted(set(slurm) - SLURM_KEYS) if isinstance(slurm, dict) else ["(not a mapping)"]
        raise UserError(f"grid file {path}: slurm key {bad[0]!r} unknown; known: {', '.join(sorted(SLURM_KEYS))}")
    sets = data.get("set") or {}
    if not isinstance(sets, dict):
        raise UserError(f"grid file {path}: set must be a mapping of field: value")
    scales = _as_list(data.get("data_scales", data.get("data_scale")), "data_scales") or None
    return Grid(methods=methods, datasets=[str(d) for d in _as_list(data.get("datasets", data.get("dataset")),
                                                                     "datasets")] or [DEFAULT_DATASET],
                pairs=[str(p) for p in _as_list(data.get("pairs", data.get("pair")), "pairs")] or [None],
                seeds=[int(s) for s in _as_list(data.get("seeds"), "seeds")] or [0], data_scales=scales, sets=sets,
                epochs=data.get("epochs"), device=data.get("device"), preset=data.get("preset"),
                out=str(data.get("out", "results")), data_root=data.get("data_root"), cache=data.get("cache"),
                slurm=slurm)


def _method_entry(entry: Any) -> tuple[str, dict[str, Any], list[str] | None]:
    """A grid's method entry as (``method[:preset]``, its own changes, the pairs it is
    limited to or None). Per-pair settings (Fast's adv and oh) are entries with ``pairs``."""
    if isinstance(entry, str):
        return entry, {}, None
    if isinstance(entry, dict) and "method" in entry and set(entry) <= {"method", "preset", "set", "pairs"}:
        name = entry["method"] + (f":{entry['preset']}" if entry.get("preset") else "")
        pairs = _as_list(entry.get("pairs"), "pairs") or None
        return name, dict(entry.get("set") or {}), pairs
    raise UserError(f"grid: method entry {entry!r} must be a name or a mapping with method, preset, set and pairs")


def expand(grid: Grid, force: bool = False) -> list[plan.RunSpec]:
    """Every cell of the grid as a run spec, through the planning API (one validated
    spec per data set, pair, method, data scale and seed; nothing is written)."""
    specs: list[plan.RunSpec] = []
    for dataset in grid.datasets:
        for pair in grid.pairs:
            for entry in grid.methods:
                name, changes, only = _method_entry(entry)
                if only is not None and pair not in only:
                    continue
                specs += plan.plan_runs([name], dataset=dataset, pair=pair, preset=grid.preset, seeds=grid.seeds,
                                        epochs=grid.epochs, data_scale=grid.data_scales, device=grid.device,
                                        sets={**grid.sets, **changes}, out=grid.out, data_root=grid.data_root,
                                        cache=grid.cache, force=force)
    return specs


@dataclass
class CellStatus:
    spec: plan.RunSpec
    status: str  # pending | completed | running | failed | interrupted
    epochs_done: int = 0
    reason: str = ""


def cell_status(spec: plan.RunSpec) -> CellStatus:
    """A cell's state from its run directory alone. A summary that says running while
    no process holds the run's lock was left by a process that died: interrupted."""
    rundir = harness.run_dir(spec)
    summary = rundir.summary() if rundir.path.exists() else None
    if summary is None:
        return CellStatus(spec, RUNNING if rundir.path.exists() and rundir.is_locked() else PENDING)
    status = summary.status
    if status == RUNNING and not rundir.is_locked():
        status = INTERRUPTED
    return CellStatus(spec, status, summary.epochs_done, summary.reason)


def to_run(statuses: list[CellStatus], retry_failed: bool) -> list[plan.RunSpec]:
    """The cells a sweep starts: all but the completed (and the failed, unless retried)."""
    return [c.spec for c in statuses if c.status not in (DONE, *(() if retry_failed else (FAILED,)))]


def prepare_teachers(specs: list[plan.RunSpec], train_missing: bool, announce: Callable[[str], None]) -> None:
    """Every teacher the grid needs is in the zoo before a worker starts: two workers
    must not train (and write) the same missing teacher at once. ``train_missing``
    False (Slurm: no training on the submitting node) turns a missing one into an error
    naming the command that trains it."""
    from .config import resolve_device
    from .data import load_dataset
    from .pairs import resolve_pair
    from .teachers import get_or_train_teacher

    seen = set()
    for spec in specs:
        teacher = resolve_pair(spec.pair, spec.dataset).teacher
        key = (spec.dataset, spec.data_root, spec.cache, teacher)
        if key in seen:
            continue
        seen.add(key)
        data = load_dataset(spec.dataset, spec.data_root, spec.download, cache=spec.cache)
        get_or_train_teacher(data, teacher, resolve_device(spec.run.device), spec.cache,
                             train_missing and spec.train_missing_teacher, announce)


# --- one cell ---------------------------------------------------------------------------

def run_cell(spec: plan.RunSpec) -> str:
    """Run (or resume) one cell in this process; returns its final status, or "locked"
    when another process writes it."""
    try:
        return harness.run(spec).status
    except RunLocked:
        return LOCKED


def _worker(index: int, threads: int, gpu: str | None, plugins: list[str], tasks, results) -> None:
    """A local worker process: its share of CPU threads (or one GPU) and the parent's
    plugins, then cells from ``tasks`` until the ``None`` sentinel. SIGTERM leaves its
    cell interrupted."""
    if gpu is not None:
        os.environ["CUDA_VISIBLE_DEVICES"] = gpu
    import torch

    for module in plugins:
        load_plugin(module)

    torch.set_num_threads(threads)
    from .cli import sigterm_as_interrupt

    with sigterm_as_interrupt():
        while (task := tasks.get()) is not None:
            i, spec = task
            results.put(("start", i, index))
            try:
                status = run_cell(spec)
            except KeyboardInterrupt:
                return
            except Exception as exc:  # noqa: BLE001  (recorded in the run's summary; the sweep goes on)
                status = f"{FAILED}: {type(exc).__name__}: {exc}".splitlines()[0][:300]
            results.put(("done", i, index, status))


def _gpus() -> list[str]:
    import torch

    return [str(i) for i in range(torch.cuda.device_count())] if torch.cuda.is_available() else []


# Measured (benchmarks/threads.py, issue 16) on 2 cores: 2 runs of one thread and one run of
# two threads have the same throughput within noise (1.18x, 0.97x, 0.83x in three runs). One
# thread a run wins the tie: a run's numbers depend on its thread count, and one thread keeps
# them the same on a machine of any size. See default_workers.
MIN_WORKER_MEMORY_GB = 3  # a CPU-pair run's peak is about 1.5-3 GB (summary.json peak_memory_mb)


def default_workers() -> int:
    """``--workers auto``: one worker per GPU where there are GPUs; else one per CPU
    core (each one thread), as many as the machine's memory holds at
    ``MIN_WORKER_MEMORY_GB`` each."""
    gpus = _gpus()
    if gpus:
        return len(gpus)
    cores = os.cpu_count() or 1
    try:
        memory_gb = os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES") / 2**30
    except (ValueError, OSError, AttributeError):
        return cores
    return max(1, min(cores, int(memory_gb // MIN_WORKER_MEMORY_GB)))


def run_local(specs: list[plan.RunSpec], workers: int, on_result: Callable[[int, str], None] = lambda i, s: None,
              plugins: list[str] = (), lock_retry_s: float = 2.0, lock_wait_s: float = 60.0) -> dict[int, str]:
    """Run ``specs`` on ``workers`` processes, each importing ``plugins`` (the
    ``--plugin`` modules); returns each spec's final status by index.
    A locked cell goes back to the end of the queue and is tried again after
    ``lock_retry_s``, for at most ``lock_wait_s`` after the last other cell finished."""
    if workers < 1:
        raise UserError(f"--workers {workers}: expected a positive integer")
    workers = min(workers, len(specs)) or 1
    gpus = _gpus()
    threads = max(1, (os.cpu_count() or 1) // workers)
    ctx = multiprocessing.get_context("spawn")
    tasks, results = ctx.Queue(), ctx.Queue()
    procs = [ctx.Process(target=_worker, args=(w, threads, gpus[w % len(gpus)] if gpus else None,
                                               list(plugins), tasks, results), daemon=True)
             for w in range(workers)]
    for p in procs:
        p.start()
    final: dict[int, str] = {}
    for i, spec in enumerate(specs):
        tasks.put((i, spec))
    outstanding, deferred = len(specs), []  # deferred: (when, index) of locked cells
    current: dict[int, int] = {}  # worker -> the cell it is running
    last_progress = time.monotonic()
    try:
        while outstanding or deferred:
            now = time.monotonic()
            for when, i in [d for d in deferred if d[0] <= now]:
                deferred.remove((when, i))
                tasks.put((i, specs[i]))
                outstanding += 1
            if not outstanding:
                time.sleep(max(0.0, min(when for when, _ in deferred) - now))
                continue
            try:
                kind, i, w, *rest = results.get(timeout=0.5)
            except queue.Empty:
                for w, p in enumerate(procs):
                    if not p.is_alive() and w in current:  # killed mid-cell: the cell stays resumable
                        i = current.pop(w)
                        outstanding -= 1
                        final[i] = f"{INTERRUPTED}: worker {w} died (exit code {p.exitcode})"
                        on_result(i, final[i])
                if outstanding and not any(p.is_alive() for p in procs):
                    raise RuntimeError("every sweep worker died; see the cells' summaries") from None
                continue
            if kind == "start":
                current[w] = i
                continue
            current.pop(w, None)
            status = rest[0]
            outstanding -= 1
            if status == LOCKED and time.monotonic() - last_progress < lock_wait_s:
                deferred.append((time.monotonic() + lock_retry_s, i))
                continue
            if status != LOCKED:
                last_progress = time.monotonic()
            final[i] = status
            on_result(i, status)
    finally:
        for _ in procs:
            tasks.put(None)
        for p in procs:
            p.join(timeout=30)
            if p.is_alive():
                p.terminate()
    return final


# --- Slurm through submitit -------------------------------------------------------------

def _submitit():
    try:
        import submitit
    except ImportError:
        raise UserError('--executor slurm needs submitit: pip install -e ".[slurm]"') from None
    return submitit


def make_cell_job(plugins: list[str] = ()):
    """The checkpointable submitit callable (a class made here so the extra stays optional):
    on preemption or timeout submitit requeues it, and the run resumes from its store.
    The job imports ``plugins`` (the ``--plugin`` modules) first."""
    submitit = _submitit()

    class CellJob(submitit.helpers.Checkpointable):
        def __init__(self):
            self.plugins = list(plugins)

        def __call__(self, spec: plan.RunSpec) -> str:
            for module in self.plugins:
                load_plugin(module)
            deadline = time.monotonic() + 600
            while (status := run_cell(spec)) == LOCKED and time.monotonic() < deadline:
                time.sleep(10)
            return status

    return CellJob()


def submit(specs: list[plan.RunSpec], grid: Grid, folder: Path, cluster: str | None = None,
           plugins: list[str] = ()):
    """One submitit job array over ``specs``; returns the jobs. ``cluster="local"`` is
    submitit's local executor (the same path, on this machine, for testing)."""
    submitit = _submitit()
    executor = submitit.AutoExecutor(folder=str(folder), cluster=cluster)
    s = grid.slurm
    params: dict[str, Any] = {"timeout_min": int(s.get("timeout_min", 60)), "name": "dfkd-bench"}
    if cluster != "local":
        params.update({f"slurm_{k}": v for k, v in (("partition", s.get("partition")),
                                                     ("array_parallelism", s.get("array_parallelism")),
                                                     ("account", s.get("account")), ("qos", s.get("qos")),
                                                     ("constraint", s.get("constraint"))) if v is not None})
        for key in ("gpus_per_node", "cpus_per_task", "mem_gb"):
            if s.get(key) is not None:
                params[key] = s[key]
    executor.update_parameters(**params)
    job = make_cell_job(plugins)
    return executor.map_array(job, specs)
