"""Run directories: resolved config, environment, metrics.jsonl, summary.json, a
resumable checkpoint and the pool's shards. Every write goes to a temporary file that is
then renamed over the target, so a crash mid-write leaves the previous version intact."""
from __future__ import annotations

import hashlib
import json
import os
import platform
import subprocess
import tempfile
from pathlib import Path
from typing import Any

import torch

from .errors import UserError
from .summary import RunSummary

SUMMARY = "summary.json"
CONFIG = "config.json"
ENVIRONMENT = "environment.json"
METRICS = "metrics.jsonl"
CHECKPOINT = "checkpoint.pt"
POOL_DIR = "pool"


def _current_umask() -> int:
    mask = os.umask(0)
    os.umask(mask)
    return mask


_UMASK = _current_umask()


def _atomic_replace(path: Path, write) -> None:
    """Call ``write(tmp_path)`` on a temporary file beside ``path``, fsync it, then rename
    it over ``path``; on any failure the temporary file goes and ``path`` is untouched."""
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
        os.replace(tmp, path)
    except BaseException:
        if os.path.exists(tmp):
            os.unlink(tmp)
        raise


def atomic_write_bytes(path: Path, data: bytes) -> None:
    _atomic_replace(path, lambda tmp: Path(tmp).write_bytes(data))


def atomic_write_json(path: Path, obj: Any) -> None:
    atomic_write_bytes(path, (json.dumps(obj, indent=2, sort_keys=True) + "\n").encode())


def atomic_torch_save(path: Path, obj: Any) -> None:
    _atomic_replace(path, lambda tmp: torch.save(obj, tmp))


def read_json(path: Path) -> Any:
    with open(path) as fh:
        return json.load(fh)


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


class RunDir:
    """One directory per (resolved config, seed)."""

    def __init__(self, root: Path, name: str):
        self.path = Path(root) / name

    def create(self, fresh: bool = False) -> None:
        """Make the directory; ``fresh`` (``--force``) first removes the previous attempt's
        checkpoint, metrics and pool shards."""
        self.path.mkdir(parents=True, exist_ok=True)
        if fresh:
            for stale in (CHECKPOINT, METRICS):
                self.file(stale).unlink(missing_ok=True)
            self.shards().prune(keep=set())

    def file(self, name: str) -> Path:
        return self.path / name

    def summary(self) -> RunSummary | None:
        try:
            return RunSummary.from_json(read_json(self.file(SUMMARY)))
        except (OSError, ValueError, KeyError, TypeError):
            return None

    def write_summary(self, summary: RunSummary) -> None:
        atomic_write_json(self.file(SUMMARY), summary.to_json())

    def shards(self) -> "ShardStore":
        return ShardStore(self.path / POOL_DIR)

    def write_json(self, name: str, obj: Any) -> None:
        atomic_write_json(self.file(name), obj)

    def append_metrics(self, record: dict) -> None:
        """metrics.jsonl is append-only; a torn last line (kill -9 mid-write) is dropped
        on resume by ``truncate_metrics``."""
        with open(self.file(METRICS), "a") as fh:
            fh.write(json.dumps(record, sort_keys=True) + "\n")
            fh.flush()

    def read_metrics(self) -> list[dict]:
        out = []
        try:
            with open(self.file(METRICS)) as fh:
                for line in fh:
                    try:
                        out.append(json.loads(line))
                    except json.JSONDecodeError:
                        break
        except FileNotFoundError:
            pass
        return out

    def truncate_metrics(self, last_epoch: int) -> None:
        """Keep only events up to the checkpointed epoch, so a resumed run's log reads
        as if it had never stopped (the resume itself is logged as an event)."""
        kept = [r for r in self.read_metrics() if r.get("epoch", -1) <= last_epoch]
        atomic_write_bytes(self.file(METRICS), "".join(json.dumps(r, sort_keys=True) + "\n" for r in kept).encode())

    def save_checkpoint(self, state: dict) -> None:
        atomic_torch_save(self.file(CHECKPOINT), state)

    def load_checkpoint(self) -> dict | None:
        path = self.file(CHECKPOINT)
        if not path.exists():
            return None
        return torch.load(path, map_location="cpu", weights_only=True)


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


def _git(*args: str) -> str | None:
    try:
        out = subprocess.run(["git", *args], cwd=Path(__file__).resolve().parent, capture_output=True,
                             text=True, timeout=10)
    except (OSError, subprocess.TimeoutExpired):
        return None
    return out.stdout.strip() if out.returncode == 0 else None


def _cpu_model() -> str:
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or platform.machine()


def environment(device: torch.device) -> dict:
    status = _git("status", "--porcelain", "--untracked-files=no")
    return {
        "git_commit": _git("rev-parse", "HEAD"),
        "git_dirty": None if status is None else bool(status),
        "torch": torch.__version__,
        "cuda": torch.version.cuda,
        "device": str(device),
        "device_name": torch.cuda.get_device_name(device) if device.type == "cuda" else _cpu_model(),
        "cpu_model": _cpu_model(),
        "threads": torch.get_num_threads(),
        "python": platform.python_version(),
        "hostname": platform.node(),
    }
