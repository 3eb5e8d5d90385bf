"""The numeric back ends' global switches, set explicitly by every run and recorded in its
environment.json, so a table never silently mixes arithmetic:

- cuDNN autotuning (``cudnn.benchmark``): on for CUDA runs (it picks the fastest
  convolution algorithm for each shape once), off when a run asks for determinism.
- TF32: off unless ``run.tf32``. PyTorch's own default lets fp32 *convolutions* on
  Ampere and later run in TF32 (10-bit mantissa) while fp32 matrix products do not; a run
  that says fp32 computes in fp32 here, and a run that wants TF32's speed says so.
- ``run.deterministic``: torch's deterministic algorithms (an error where an op has none),
  cuBLAS's fixed workspace (``CUBLAS_WORKSPACE_CONFIG=:4096:8``) and no autotuning. On the
  CPU every op this suite uses is deterministic for a fixed thread count already; on CUDA
  nearest upsampling, adaptive pooling, index backward and ``grid_sample`` are not, and
  cuDNN's algorithm choice varies, unless this is on.

The previous state comes back when a run ends (``applied``), so a process that runs
several runs (a sweep worker) gives each its own. Peak memory is measured per run too:
``reset_peak_memory`` at the start, ``peak_memory`` at the end (CUDA: the allocator's
peak allocated and reserved bytes; CPU: the process's peak resident set, reset through
``/proc/self/clear_refs`` where Linux offers it).
"""
from __future__ import annotations

import os
import resource
import time
from contextlib import contextmanager
from pathlib import Path

import torch

CUBLAS_WORKSPACE = ":4096:8"


def _state() -> dict:
    return {"benchmark": torch.backends.cudnn.benchmark, "deterministic_cudnn": torch.backends.cudnn.deterministic,
            "tf32_matmul": torch.backends.cuda.matmul.allow_tf32, "tf32_cudnn": torch.backends.cudnn.allow_tf32,
            "deterministic": torch.are_deterministic_algorithms_enabled(),
            "cublas": os.environ.get("CUBLAS_WORKSPACE_CONFIG")}


def _set(state: dict) -> None:
    torch.backends.cudnn.benchmark = state["benchmark"]
    torch.backends.cudnn.deterministic = state["deterministic_cudnn"]
    torch.backends.cuda.matmul.allow_tf32 = state["tf32_matmul"]
    torch.backends.cudnn.allow_tf32 = state["tf32_cudnn"]
    torch.use_deterministic_algorithms(state["deterministic"])
    if state["cublas"] is None:
        os.environ.pop("CUBLAS_WORKSPACE_CONFIG", None)
    else:
        os.environ["CUBLAS_WORKSPACE_CONFIG"] = state["cublas"]


@contextmanager
def applied(device_type: str, deterministic: bool = False, tf32: bool = False):
    """The run's back-end switches for the block (see the module docstring), the
    previous ones after it."""
    before = _state()
    _set({"benchmark": device_type == "cuda" and not deterministic, "deterministic_cudnn": deterministic,
          "tf32_matmul": tf32, "tf32_cudnn": tf32, "deterministic": deterministic,
          "cublas": CUBLAS_WORKSPACE if deterministic else before["cublas"]})
    try:
        yield
    finally:
        _set(before)


def record() -> dict:
    """What environment.json says about the back ends now."""
    cudnn = torch.backends.cudnn.version() if torch.backends.cudnn.is_available() else None
    return {"cudnn_version": cudnn, "cudnn_benchmark": torch.backends.cudnn.benchmark,
            "deterministic": torch.are_deterministic_algorithms_enabled(),
            "tf32_matmul": torch.backends.cuda.matmul.allow_tf32, "tf32_cudnn": torch.backends.cudnn.allow_tf32,
            "cublas_workspace_config": os.environ.get("CUBLAS_WORKSPACE_CONFIG")}


_CLEAR_REFS = Path("/proc/self/clear_refs")
_STATUS = Path("/proc/self/status")


