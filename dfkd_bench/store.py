"""Run directories: resolved config, environment, metrics.jsonl, summary.json, a
resumable checkpoint and the pool's shards. Every write goes to a temporary file that is
then renamed over the target, so a crash mid-write leaves the previous version intact."""
from __future__ import annotations

import datetime as dt
import errno
import hashlib
import json
import os
import platform
import shutil
import subprocess
import tempfile
import time
from contextlib import contextmanager
from pathlib import Path
from typing import Any, Callable

try:
    import fcntl
except ImportError:  # not POSIX: no run lock (see RunDir.lock)
    fcntl = None

import torch

from . import backends
from .errors import NoSpaceLeft, RunLocked, UserError
from .summary import RunSummary

SUMMARY = "summary.json"
CONFIG = "config.json"
ENVIRONMENT = "environment.json"
METRICS = "metrics.jsonl"
CHECKPOINT = "checkpoint.pt"
PREVIOUS_CHECKPOINT = "checkpoint.prev.pt"  # the one before, kept in case the newest cannot be read
POOL_DIR = "pool"
LOCK = ".lock"


def _current_umask() -> int:
    mask = os.umask(0)
    os.umask(mask)
    return mask


_UMASK = _current_umask()


# A full disk (or quota): the OSError's errno, or the text of torch's RuntimeError when
# ``torch.save`` writes through its own C++ writer ("[enforce fail at inline_container.cc]
# unexpected pos 832 vs 726", "file write failed").
FULL_ERRNOS = {errno.ENOSPC, errno.EDQUOT}
TORCH_WRITE_FAILURES = ("unexpected pos", "file write failed", "PytorchStreamWriter failed")
LOW_SPACE = 1 << 20  # bytes free below which a failed torch write is put down to a full disk


def free_bytes(folder: Path) -> int | None:
    try:
        return shutil.disk_usage(folder).free
    except OSError:
        return None


def _disk_full(exc: BaseException, free: int | None) -> bool:
    """Whether ``exc``, raised by a write where ``free`` bytes were left (read before the
    partial file goes), says the disk is full."""
    if isinstance(exc, OSError):
        return exc.errno in FULL_ERRNOS
    if isinstance(exc, RuntimeError) and any(m in str(exc) for m in TORCH_WRITE_FAILURES):
        return free is not None and free < LOW_SPACE
    return False


def no_space_left(path: Path, free: int | None) -> NoSpaceLeft:
    there = "" if free is None else f", {free / 2**20:.1f} MiB free there"
    return NoSpaceLeft(f"no space left on {path.parent} (writing {path.name}{there}); free some and run the same "
                       "command again (a run resumes from its last checkpoint)")


def _atomic_replace(path: Path, write, before_replace: Callable[[], None] | None = None) -> None:
    """Call ``write(tmp_path)`` on a temporary file beside ``path``, fsync it, then rename
    it over ``path``; on any failure the temporary file goes and ``path`` is untouched.
    ``before_replace`` runs once the new content is safely on disk. A full disk is
    raised as ``NoSpaceLeft`` naming the folder, whatever the writer reported."""
    path = Path(path)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    os.close(fd)
    try:
        # mkstemp makes the file 0600; give it the mode an ordinary write would (0666
        # less the umask), so results and reports stay readable by others as before.
        os.chmod(tmp, 0o666 & ~_UMASK)
        write(tmp)
        with open(tmp, "rb") as fh:
            os.fsync(fh.fileno())
        if before_replace is not None:
            before_replace()
        os.replace(tmp, path)
    except BaseException as exc:
        free = free_bytes(path.parent)  # before the partial file goes: a full disk still reads full
        full = not isinstance(exc, NoSpaceLeft) and _disk_full(exc, free)
        if os.path.exists(tmp):
            os.unlink(tmp)
        if full:
            raise no_space_left(path, free) from exc
        raise


