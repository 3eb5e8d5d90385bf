"""The fast path of a run: its numeric precision (``run.precision``) and memory layout,
the same on the CPU and on CUDA.

- Layout: conv models and image batches are channels_last on both devices. Measured
  on one core, a KD step (teacher forward, student forward and backward, SGD, batch
  128) takes 0.75x the NCHW time on resnet20 -> resnet8 both on a Xeon with AMX
  (437 vs 575 ms, issue 16) and on an AVX2-only EPYC (621-677 vs 829-912 ms).
- Precision: ``fp32``, ``bf16`` (autocast: convolutions and matrix products in bf16,
  parameters, optimiser state and the pool's images in fp32), ``fp16`` (CUDA only: the
  distillation phase autocast to fp16 with a gradient scaler, synthesis in fp32), or
  ``auto``: bf16 where the hardware runs it natively (GPUs of compute capability 8.0 and
  up; CPUs with AMX-BF16 or AVX512-BF16), fp16 on Volta and Turing GPUs (7.x: cuDNN has no
  bf16 convolutions there, though ``torch.cuda.is_bf16_supported()`` says yes because it
  counts emulation), fp32 elsewhere. Without native bf16 a CPU emulates it: measured on
  an AVX2 EPYC, a 2048^2 matrix product ran at 0.17 GFLOP/s in bf16 against 39 in fp32.
- Numerics under bf16: the outputs of teacher, student and generators are cast to
  fp32 (``fp32_outputs``) so that every loss, softmax and KL is computed in fp32, and
  the BN-statistics and feature hooks of the inversion losses read their inputs in
  fp32 (``inversion``).

``resolve`` turns the setting into the precision a run uses, which is what its
config.json, summary and report record (a run never says "auto").
"""
from __future__ import annotations

import functools
from contextlib import nullcontext
from dataclasses import dataclass
from pathlib import Path

import torch
from torch import nn

from .errors import UserError

PRECISIONS = ("auto", "fp32", "bf16", "fp16")
RESOLVED_PRECISIONS = tuple(p for p in PRECISIONS if p != "auto")  # what ``auto`` can become
DTYPES = {"bf16": torch.bfloat16, "fp16": torch.float16}
# cuDNN and cuBLAS run bf16 natively from Ampere (compute capability 8.0); Volta and Turing
# (7.x) have fp16 tensor cores but emulate bf16, which torch.cuda.is_bf16_supported() counts.
NATIVE_BF16_CAPABILITY, FP16_CAPABILITY = (8, 0), (7, 0)


def cuda_support(device: torch.device) -> tuple[bool, bool, str]:
    """(native bf16, fast fp16, the GPU's name and compute capability) of a CUDA device."""
    capability = tuple(torch.cuda.get_device_capability(device))
    name = f"{torch.cuda.get_device_name(device)} (sm{capability[0]}{capability[1]})"
    return capability >= NATIVE_BF16_CAPABILITY, capability >= FP16_CAPABILITY, name


@functools.lru_cache(maxsize=None)
def cpu_bf16_support() -> tuple[bool, str]:
    """(whether this CPU runs bf16 natively, which instruction set says so); probed once
    a process, since every run name resolves the precision."""
    caps = {}
    probe = getattr(getattr(torch._C, "_cpu", None), "_get_cpu_capability", None)
    if probe is not None:
        try:
            found = probe()
            caps = found if isinstance(found, dict) else {}
        except Exception:  # noqa: BLE001  (a private probe: absent or changed in another torch)
            caps = {}
    if not caps:
        try:
            flags = set(Path("/proc/cpuinfo").read_text().split())
        except OSError:
            flags = set()
        caps = {"amx_bf16": "amx_bf16" in flags, "avx512_bf16": "avx512_bf16" in flags}
    for name in ("amx_bf16", "avx512_bf16"):
        if caps.get(name):
            return True, name.upper().replace("_", "-")
    return False, "neither AMX-BF16 nor AVX512-BF16"


