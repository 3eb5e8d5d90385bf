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
      - {method: kd, preset: paper, seeds: [0, 1]}   # only at these of the sweep's seeds
    seeds: [0, 1, 2]
    data_scales: [5000]            # optional; a method's own default without it
    set: {eval_every: 10}          # changes for every run (``--set``)
    epochs: 200                    # optional, as ``--epochs``
    device: cuda                   # optional: the device of the machines that run the cells
    out: results/table1
    slurm: {partition: gpu, timeout_min: 600, gpus_per_node: 1, cpus_per_task: 8, mem_gb: 32,
            array_parallelism: 16, max_num_timeout: 100}

Every value goes through the command line's parsers (``dfkd_bench.options``), so
``seeds: [0.5]`` fails as ``--seeds 0.5`` does.

Planning and checking need no GPU: a grid is planned for the device it names, and its
runs are named by what the machine that runs them resolves (device, precision), so a
login node's ``--status`` and a re-submission find what the compute nodes wrote
(``harness.candidate_run_dirs``). A resumed cell computes with the thread count it
started with (``harness.threads_of``).
"""
from __future__ import annotations

import multiprocessing
import os
import queue
import shutil
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable

import yaml

from . import harness, options, plan
from .errors import RunLocked, UserError
from .pairs import DEFAULT_DATASET, DEFAULT_PAIR
from .registry import load_plugin
from .signals import sigterm_as_interrupt, terminate_with_parent

GRID_KEYS = {"datasets", "dataset", "pairs", "pair", "methods", "seeds", "data_scales", "data_scale", "set",
             "epochs", "device", "preset", "out", "data_root", "cache", "slurm",
             "claims"}  # claims: the study's rules, read by `report --claims`, not by the sweep
SLURM_INT_KEYS = {"timeout_min", "gpus_per_node", "cpus_per_task", "mem_gb", "array_parallelism", "max_num_timeout"}
SLURM_TEXT_KEYS = {"partition", "account", "qos", "constraint"}
SLURM_KEYS = SLURM_INT_KEYS | SLURM_TEXT_KEYS
# Time limits a cell may hit and still be requeued (submitit's own default is 3, after
# which it raises mid-epoch): a run checkpoints every epoch, so each requeue goes on from
# where the last one stopped. A grid's ``slurm: {max_num_timeout: N}`` changes it.
MAX_NUM_TIMEOUT = 100
PENDING, DONE, RUNNING, FAILED, INTERRUPTED, LOCKED = "pending", "completed", "running", "failed", "interrupted", \
    "locked"
# Which of a cell's run directories ``cell_status`` reports when it finds several (one
# per device type and precision a login node cannot tell apart): live work first.
STATUS_RANK = {RUNNING: 0, DONE: 1, INTERRUPTED: 2, FAILED: 3, PENDING: 4}


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


def load_grid(path: str | Path) -> Grid:
    """A grid from a YAML file; unknown or malformed keys and values are one-line errors,
    each value checked by the parser of the command-line option of the same name."""
    path = Path(path)
    try:
        data = yaml.safe_load(path.read_text())
    except OSError as exc:
        raise UserError(f"grid file {path} cannot be read ({exc.strerror or exc})") from None
    except yaml.YAMLError as exc:
        raise UserError(f"grid file {path} is not valid YAML ({str(exc).splitlines()[0]})") from None
    if not isinstance(data, dict):
        raise UserError(f"grid file {path} must be a mapping of keys (methods, pairs, seeds, ...)")
    unknown = sorted(set(data) - GRID_KEYS, key=str)
    if unknown:
        raise UserError(f"grid file {path}: unknown key {unknown[0]!r}; known: {', '.join(sorted(GRID_KEYS))}")
    where = f"grid file {path}:"
    methods = options.items(data.get("methods"))
    if not methods:
        raise UserError(f"grid file {path} names no methods; add e.g. `methods: [ssdkd, fast2]`")
    sets = data.get("set") or {}
    if not isinstance(sets, dict):
        raise UserError(f"{where} set must be a mapping of field: value")
    if "claims" in data:  # a broken claims section is said before the sweep, not after it
        from .claims import parse_claims

        parse_claims(data["claims"], f"claims file {path}")
    value = lambda key, parse: None if data.get(key) is None else parse(data[key], f"{where} {key}")  # noqa: E731
    return Grid(methods=methods,
                datasets=options.names(data.get("datasets", data.get("dataset")), f"{where} datasets")
                or [DEFAULT_DATASET],
                pairs=options.names(data.get("pairs", data.get("pair")), f"{where} pairs") or [None],
                seeds=options.seeds(data.get("seeds"), f"{where} seeds") or [0],
                data_scales=options.scales(data.get("data_scales", data.get("data_scale")), f"{where} data_scales")
                or None,
                sets=sets, epochs=value("epochs", options.positive_int), device=value("device", options.device),
                preset=value("preset", options.text), out=value("out", options.text) or "results",
                data_root=value("data_root", options.text), cache=value("cache", options.text),
                slurm=slurm_settings(data.get("slurm"), where))


def slurm_settings(value: Any, where: str) -> dict[str, Any]:
    """A grid's ``slurm`` mapping: known keys, counts as positive integers, names as text."""
    slurm = value or {}
    if not isinstance(slurm, dict) or set(slurm) - SLURM_KEYS:
        bad = sorted(set(slurm) - SLURM_KEYS, key=str) if isinstance(slurm, dict) else ["(not a mapping)"]
        raise UserError(f"{where} slurm key {bad[0]!r} unknown; known: {', '.join(sorted(SLURM_KEYS))}")
    return {key: (options.positive_int if key in SLURM_INT_KEYS else options.text)(v, f"{where} slurm.{key}")
            for key, v in slurm.items()}