def atomic_write_bytes(path: Path, data: bytes) -> None:
    _atomic_replace(path, lambda tmp: Path(tmp).write_bytes(data))


def atomic_write_json(path: Path, obj: Any) -> None:
    atomic_write_bytes(path, (json.dumps(obj, indent=2, sort_keys=True) + "\n").encode())


def atomic_torch_save(path: Path, obj: Any) -> None:
    """``torch.save`` through a file object, not a file name: torch names the archive
    inside after the file it is given, and the temporary file's random name would make
    the same object save to different bytes (and a different sha256) every time."""
    def write(tmp):
        with open(tmp, "wb") as fh:
            torch.save(obj, fh)
    _atomic_replace(path, write)


def read_json(path: Path) -> Any:
    with open(path) as fh:
        return json.load(fh)


def _stamp() -> str:
    return dt.datetime.now().strftime("%Y%m%dT%H%M%S%f")


def config_hash(resolved: dict) -> str:
    blob = json.dumps(resolved, sort_keys=True, default=str).encode()
    return hashlib.sha256(blob).hexdigest()[:10]


def ensure_writable_dir(path: Path) -> Path:
    path = Path(path)
    try:
        path.mkdir(parents=True, exist_ok=True)
        probe = tempfile.NamedTemporaryFile(dir=path, prefix=".write-probe-", delete=True)
        probe.close()
    except OSError as exc:
        raise UserError(f"output directory {path} cannot be written ({exc.strerror or exc}); "
                        "pass a writable directory with --out") from None
    return path


def _lock_holder(fd: int) -> str:
    """Who holds the lock on ``fd``, as the holder wrote it. A holder writes itself just after
    it takes the lock, so a lock file created a moment ago can still be empty: wait up to a
    second for the name before saying "another process"."""
    deadline = time.monotonic() + 1.0
    while True:
        holder = os.pread(fd, 200, 0).decode(errors="replace").strip()
        if holder or time.monotonic() > deadline:
            return holder or "another process"
        time.sleep(0.01)


# File systems that refuse ``flock`` (Lustre mounted without ``-o flock``, some NFS set-ups)
# raise one of these; ``DFKD_BENCH_LOCKS=off`` is the documented way to run there anyway.
NO_LOCK_ERRNOS = {errno.ENOSYS, errno.EOPNOTSUPP, errno.ENOLCK}
LOCKS_ENV = "DFKD_BENCH_LOCKS"


def locks_enabled() -> bool:
    """Whether run directories are locked (``$DFKD_BENCH_LOCKS`` is not ``off``)."""
    return fcntl is not None and os.environ.get(LOCKS_ENV, "on").strip().lower() != "off"


def _flock(fd: int, path: Path) -> None:
    """``flock(LOCK_EX | LOCK_NB)`` on ``fd``; a file system without lock support is a
    one-line ``UserError`` naming it and the fallback, never an uncaught ``OSError``."""
    try:
        fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except BlockingIOError:
        raise
    except OSError as exc:
        if exc.errno not in NO_LOCK_ERRNOS:
            raise
        raise UserError(f"the file system of {path.parent} does not support file locks (flock: "
                        f"{errno.errorcode.get(exc.errno, exc.errno)}; e.g. Lustre mounted without -o flock): write "
                        f"results to one that does (--out), or set {LOCKS_ENV}=off to run without the one-writer-"
                        "a-run lock (then never start two commands on one results folder at once)") from None


def check_locks(folder: Path) -> None:
    """That run directories under ``folder`` can be locked, before a sweep starts
    workers that would each fail on it: the ``UserError`` of ``_flock`` if not."""
    if not locks_enabled():
        return
    folder = ensure_writable_dir(folder)
    with tempfile.NamedTemporaryFile(dir=folder, prefix=".lock-probe-") as probe:
        _flock(probe.fileno(), Path(probe.name))