def reset_peak_memory(device: torch.device) -> bool:
    """Start measuring this run's peak from now; False where the platform cannot reset
    it (then the peak is the process's since it started)."""
    if device.type == "cuda":
        torch.cuda.reset_peak_memory_stats(device)
        return True
    try:
        _CLEAR_REFS.write_text("5")  # Linux: reset the peak resident set (VmHWM) to the current one
        return True
    except OSError:
        return False


def peak_memory(device: torch.device) -> tuple[float, float | None]:
    """(peak MiB, reserved MiB or None) since the last ``reset_peak_memory``: on CUDA the
    allocator's peak allocated and reserved memory, on the CPU the peak resident set."""
    if device.type == "cuda":
        return (torch.cuda.max_memory_allocated(device) / 2**20, torch.cuda.max_memory_reserved(device) / 2**20)
    try:
        for line in _STATUS.read_text().splitlines():
            if line.startswith("VmHWM:"):
                return int(line.split()[1]) / 1024, None  # kB
    except OSError:
        pass
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024, None  # Linux reports KiB


def warm_up_kernels(fast_path, teacher: torch.nn.Module, student: torch.nn.Module, image_shape: tuple[int, ...],
                    synth_batch: int, kd_batch: int, device: torch.device) -> float:
    """Seconds spent running each model once at its batch shapes before any epoch: the
    teacher forward and backward to its input at the synthesis batch (a synthesis step's
    path) and forward at the KD batch, the student forward and backward in train mode at
    the KD batch, all on zero images. This is where a process pays its start-up costs
    (cuDNN's autotuning of each convolution shape, lazy kernel loading, cuBLAS handles,
    oneDNN primitives on the CPU, ``run.compile``'s compilation), which otherwise land in
    the first epoch's synthesis; the run times them as the ``startup`` phase (issue 32,
    item 9), counted in the total time, not in train time. A method's own modules
    (generators, heads) still autotune in their first round, and evaluation's shapes in
    the first evaluation.

    Nothing a run computes changes: the student's buffers (BN statistics) are put back
    and its gradients dropped, and zero inputs draw no random numbers."""
    start = time.perf_counter()
    was_training = student.training
    buffers = {name: b.clone() for name, b in student.named_buffers()}
    student.train()
    try:
        x = torch.zeros(synth_batch, *image_shape, device=device, requires_grad=True)
        with fast_path.autocast("synthesis"):
            out = teacher(fast_path.images(x))
        out.float().sum().backward()
        kd = fast_path.images(torch.zeros(kd_batch, *image_shape, device=device))
        with torch.no_grad(), fast_path.autocast("distillation"):
            teacher(kd)
        with fast_path.autocast("distillation"):
            out = student(kd)
        out.float().sum().backward()
    finally:
        student.zero_grad(set_to_none=True)
        with torch.no_grad():
            for name, b in student.named_buffers():
                b.copy_(buffers[name])
        student.train(was_training)
    if device.type == "cuda":
        torch.cuda.synchronize(device)
    return time.perf_counter() - start


def compiled_start(student: torch.nn.Module, warm_up) -> tuple[float, str]:
    """``run.compile``: the student's forward (and so its backward) through
    ``torch.compile``, compiled by the start-up's ``warm_up`` (seconds returned with what
    ran). A compiler that fails there (no C++ compiler for inductor, an unsupported op)
    leaves the student eager and the reason recorded, not the run failed.

    The teacher stays eager: the methods hang their inversion losses on hooks of its
    BatchNorm layers, registered after the session builds it, and TorchDynamo does not
    guard on hooks added after compilation (``skip_nnmodule_hook_guards``), so a teacher
    compiled first would silently run without them."""
    student.compile()
    try:
        return warm_up(), "student"
    except Exception as exc:  # noqa: BLE001 - any compiler failure falls back to eager, recorded
        student._compiled_call_impl = None  # what nn.Module.compile set: eager again
        reason = f"{type(exc).__name__}: {exc}".splitlines()[0][:200]
        return warm_up(), f"eager (torch.compile failed: {reason})"
