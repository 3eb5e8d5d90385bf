"""Inversion parts shared by the data-free methods: BN-statistics hooks, KD and
adversarial losses, and the generator-step helpers."""
from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn


class BNStatsHook:
    """Forward hook on a teacher ``BatchNorm2d``: the distance between the statistics of
    the layer's input batch and the layer's running statistics,
    ``||mean - running_mean||_2 + ||var - running_var||_2``.

    With ``momentum`` (Fast's ``bn_mmt``) the batch statistics are first blended with a
    moving average of earlier rounds' statistics: ``(1-m) * current + m * average``.
    """

    def __init__(self, module: nn.BatchNorm2d, momentum: float = 0.0):
        self.module = module
        self.momentum = momentum
        self.loss: torch.Tensor | None = None
        self.mean: torch.Tensor | None = None  # batch statistics of the last forward
        self.var: torch.Tensor | None = None
        self.avg_mean: torch.Tensor | None = None
        self.avg_var: torch.Tensor | None = None
        self.handle = module.register_forward_hook(self._hook)

    def _hook(self, module, inputs, output):
        if not torch.is_grad_enabled():
            # Teacher forwards for distillation and evaluation need no inversion loss.
            return
        var, mean = torch.var_mean(inputs[0], dim=(0, 2, 3), unbiased=False)
        self.mean, self.var = mean, var
        if self.momentum and self.avg_mean is not None:
            m = self.momentum
            mean = (1 - m) * mean + m * self.avg_mean
            var = (1 - m) * var + m * self.avg_var
        self.loss = torch.norm(module.running_mean - mean, 2) + torch.norm(module.running_var - var, 2)

    def update_average(self) -> None:
        """Fold the last batch's statistics into the moving average (Fast's ``bn_mmt``)."""
        if self.mean is None:
            return
        m = self.momentum
        mean, var = self.mean.detach(), self.var.detach()
        if self.avg_mean is None:
            self.avg_mean, self.avg_var = mean, var
        else:
            self.avg_mean = m * self.avg_mean + (1 - m) * mean
            self.avg_var = m * self.avg_var + (1 - m) * var

    def remove(self) -> None:
        self.handle.remove()


def bn_hooks(model: nn.Module, momentum: float = 0.0) -> list[BNStatsHook]:
    return [BNStatsHook(m, momentum) for m in model.modules() if isinstance(m, nn.BatchNorm2d)]


def bn_loss(hooks: list[BNStatsHook]) -> torch.Tensor:
    """Sum of the per-layer BN-statistics losses of the last forward pass."""
    return sum(h.loss for h in hooks if h.loss is not None)


def kd_loss(student_logits: torch.Tensor, teacher_logits: torch.Tensor, T: float,
            reduction: str = "batchmean") -> torch.Tensor:
    """``KL(softmax(t/T) || softmax(s/T)) * T^2``; ``reduction='none'`` gives one value
    per sample (priority replay weights them)."""
    log_p_s = F.log_softmax(student_logits / T, dim=1)
    p_t = F.softmax(teacher_logits / T, dim=1)
    kl = F.kl_div(log_p_s, p_t, reduction="none").sum(dim=1) * (T * T)
    return kl.mean() if reduction == "batchmean" else kl


def js_divergence(logits_a: torch.Tensor, logits_b: torch.Tensor, T: float = 1.0) -> torch.Tensor:
    """Jensen-Shannon divergence between two softmax distributions, batch mean."""
    p = F.softmax(logits_a / T, dim=1)
    q = F.softmax(logits_b / T, dim=1)
    m = (0.5 * (p + q)).clamp_min(1e-12).log()
    return 0.5 * (F.kl_div(m, p, reduction="batchmean") + F.kl_div(m, q, reduction="batchmean"))


def information_entropy_loss(logits: torch.Tensor) -> torch.Tensor:
    """DAFL's balance term: minus the entropy of the batch-mean prediction, so
    minimising it pushes the classes towards uniform use."""
    p = F.softmax(logits, dim=1).mean(dim=0)
    return (p * p.clamp_min(1e-12).log()).sum()


def random_targets(n: int, num_classes: int, device: torch.device, generator: torch.Generator | None = None) -> torch.Tensor:
    return torch.randint(num_classes, (n,), generator=generator).to(device)


def roll_flip(x: torch.Tensor, max_shift: int) -> torch.Tensor:
    """DeepInversion's jitter: one random roll of up to ``max_shift`` px in each axis
    and a random horizontal flip, applied to the whole batch."""
    dx, dy = torch.randint(-max_shift, max_shift + 1, (2,)).tolist()
    x = torch.roll(x, shifts=(dx, dy), dims=(2, 3))
    if torch.rand(()) < 0.5:
        x = x.flip(3)
    return x


def adversarial_kl_agree(student_logits: torch.Tensor, teacher_logits: torch.Tensor, T: float = 1.0) -> torch.Tensor:
    """Fast-N's adversarial term, to be *minimised* by the generator: minus the KL between
    teacher and student, counted only on samples where both predict the same class (so
    the generator is not rewarded for samples the teacher itself finds ambiguous)."""
    agree = (student_logits.argmax(1) == teacher_logits.argmax(1)).float()
    kl = kd_loss(student_logits, teacher_logits, T, reduction="none") / (T * T)
    return -(kl * agree).sum() / agree.sum().clamp_min(1.0)


def generator_for(ctx, nz: int = 256, ngf: int = 64) -> "nn.Module":
    """The shared generator sized for the run's images, on the run's device."""
    from .models.generator import Generator

    c, h, _ = ctx.image_shape
    return Generator(nz=nz, ngf=ngf, img_size=h, nc=c).to(ctx.device)