class RunDir:
    """One directory per (resolved config, seed)."""

    def __init__(self, root: Path, name: str):
        self.path = Path(root) / name

    def create(self) -> None:
        self.path.mkdir(parents=True, exist_ok=True)

    def reset(self) -> None:
        """``--force``: remove the previous attempt's checkpoints, metrics and pool shards
        (call it while holding the lock)."""
        for stale in (CHECKPOINT, PREVIOUS_CHECKPOINT, METRICS):
            self.file(stale).unlink(missing_ok=True)
        self.shards().prune(keep=set())

    def file(self, name: str) -> Path:
        return self.path / name

    @contextmanager
    def lock(self):
        """One writer per run directory: an exclusive ``flock`` on ``.lock``, released by
        the kernel when the holder dies (kill -9 included). A second process gets
        ``RunLocked`` naming the holder. Without ``fcntl`` (not POSIX) or with
        ``DFKD_BENCH_LOCKS=off`` there is no lock. A run that never started (its data set
        or teacher missing: nothing but ``.lock`` was written) leaves no folder behind."""
        if not locks_enabled():
            try:
                yield
            finally:
                self._remove_if_unused()
            return
        fd = self._take_lock()
        try:
            # the new holder over the old one, then cut what is left of a longer old one: the
            # file is never empty once a holder has written itself
            holder = (f"process {os.getpid()} on {platform.node()} since "
                      f"{dt.datetime.now().isoformat(timespec='seconds')}").encode()
            os.pwrite(fd, holder, 0)
            os.ftruncate(fd, len(holder))
            yield
        finally:
            self._remove_if_unused()  # while the lock is held: no one starts writing meanwhile
            os.close(fd)  # closing the descriptor releases the lock

    def _take_lock(self) -> int:
        """A descriptor of ``.lock`` holding its ``flock``. A holder whose run never started
        removes the file (``_remove_if_unused``); a lock taken on the removed file guards
        nothing, so it is taken again on the file now at the path."""
        while True:
            self.create()
            try:
                fd = os.open(self.file(LOCK), os.O_RDWR | os.O_CREAT, 0o666 & ~_UMASK)
            except FileNotFoundError:  # the folder went between the two calls
                continue
            try:
                _flock(fd, self.file(LOCK))
            except BlockingIOError:
                holder = _lock_holder(fd)
                os.close(fd)
                raise RunLocked(f"run {self.path.name} is being written by {holder}; skipped it") from None
            except BaseException:  # no lock support here (a UserError) or an interruption
                os.close(fd)
                self._remove_if_unused()
                raise
            if _same_file(fd, self.file(LOCK)):
                return fd
            os.close(fd)

    def _remove_if_unused(self) -> None:
        """Remove this folder when it holds nothing but ``.lock`` (or nothing)."""
        try:
            if {p.name for p in self.path.iterdir()} <= {LOCK}:
                self.file(LOCK).unlink(missing_ok=True)
                self.path.rmdir()
        except OSError:  # written to meanwhile, or gone already: leave it
            pass

    def is_locked(self) -> bool:
        """Whether a live process holds this run's lock now (a probe: takes and drops it).
        A summary that says "running" while nobody holds the lock was left by a process
        that died; its run resumes."""
        if not locks_enabled() or not self.file(LOCK).exists():
            return False
        try:
            fd = os.open(self.file(LOCK), os.O_RDWR)
        except FileNotFoundError:  # removed by a run that never started
            return False
        try:
            _flock(fd, self.file(LOCK))
        except BlockingIOError:
            return True
        finally:
            os.close(fd)
        return False

    def clean_temporary(self) -> list[str]:
        """Remove what interrupted atomic writes left behind (``.NAME.*.tmp``); call it
        while holding the lock. Returns the names removed."""
        removed = []
        for folder in (self.path, self.path / POOL_DIR):
            for f in folder.glob(".*.tmp") if folder.is_dir() else ():
                f.unlink(missing_ok=True)
                removed.append(f.name)
        return removed

    def read_summary(self) -> tuple[RunSummary | None, str | None]:
        """The summary, or None and why it could not be read (None, None: there is none)."""
        path = self.file(SUMMARY)
        if not path.exists():
            return None, None
        try:
            return RunSummary.from_json(read_json(path)), None
        except (OSError, ValueError, KeyError, TypeError, AttributeError) as exc:
            return None, f"{path} cannot be read ({type(exc).__name__}: {exc})".splitlines()[0][:300]

    def summary(self) -> RunSummary | None:
        return self.read_summary()[0]

    def write_summary(self, summary: RunSummary) -> None:
        atomic_write_json(self.file(SUMMARY), summary.to_json())

    def shards(self) -> "ShardStore":
        return ShardStore(self.path / POOL_DIR)

    def write_json(self, name: str, obj: Any) -> None:
        atomic_write_json(self.file(name), obj)

    def append_metrics(self, record: dict) -> None:
        """metrics.jsonl is append-only; ``prepare_metrics`` sets aside what a crash
        mid-write (or anything else) left unreadable."""
        try:
            with open(self.file(METRICS), "a") as fh:
                fh.write(json.dumps(record, sort_keys=True) + "\n")
                fh.flush()
        except OSError as exc:
            if exc.errno in FULL_ERRNOS:
                raise no_space_left(self.file(METRICS), free_bytes(self.path)) from exc
            raise

    def read_metrics(self) -> list[dict]:
        """The readable records (lines that are not a JSON object are skipped)."""
        return self._split_metrics()[0]

    def _split_metrics(self) -> tuple[list[dict], list[bytes]]:
        try:
            lines = self.file(METRICS).read_bytes().splitlines(keepends=True)
        except FileNotFoundError:
            return [], []
        good, bad = [], []
        for raw in lines:
            try:
                record = json.loads(raw.decode("utf-8"))
                if not isinstance(record, dict):
                    raise ValueError("not a JSON object")
                good.append(record)
            except ValueError:
                if raw.strip():
                    bad.append(raw)
        return good, bad

    def prepare_metrics(self, last_epoch: int | None, warn: Callable[[str], None]) -> None:
        """Make ``metrics.jsonl`` the log of the epochs the checkpoint holds, losing
        nothing: unreadable lines go to ``metrics.jsonl.corrupt-<time>``; without a
        checkpoint (``last_epoch`` None) the earlier records go to
        ``metrics.jsonl.stale-<time>``, since the run starts over; with one, exactly the
        records after its epoch are dropped (they are about to be made again)."""
        good, bad = self._split_metrics()
        if bad:
            aside = self.file(f"{METRICS}.corrupt-{_stamp()}")
            atomic_write_bytes(aside, b"".join(line if line.endswith(b"\n") else line + b"\n" for line in bad))
            warn(f"{self.path.name}: {len(bad)} unreadable line(s) of {METRICS} moved to {aside.name}")
        if last_epoch is None and good:
            aside = self.file(f"{METRICS}.stale-{_stamp()}")
            atomic_write_bytes(aside, _jsonl(good))
            warn(f"{self.path.name}: no checkpoint to resume from; the run starts over and its earlier "
                 f"{len(good)} record(s) were moved to {aside.name}")
        kept = [r for r in good if last_epoch is not None and r.get("epoch", -1) <= last_epoch]
        if bad or good or self.file(METRICS).exists():
            atomic_write_bytes(self.file(METRICS), _jsonl(kept))

    def save_checkpoint(self, state: dict) -> None:
        """Write the checkpoint; the one it replaces becomes ``checkpoint.prev.pt``."""
        current, previous = self.file(CHECKPOINT), self.file(PREVIOUS_CHECKPOINT)

        def keep_previous():
            if current.exists():
                os.replace(current, previous)

        _atomic_replace(current, lambda tmp: torch.save(state, tmp), before_replace=keep_previous)

    def load_checkpoint(self, warn: Callable[[str], None] | None = None) -> dict | None:
        """The newest readable checkpoint, or None. One that cannot be read is moved
        aside (``.corrupt-<time>``) with a warning and the previous one is tried; loading
        never executes code (``weights_only``)."""
        for name in (CHECKPOINT, PREVIOUS_CHECKPOINT):
            path = self.file(name)
            if not path.exists():
                continue
            try:
                return torch.load(path, map_location="cpu", weights_only=True)
            except Exception as exc:  # noqa: BLE001  (torn, empty, truncated or foreign files alike)
                aside = path.with_name(f"{name}.corrupt-{_stamp()}")
                os.replace(path, aside)
                reason = f"{type(exc).__name__}: {exc}".splitlines()[0][:160]
                then = ("trying the previous checkpoint" if name == CHECKPOINT
                        else "the run starts over (or pass --force to restart it yourself)")
                if warn is not None:
                    warn(f"{self.path.name}: {name} cannot be read ({reason}); moved to {aside.name}; {then}")
        return None