def _method_entry(entry: Any) -> tuple[str, dict[str, Any], list[str] | None, list[int] | None]:
    """A grid's method entry as (``method[:preset]``, its own changes, the pairs it is
    limited to or None, the seeds it is limited to or None). Per-pair settings (Fast's adv
    and oh) are entries with ``pairs``; an arm a study runs at fewer seeds than the others
    (its claims decided) is an entry with ``seeds``."""
    if isinstance(entry, str):
        return entry, {}, None, None
    if isinstance(entry, dict) and "method" in entry and set(entry) <= {"method", "preset", "set", "pairs", "seeds"}:
        name = entry["method"] + (f":{entry['preset']}" if entry.get("preset") else "")
        pairs = options.names(entry.get("pairs"), "grid: method entry pairs") or None
        seeds = None if entry.get("seeds") is None else options.seeds(entry["seeds"], "grid: method entry seeds")
        return name, dict(entry.get("set") or {}), pairs, seeds
    raise UserError(f"grid: method entry {entry!r} must be a name or a mapping with method, preset, set, pairs "
                    "and seeds")


def expand(grid: Grid, force: bool = False) -> list[plan.RunSpec]:
    """Every cell of the grid as a run spec, through the planning API (one validated
    spec per data set, pair, method, data scale and seed; nothing is written). The
    grid's device need not exist here: the machines that run the cells resolve it."""
    specs: list[plan.RunSpec] = []
    for dataset in grid.datasets:
        for pair in grid.pairs:
            for entry in grid.methods:
                name, changes, only, at_seeds = _method_entry(entry)
                seeds = [s for s in grid.seeds if at_seeds is None or s in at_seeds]
                if (only is not None and pair not in only) or not seeds:
                    continue
                specs += plan.plan_runs([name], dataset=dataset, pair=pair, preset=grid.preset, seeds=seeds,
                                        epochs=grid.epochs, data_scale=grid.data_scales, device=grid.device,
                                        sets={**grid.sets, **changes}, out=grid.out, data_root=grid.data_root,
                                        cache=grid.cache, force=force, device_here=False)
    return specs


def runs_here(specs: list[plan.RunSpec], executor: str) -> bool:
    """Whether the cells run on this machine: not on Slurm, and every cell's device is
    here (a login node without the grid's GPU still finds what compute nodes wrote)."""
    from .config import resolve_device

    if executor == "slurm":
        return False
    try:
        for device in {s.run.device for s in specs}:
            resolve_device(device)
    except UserError:
        return False
    return True


