"""One clock for every method: phase timers synchronised with CUDA at their edges,
and machine-independent cost counters (images through each model, FLOPs per image)."""
from __future__ import annotations

import time
from contextlib import contextmanager
from dataclasses import dataclass, field

import torch
from torch import nn
from torch.utils.flop_counter import FlopCounterMode

PHASES = ("synthesis", "augmentation", "distillation", "evaluation", "checkpoint", "startup")
# "Train time": evaluation and checkpoint writes are not training, and checkpoint cost
# grows with what a method keeps, not with how it distils. Augmentation (DDA's diffusion
# step and its filter) is part of making the training data: it counts. "startup" is what a
# process pays before its first epoch (backends.warm_up_kernels: cuDNN autotuning, lazy
# kernel loading), once per start or resume: in the total, not in train time.
TRAIN_PHASES = ("synthesis", "augmentation", "distillation")


class PhaseClock:
    """Accumulates wall-clock seconds per phase.

    On the CPU a phase edge reads ``time.perf_counter``. On CUDA it records an event on
    the stream instead of synchronising (issue 32: two host-device syncs a KD step, from
    the phase around every step): queued work then counts towards the phase that
    launched it, as a synchronise did, and the events are read with one synchronise when
    the seconds are (``seconds``: the checkpoint, once an epoch).

    Phases nest: entering another phase inside one pauses the outer phase for its
    length (an online feed's synthesis inside a distillation step counts as synthesis
    only), and re-entering the phase already running changes nothing.

    On the CPU the clock also keeps the process's CPU seconds per phase
    (``time.process_time``, every thread of the process): a run that had its threads' cores
    to itself spends about one CPU second per thread each wall second, a run sharing them
    with other work fewer (``runs.cpu_share``), so a report can tell a phase made slow by
    load from one that is slow."""

    def __init__(self, device: torch.device):
        self._seconds = {p: 0.0 for p in PHASES}
        self._cuda = device.type == "cuda"
        self._stack: list[str] = []
        self._since = 0.0
        self._last_event = None
        self._pending: list[tuple[str, object, object]] = []  # (phase, start event, end event)
        self._cpu = {} if self._cuda else {p: 0.0 for p in PHASES}  # process CPU seconds per phase
        self._cpu_since = 0.0

    @property
    def seconds(self) -> dict[str, float]:
        """Seconds per phase so far (on CUDA: one synchronise, to read the events)."""
        if self._pending:
            torch.cuda.synchronize()
            for phase, start, end in self._pending:
                self._seconds[phase] += start.elapsed_time(end) / 1000
            self._pending.clear()
        return self._seconds

    def _charge(self) -> None:
        """Charge the time since the last phase edge to the phase running now."""
        if self._cuda:
            event = torch.cuda.Event(enable_timing=True)
            event.record()
            if self._stack and self._last_event is not None:
                self._pending.append((self._stack[-1], self._last_event, event))
            self._last_event = event
            return
        now, cpu = time.perf_counter(), time.process_time()
        if self._stack:
            self._seconds[self._stack[-1]] += now - self._since
            self._cpu[self._stack[-1]] += cpu - self._cpu_since
        self._since, self._cpu_since = now, cpu

    @contextmanager
    def phase(self, name: str):
        if name not in self._seconds:
            raise ValueError(f"unknown phase {name!r}")
        if self._stack and self._stack[-1] == name:
            yield
            return
        self._charge()
        self._stack.append(name)
        try:
            yield
        finally:
            self._charge()
            self._stack.pop()

    @property
    def cpu_seconds(self) -> dict[str, float]:
        """The process's CPU seconds per phase so far; empty on CUDA, where the host's CPU
        time says nothing of the device's work."""
        return dict(self._cpu)

    @property
    def train_seconds(self) -> float:
        """Synthesis + augmentation + distillation: what a method costs to train a student. Evaluation
        and checkpoint writes are timed, shown and in ``total_seconds``, but not here."""
        return sum(self.seconds[p] for p in TRAIN_PHASES)

    @property
    def total_seconds(self) -> float:
        return sum(self.seconds.values())

    def add(self, phase: str, seconds: float) -> None:
        """Charge ``seconds`` measured outside the clock (the start-up) to ``phase``."""
        if phase not in self._seconds:
            raise ValueError(f"unknown phase {phase!r}")
        self._seconds[phase] += seconds

    def state_dict(self) -> dict:
        return {**self.seconds, **({"cpu": dict(self._cpu)} if self._cpu else {})}

    def load_state_dict(self, state: dict) -> None:
        state = dict(state)
        if "other" in state:  # checkpoints written before the phase had its name
            state["checkpoint"] = state.pop("other")
        cpu = state.pop("cpu", None)
        if cpu is not None and self._cpu:  # a checkpoint from before CPU seconds were kept has none: from 0
            self._cpu.update(cpu)
        self._pending.clear()
        self._seconds.update(state)