def _same_file(fd: int, path: Path) -> bool:
    """Whether ``fd`` is the file at ``path`` now (not one removed since it was opened)."""
    try:
        there = os.stat(path)
    except FileNotFoundError:
        return False
    own = os.fstat(fd)
    return (own.st_dev, own.st_ino) == (there.st_dev, there.st_ino)


def _jsonl(records: list[dict]) -> bytes:
    return "".join(json.dumps(r, sort_keys=True) + "\n" for r in records).encode()


class ShardStore:
    """Append-only tensor files in one folder (a pool's images, written once each):
    atomic writes, loads that never execute code, and pruning of the files a checkpoint
    no longer names."""

    def __init__(self, path: Path):
        self.path = Path(path)

    def write(self, name: str, tensors: dict[str, torch.Tensor]) -> None:
        self.path.mkdir(parents=True, exist_ok=True)
        # clone: a slice would drag its whole storage (the pool) into the file
        atomic_torch_save(self.path / name, {k: v.detach().cpu().clone() for k, v in tensors.items()})

    def read(self, name: str) -> dict[str, torch.Tensor]:
        return torch.load(self.path / name, map_location="cpu", weights_only=True)

    def prune(self, keep: set[str]) -> None:
        if self.path.is_dir():
            for f in self.path.iterdir():
                if f.name not in keep:
                    f.unlink(missing_ok=True)