def check_target(grid: Grid, specs: list[plan.RunSpec], executor: str) -> None:
    """Before anything starts: ``slurm`` means Slurm (submitit would otherwise fall back
    to running every cell here at once); a local executor needs the grid's device
    here; a Slurm grid needs a pair its compute nodes cannot resolve differently."""
    if executor == "slurm":
        missing = [tool for tool in ("sbatch", "srun") if shutil.which(tool) is None]
        if missing:
            raise UserError(f"--executor slurm: no Slurm here ({' and '.join(missing)} not found on PATH); run "
                            "where Slurm is, or use --executor local (worker processes here) or submitit-local "
                            "(submitit's path, on this machine)")
        if grid.device in (None, "auto") and grid.pairs == [None] and \
                any(d.split(":", 1)[0] not in DEFAULT_PAIR for d in grid.datasets):
            raise UserError("--executor slurm with device auto and no pairs: the default pair depends on the "
                            "compute node's device, which this node cannot know; name `pairs:` (or --pair) or "
                            "`device: cuda` (or cpu) in the grid")
        return
    from .config import resolve_device

    for device in sorted({s.run.device for s in specs}):
        resolve_device(device)  # a UserError naming the device when this machine has none


@dataclass
class CellStatus:
    spec: plan.RunSpec
    status: str  # pending | completed | running | failed | interrupted
    epochs_done: int = 0
    reason: str = ""
    ran_as: str = ""  # "cpu bf16": the device type and precision its machine resolved


def cell_status(spec: plan.RunSpec, here: bool = True) -> CellStatus:
    """A cell's state from its run directory alone. A summary that says running while
    no process holds the run's lock was left by a process that died: interrupted.
    ``here``: the cell runs on this machine, so only the directory this machine's
    device and precision name counts; otherwise (Slurm, a login node) every directory
    the cell can have is looked at and the most advanced is reported."""
    rundirs = [harness.run_dir(spec, create=False)] if here else harness.candidate_run_dirs(spec)
    found = [_dir_status(spec, rundir) for rundir in rundirs if rundir.path.exists()]
    return min(found, key=lambda c: STATUS_RANK.get(c.status, len(STATUS_RANK)), default=CellStatus(spec, PENDING))


def _dir_status(spec: plan.RunSpec, rundir) -> CellStatus:
    summary = rundir.summary()
    if summary is None:
        return CellStatus(spec, RUNNING if rundir.is_locked() else PENDING)
    status = summary.status
    if status == RUNNING and not rundir.is_locked():
        status = INTERRUPTED
    return CellStatus(spec, status, summary.epochs_done, summary.reason, f"{summary.device} {summary.precision}")


def to_run(statuses: list[CellStatus], retry_failed: bool) -> list[plan.RunSpec]:
    """The cells a sweep starts: all but the completed (and the failed, unless retried)."""
    return [c.spec for c in statuses if c.status not in (DONE, *(() if retry_failed else (FAILED,)))]


def prepare_teachers(specs: list[plan.RunSpec], train_missing: bool, announce: Callable[[str], None],
                     progress_for: Callable | None = None) -> None:
    """Every teacher the grid needs is in the zoo before a worker starts: two workers
    must not train (and write) the same missing teacher at once. ``train_missing``
    False (Slurm: no training on the submitting node) turns a missing one into an error
    naming the command that trains it. A GPU-scale pair that will train or run on this
    machine's CPU is warned about first, with its measured cost; a missing teacher's
    training reports to ``progress_for`` (``RunObserver.teacher_progress``)."""
    from .config import resolve_device
    from .data import load_dataset
    from .pairs import resolve_pair
    from .teachers import get_or_train_teacher

    import torch

    seen = set()
    for spec in specs:
        teacher = resolve_pair(spec.pair, spec.dataset).teacher
        key = (spec.dataset, spec.data_root, spec.cache, teacher)
        if key in seen:
            continue
        seen.add(key)
        data = load_dataset(spec.dataset, spec.data_root, spec.download, cache=spec.cache)
        # Only checked when not trained here (a login node may have no GPU): the CPU reads the file.
        device = resolve_device(spec.run.device) if train_missing else torch.device("cpu")
        if train_missing:
            harness.warn_gpu_scale_on_cpu(spec, data, device, announce)
        get_or_train_teacher(data, teacher, device, spec.cache, train_missing and spec.train_missing_teacher,
                             announce, progress_for)


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
    plugins, then cells from ``tasks`` until the ``None`` sentinel. SIGTERM, or the
    sweep's process dying (``kill -9`` included), leaves its cell interrupted and ends
    it: a worker never outlives its sweep."""
    if gpu is not None:
        os.environ["CUDA_VISIBLE_DEVICES"] = gpu
    import torch

    for module in plugins:
        load_plugin(module)

    torch.set_num_threads(threads)
    with sigterm_as_interrupt():
        terminate_with_parent()
        try:
            while (task := tasks.get()) is not None:
                i, spec = task
                results.put(("start", i, index))
                try:
                    status = run_cell(spec)
                except Exception as exc:  # noqa: BLE001  (recorded in the run's summary; the sweep goes on)
                    status = f"{FAILED}: {type(exc).__name__}: {exc}".splitlines()[0][:300]
                results.put(("done", i, index, status))
        except KeyboardInterrupt:
            results.cancel_join_thread()  # the reader may be gone: exit without flushing to it


def _gpus() -> list[str]:
    """The GPUs workers are given, as ``CUDA_VISIBLE_DEVICES`` entries: the parent's own
    list where it has one (``2,3``, GPU or MIG UUIDs on a shared box or under Slurm),
    since a worker's ``0`` would otherwise be the machine's first GPU, not the parent's."""
    import torch

    if not torch.cuda.is_available():
        return []
    count = torch.cuda.device_count()
    visible = options.items(os.environ.get("CUDA_VISIBLE_DEVICES", ""))
    return [str(v) for v in visible[:count]] if visible else [str(i) for i in range(count)]


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