def resolve(requested: str, device: torch.device, fp16: bool = True) -> tuple[str, str]:
    """(``fp32``, ``bf16`` or ``fp16``, why): the precision a run with
    ``precision=requested`` uses on ``device``. ``auto`` is bf16 where the hardware runs it
    natively (Ampere+ GPUs; CPUs with AMX-BF16 or AVX512-BF16), else fp16 on a GPU with fp16
    tensor cores (Volta, Turing; with ``fp16``, which callers without a gradient scaler
    turn off), else fp32. fp16 is a CUDA precision: asked for on the CPU it is a
    ``UserError``."""
    if requested not in PRECISIONS:
        raise ValueError(f"precision {requested!r}; expected one of {PRECISIONS}")
    if device.type == "cuda":
        native, half, name = cuda_support(device)
        why = f"{name} {'runs bf16 natively' if native else 'has no native bf16'}"
    else:
        if requested == "fp16":
            raise UserError("precision fp16 is for CUDA GPUs without native bf16 (Volta, Turing); on the CPU use "
                            "bf16 (native on AMX-BF16 or AVX512-BF16) or fp32")
        (native, what), half = cpu_bf16_support(), False
        why = f"this CPU has {what}"
    if requested == "auto":
        chosen = "bf16" if native else "fp16" if half and fp16 else "fp32"
        return chosen, f"precision auto: {chosen}, since {why}"
    if requested == "bf16" and not native:
        return "bf16", f"precision bf16 as asked, but {why}: bf16 is emulated here and far slower than fp32"
    return requested, ""


@dataclass(frozen=True)
class FastPath:
    """How a run's models and batches are laid out and computed."""

    device_type: str = "cpu"
    precision: str = "fp32"  # fp32 | bf16 | fp16 (resolved)
    channels_last: bool = True
    bf16_phases: str = "all"  # all | distillation | synthesis: where bf16 applies (run.bf16_phases)

    @property
    def bf16(self) -> bool:
        return self.precision == "bf16"

    @property
    def fp16(self) -> bool:
        """fp16 autocasts the distillation phase only, with a gradient scaler on the
        student's optimiser (``StudentTrainer``); synthesis stays fp32, since the methods'
        own optimisers (pixels, generators, heads) have no scaler and fp16 gradients through
        the teacher would underflow."""
        return self.precision == "fp16"

    def autocast(self, phase: str = "distillation"):
        """The context the forwards of ``phase`` run in: ``synthesis`` (a method's
        samples, its warm-up steps and the augmentation filter) or ``distillation``
        (student steps and evaluation)."""
        if self.bf16 and self.bf16_phases in ("all", phase):
            # Autocast keeps the bf16 copy of every leaf that requires grad until the region
            # ends. A synthesis region spans a method's whole inner loop, whose leaves (pixels,
            # latents, heads) take optimiser steps inside it: with the cache, every forward
            # saw them at their first value (issue 30: a pixel inversion's loss stayed at
            # 16.99 under bf16 where fp32 fell to 0.22). A distillation region holds one
            # student step's forwards, with the optimiser step outside it, so it keeps the cache.
            return torch.autocast(self.device_type, dtype=torch.bfloat16, cache_enabled=phase != "synthesis")
        if self.fp16 and phase == "distillation":
            return torch.autocast(self.device_type, dtype=torch.float16)
        return nullcontext()

    def prepare(self, module: nn.Module) -> nn.Module:
        """``module`` in the run's layout, its outputs in fp32 under bf16 and fp16; in place."""
        if self.channels_last:
            module.to(memory_format=torch.channels_last)
        if self.precision in DTYPES:
            fp32_outputs(module)
        return module

    def images(self, x: torch.Tensor) -> torch.Tensor:
        """An image batch in the run's layout."""
        if self.channels_last and x.dim() == 4:
            return x.contiguous(memory_format=torch.channels_last)
        return x


def _to_fp32(value):
    if torch.is_tensor(value) and value.is_floating_point() and value.dtype != torch.float32:
        return value.float()
    if isinstance(value, tuple):
        return tuple(_to_fp32(v) for v in value)
    if isinstance(value, list):
        return [_to_fp32(v) for v in value]
    return value


def fp32_outputs(module: nn.Module) -> None:
    """Cast ``module``'s floating outputs (a tensor, or a tuple/list of them) to fp32
    after every forward, once however often it is called."""
    if getattr(module, "_dfkd_fp32_outputs", False):
        return
    module.register_forward_hook(lambda mod, args, output: _to_fp32(output))
    module._dfkd_fp32_outputs = True