class ImageCache:
    """Results of expensive augmentations (DDA's diffusion outputs), one file per source
    image named by its content hash (``augment.cache_key``) under ``<cache>/augmentations``:
    written atomically, read without executing code; a torn or foreign file is a miss
    and is rewritten. Shared by every run on the machine, so a resumed or repeated run
    never computes the same augmentation twice."""

    def __init__(self, path: Path):
        self.path = Path(path)

    def _file(self, key: str) -> Path:
        return self.path / key[:2] / f"{key}.pt"

    def get(self, key: str) -> tuple[torch.Tensor, dict] | None:
        """(uint8 images, meta) stored under ``key``, or None."""
        f = self._file(key)
        if not f.is_file():
            return None
        try:
            entry = torch.load(f, map_location="cpu", weights_only=True)
            return entry["images"], dict(entry.get("meta", {}))
        except Exception:  # noqa: BLE001  (torn, truncated or foreign: recompute it)
            return None

    def put(self, key: str, images: torch.Tensor, meta: dict) -> None:
        f = self._file(key)
        f.parent.mkdir(parents=True, exist_ok=True)
        atomic_torch_save(f, {"images": images.detach().cpu().clone(), "meta": meta})


def _git(*args: str) -> str | None:
    try:
        out = subprocess.run(["git", *args], cwd=Path(__file__).resolve().parent, capture_output=True,
                             text=True, timeout=10)
    except (OSError, subprocess.TimeoutExpired):
        return None
    return out.stdout.strip() if out.returncode == 0 else None