def worker_layout(workers: int, cells: int) -> tuple[int, int, list[str | None]]:
    """(processes, CPU threads each, the GPU of each) for ``workers`` asked for and
    ``cells`` to run. The threads follow the workers asked for, not the cells left: a
    sweep resumed with one cell to go gives it the thread count the others had, so the
    cell's result does not depend on when the sweep was interrupted."""
    threads = max(1, (os.cpu_count() or 1) // workers)
    processes = min(workers, cells) or 1
    gpus = _gpus()
    return processes, threads, [gpus[w % len(gpus)] if gpus else None for w in range(processes)]


def run_local(specs: list[plan.RunSpec], workers: int, on_result: Callable[[int, str], None] = lambda i, s: None,
              plugins: list[str] = (), lock_retry_s: float = 2.0, lock_wait_s: float = 60.0) -> dict[int, str]:
    """Run ``specs`` on ``workers`` processes, each importing ``plugins`` (the
    ``--plugin`` modules); returns each spec's final status by index (a cell whose
    worker died: ``interrupted: worker W died ...``).
    A locked cell goes back to the end of the queue and is tried again after
    ``lock_retry_s``, for at most ``lock_wait_s`` after the last other cell finished."""
    if workers < 1:
        raise UserError(f"--workers {workers}: expected a positive integer")
    processes, threads, gpus = worker_layout(workers, len(specs))
    ctx = multiprocessing.get_context("spawn")
    tasks, results = ctx.Queue(), ctx.Queue()
    procs = [ctx.Process(target=_worker, args=(w, threads, gpus[w], list(plugins), tasks, results), daemon=True)
             for w in range(processes)]
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


def dead_workers(outcome: dict[int, str]) -> list[str]:
    """``worker W died (exit code C)`` for each cell a dying worker left interrupted."""
    return [o.split(": ", 1)[1] for o in outcome.values() if o.startswith(f"{INTERRUPTED}: worker ")]


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


def submit(specs: list[plan.RunSpec], grid: Grid, folder: Path, cluster: str = "slurm",
           plugins: list[str] = ()):
    """One submitit job array over ``specs``; returns the jobs. ``cluster`` is ``slurm``
    (never submitit's automatic choice, which falls back to running here) or ``local``,
    submitit's local executor (the same path, on this machine, for testing)."""
    if cluster not in ("slurm", "local"):
        raise ValueError(f"cluster {cluster!r}; expected slurm or local")
    submitit = _submitit()
    s = grid.slurm
    executor = submitit.AutoExecutor(folder=str(folder), cluster=cluster,
                                     **{f"{cluster}_max_num_timeout": int(s.get("max_num_timeout", MAX_NUM_TIMEOUT))})
    params: dict[str, Any] = {"timeout_min": int(s.get("timeout_min", 60)), "name": "dfkd-bench"}
    if cluster == "slurm":
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