def forward_flops_per_image(module: nn.Module, example: torch.Tensor) -> int:
    """FLOPs of one forward pass for one input, counted once with FlopCounterMode in
    eval mode (so the module's running BN statistics stay untouched)."""
    was_training = module.training
    module.eval()
    try:
        with torch.no_grad(), FlopCounterMode(display=False) as counter:
            module(example[:1])
    finally:
        module.train(was_training)
    return int(counter.get_total_flops())


@dataclass
class ModelCost:
    flops_per_image: int = 0
    forward_images: int = 0
    backward_images: int = 0
    # Outputs a cache served instead of this model (DDA's augmentations of an image seen
    # before), and the seconds they took when they were made: their FLOPs still count,
    # since they are the method's work wherever it was done; the clock shows what ran.
    cached_images: int = 0
    cached_seconds: float = 0.0

    def training_flops(self) -> int:
        # A backward pass costs about twice the forward (input and weight gradients).
        return self.flops_per_image * (self.forward_images + self.cached_images + 2 * self.backward_images)


@dataclass
class CostCounter:
    """Counts images through the forward and backward passes of watched models.

    Counting hooks on the module (not calls in method code) keep methods honest: every
    forward is counted, whoever makes it. Evaluation forwards are excluded by pausing.
    """

    models: dict[str, ModelCost] = field(default_factory=dict)
    paused: bool = False

    def watch(self, name: str, module: nn.Module) -> None:
        cost = self.models.setdefault(name, ModelCost())

        def measure(mod, args):
            # A pre-hook, so the probe runs before the real forward and cannot
            # overwrite what other hooks (BN statistics) record from it.
            if cost.flops_per_image or self.paused or not args or not torch.is_tensor(args[0]):
                return
            paused, self.paused = self.paused, True
            try:
                cost.flops_per_image = forward_flops_per_image(mod, args[0].detach())
            finally:
                self.paused = paused

        def on_forward(mod, args, output):
            if self.paused or not args or not torch.is_tensor(args[0]):
                return
            n = args[0].shape[0]
            cost.forward_images += n
            out = output[0] if isinstance(output, (tuple, list)) else output
            if torch.is_tensor(out) and out.requires_grad:
                def on_backward(grad, n=n):
                    cost.backward_images += n
                out.register_hook(on_backward)

        module.register_forward_pre_hook(measure)
        module.register_forward_hook(on_forward)

    def add(self, name: str, flops_per_image: int, images: int = 0, cached_images: int = 0,
            cached_seconds: float = 0.0) -> None:
        """Count forward work done outside watched modules' hooks (a diffusion pipeline's
        UNet, VAE and image encoder, measured together per output image): ``images``
        computed now, ``cached_images`` served by a cache (made earlier in
        ``cached_seconds``)."""
        if self.paused:
            return
        cost = self.models.setdefault(name, ModelCost())
        cost.flops_per_image = cost.flops_per_image or int(flops_per_image)
        cost.forward_images += int(images)
        cost.cached_images += int(cached_images)
        cost.cached_seconds += float(cached_seconds)

    @contextmanager
    def pause(self):
        paused, self.paused = self.paused, True
        try:
            yield
        finally:
            self.paused = paused

    def summary(self) -> dict:
        out: dict = {}
        total = 0
        for name, c in sorted(self.models.items()):
            out[f"{name}_flops_per_image"] = c.flops_per_image
            out[f"{name}_forward_images"] = c.forward_images
            out[f"{name}_backward_images"] = c.backward_images
            if c.cached_images:
                out[f"{name}_cached_images"] = c.cached_images
                out[f"{name}_cached_seconds"] = round(c.cached_seconds, 3)
            total += c.training_flops()
        out["training_flops"] = total
        return out

    def state_dict(self) -> dict:
        return {k: vars(v).copy() for k, v in self.models.items()}

    def load_state_dict(self, state: dict) -> None:
        for name, values in state.items():
            cost = self.models.setdefault(name, ModelCost())
            for k, v in values.items():
                setattr(cost, k, v)