def _cpuinfo() -> str:
    try:
        return Path("/proc/cpuinfo").read_text()
    except OSError:
        return ""


def _first_cpu(cpuinfo: str) -> dict[str, str]:
    """The fields of the first processor in a ``/proc/cpuinfo`` text."""
    fields: dict[str, str] = {}
    for line in cpuinfo.splitlines():
        if not line.strip():
            if fields:
                break
            continue
        key, _, value = line.partition(":")
        fields.setdefault(key.strip(), value.strip())
    return fields


def _cpu_model(cpuinfo: str | None = None) -> str:
    cpu = _first_cpu(_cpuinfo() if cpuinfo is None else cpuinfo)
    return cpu.get("model name") or platform.processor() or platform.machine()


# The instruction-set tiers that decide a CPU's speed here, best first: bf16 runs natively
# on the first two and is emulated (about 100x slower) below them.
ISA_TIERS = (("amx_bf16", "AMX-BF16"), ("avx512_bf16", "AVX512-BF16"), ("avx512f", "AVX512"), ("avx2", "AVX2"))


def cpu_kind(cpuinfo: str | None = None) -> str:
    """The CPU's kind, to compare times only within one: vendor, family and model, and the
    best of ``ISA_TIERS`` its flags name (``/proc/cpuinfo``, or ``cpuinfo``). The model name
    alone does not tell them apart: "AMD EPYC" is both a Zen 4 with native bf16 and an
    AVX2-only EPYC where bf16 is emulated."""
    cpu = _first_cpu(_cpuinfo() if cpuinfo is None else cpuinfo)
    if not cpu:
        return platform.processor() or platform.machine()
    flags = set(cpu.get("flags", "").split())
    tier = next((name for flag, name in ISA_TIERS if flag in flags), "below AVX2")
    return f"{cpu.get('vendor_id', '?')} family {cpu.get('cpu family', '?')} model {cpu.get('model', '?')}, {tier}"


def machine_kind(env: dict) -> tuple[str | None, str | None]:
    """The machine an environment record ran on, for comparing times, as (name, kind): on a
    GPU its name twice; on a CPU the model name and ``cpu_kind`` (None in records from
    before it was kept, whose model name is all that tells their machines apart)."""
    if str(env.get("device", "")).startswith("cuda"):
        return env.get("device_name"), env.get("device_name")
    return env.get("cpu_model") or env.get("device_name"), env.get("cpu_kind")


def mixed_kinds(machines) -> list[str]:
    """The machine kinds of ``machines`` ((name, kind) pairs of ``machine_kind``) where they
    are more than one, else []: the kinds recorded differ, or the names do (which tells
    apart even records without a kind; a record without one never counts as another kind)."""
    names = sorted({name for name, _ in machines if name})
    kinds = sorted({kind for _, kind in machines if kind})
    return kinds if len(kinds) > 1 else names if len(names) > 1 else []


def environment(device: torch.device, precision: str | None = None) -> dict:
    """Where and how a run ran (``precision``: the one it used, where known)."""
    status = _git("status", "--porcelain", "--untracked-files=no")
    cpuinfo = _cpuinfo()
    return {
        "git_commit": _git("rev-parse", "HEAD"),
        "git_dirty": None if status is None else bool(status),
        "torch": torch.__version__,
        "cuda": torch.version.cuda,
        "device": str(device),
        "device_name": torch.cuda.get_device_name(device) if device.type == "cuda" else _cpu_model(cpuinfo),
        "cpu_model": _cpu_model(cpuinfo),
        "cpu_kind": cpu_kind(cpuinfo),
        "threads": torch.get_num_threads(),
        **({"precision": precision} if precision else {}),
        **backends.record(),
        "python": platform.python_version(),
        "hostname": platform.node(),
    }
