"""Inversion parts shared by the data-free methods: BN-statistics hooks, KD and
adversarial losses, and the generator-step helpers."""
from __future__ import annotations

import copy
from contextlib import contextmanager

import torch
import torch.nn.functional as F
from torch import nn

from .errors import UserError


def channel_stats(x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """Per-channel (mean, biased variance) of an N x C x H x W batch, in fp32 whatever
    its dtype (the BN loss compares them with fp32 running statistics), differentiable.

    Two passes over a (pixels x channels) view, a free view of a channels_last batch:
    ``torch.var_mean(x, dim=(0, 2, 3))`` is the same arithmetic up to fp32 rounding
    (about 1e-7) and was the largest single operator of a synthesis round, 30% of a
    DeepInv round under bf16 on one EPYC core; forward and backward through this form
    take 0.55-0.7x its time (benchmarks/profile_synthesis.py, reports/speed)."""
    flat = x.float().permute(0, 2, 3, 1).reshape(-1, x.shape[1])
    mean = flat.mean(0)
    return mean, (flat - mean).square().mean(0)


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
        mean, var = channel_stats(inputs[0])
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


def bn_hooks(model: nn.Module, method: str, momentum: float = 0.0, hook=BNStatsHook) -> list[BNStatsHook]:
    """A ``hook`` on every ``BatchNorm2d`` of ``model`` (the teacher); a teacher without
    any is a ``UserError`` naming ``method``, whose BN-statistics loss needs them."""
    hooks = [hook(m, momentum) for m in model.modules() if isinstance(m, nn.BatchNorm2d)]
    if not hooks:
        raise UserError(f"{method}: the teacher has no BatchNorm2d layers, and this method's BN-statistics "
                        "loss needs them; choose a teacher with BatchNorm (or a method without that loss)")
    return hooks


def bn_loss(hooks: list[BNStatsHook]) -> torch.Tensor:
    """Sum of the per-layer BN-statistics losses of the last forward pass."""
    return sum(h.loss for h in hooks if h.loss is not None)


def kd_loss(student_logits: torch.Tensor, teacher_logits: torch.Tensor, T: float,
            reduction: str = "batchmean") -> torch.Tensor:
    """``KL(softmax(t/T) || softmax(s/T)) * T^2`` over the class dimension (dimension 1),
    the mean over samples (and pixels, for dense logits); ``reduction='none'`` gives one
    value per prediction: per sample, or per pixel (N x H x W; ``per_image`` averages it)."""
    log_p_s = F.log_softmax(student_logits / T, dim=1)
    # The teacher's log-probabilities, not its probabilities: a generator's step takes this
    # loss's gradient through the teacher's logits, and where a probability underflows to 0
    # (logits 104 apart at T 1 in fp32) kl_div's gradient with respect to it is log(0) * 0,
    # NaN. That made SSD-KD's adversarial term NaN the generator on resnet34 -> resnet18
    # (digits), whose teacher answers synthetic images with logits hundreds apart (issue 30).
    log_p_t = F.log_softmax(teacher_logits / T, dim=1)
    kl = F.kl_div(log_p_s, log_p_t, reduction="none", log_target=True).sum(dim=1) * (T * T)
    return kl.mean() if reduction == "batchmean" else kl


def js_divergence(logits_a: torch.Tensor, logits_b: torch.Tensor, T: float = 1.0) -> torch.Tensor:
    """Jensen-Shannon divergence between two softmax distributions, batch mean."""
    p = F.softmax(logits_a / T, dim=1)
    q = F.softmax(logits_b / T, dim=1)
    m = (0.5 * (p + q)).clamp_min(1e-12).log()
    return 0.5 * (F.kl_div(m, p, reduction="batchmean") + F.kl_div(m, q, reduction="batchmean"))


def reference_js_divergence(logits_a: torch.Tensor, logits_b: torch.Tensor, T: float = 1.0) -> torch.Tensor:
    """The "JS divergence" of the reference code (Fast-Datafree's ``jsdiv``), batch mean:
    ``0.5 KL(M||P) + 0.5 KL(M||Q)`` with P, Q and M = (P+Q)/2 clamped to [0.01, 0.99]
    before the logarithms. It is not the Jensen-Shannon divergence (that is
    ``0.5 KL(P||M) + 0.5 KL(Q||M)``, ``js_divergence``), and the clamp stops the gradient
    of ``log P`` wherever a probability is outside [0.01, 0.99]. Measured on 256 x 10
    random logits at T = 3 (seed 0), its gradient norm is 1.10x the true JS's at logit
    scale 1, 1.72x at scale 3 and 2.56x at scale 10: the reference pushes harder."""
    p = F.softmax(logits_a / T, dim=1)
    q = F.softmax(logits_b / T, dim=1)
    m = (0.5 * (p + q)).clamp(0.01, 0.99)
    p, q = p.clamp(0.01, 0.99), q.clamp(0.01, 0.99)
    return 0.5 * (F.kl_div(p.log(), m, reduction="batchmean") + F.kl_div(q.log(), m, reduction="batchmean"))


@contextmanager
def watched_bn(model: nn.Module):
    """BN-statistics hooks on every ``BatchNorm2d`` of ``model`` (the student) for the
    duration of the block, so its training steps outside carry no hook work. Yields the
    hooks (an empty list for a model without BatchNorm)."""
    hooks = [BNStatsHook(m) for m in model.modules() if isinstance(m, nn.BatchNorm2d)]
    try:
        yield hooks
    finally:
        for h in hooks:
            h.remove()


def class_probabilities(logits: torch.Tensor) -> torch.Tensor:
    """Softmax over the class dimension with every prediction a row: N x C for a
    classifier's logits, (N * H * W) x C for a dense one's (each pixel a prediction: the
    segmentation reading of the class-based terms below)."""
    p = F.softmax(logits, dim=1)
    return p.movedim(1, -1).reshape(-1, p.shape[1]) if p.dim() > 2 else p


def per_image(values: torch.Tensor) -> torch.Tensor:
    """One value per image: a per-pixel map (N x H x W) averaged over its pixels; per-image
    values unchanged."""
    return values.flatten(1).mean(1) if values.dim() > 1 else values


def information_entropy_loss(logits: torch.Tensor) -> torch.Tensor:
    """DAFL's balance term: minus the entropy of the batch-mean prediction, so
    minimising it pushes the classes towards uniform use. For dense logits the mean is
    over every pixel of the batch (the classes' pixel shares pushed towards uniform)."""
    p = class_probabilities(logits).mean(dim=0)
    return (p * p.clamp_min(1e-12).log()).sum()


def top_class_share(logits: torch.Tensor) -> torch.Tensor:
    """The share of a batch (of its pixels, for dense logits) in its most frequent
    predicted class: about 1/C for a class-balanced batch, 1 when a generator has
    collapsed onto one class."""
    classes = logits.detach().argmax(1).flatten()
    counts = torch.bincount(classes, minlength=logits.shape[1])
    return counts.max().float() / classes.numel()


def random_targets(n: int, num_classes: int, device: torch.device, generator: torch.Generator | None = None) -> torch.Tensor:
    return torch.randint(num_classes, (n,), generator=generator).to(device)


def total_variation(x: torch.Tensor) -> torch.Tensor:
    """DeepInversion's total-variation prior as its originals compute it (NVlabs'
    CIFAR script, the CMI code's deepinv): the L2 norms, each over the whole batch, of
    the differences between every pixel and its right, lower, lower-left and lower-right
    neighbours, summed (four norms, not a per-pixel mean: the weights 0.001 and 2.5e-5
    of the originals are for this scale)."""
    diffs = (x[:, :, :, :-1] - x[:, :, :, 1:], x[:, :, :-1, :] - x[:, :, 1:, :],
             x[:, :, 1:, :-1] - x[:, :, :-1, 1:], x[:, :, :-1, :-1] - x[:, :, 1:, 1:])
    return sum(torch.linalg.vector_norm(d.float()) for d in diffs)


def l2_prior(x: torch.Tensor) -> torch.Tensor:
    """DeepInversion's l2 prior (NVlabs): the L2 norm of the whole image batch."""
    return torch.linalg.vector_norm(x.float())


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
    the generator is not rewarded for pushing samples across the teacher's boundary).
    Dense logits: per pixel, each pixel counted where the two agree on it."""
    agree = (student_logits.argmax(1) == teacher_logits.argmax(1)).float()
    kl = kd_loss(student_logits, teacher_logits, T, reduction="none") / (T * T)
    # Masked mean over the whole batch, as the reference implementation: the term
    # weakens as fewer samples agree instead of concentrating on the few that do.
    return -(kl * agree).mean()


def host_floats(terms: dict[str, torch.Tensor]) -> dict[str, float]:
    """Scalar tensors as Python floats in one host transfer (one CUDA sync, not one per
    term)."""
    names = list(terms)
    values = torch.stack([terms[k].detach().float() for k in names]).tolist()
    return dict(zip(names, values))


class KeepBest:
    """The lowest-loss step of an inner loop: its loss terms and tensors, kept on the
    device with ``torch.where`` so the loop never waits for the host (a ``.item()`` per
    step is a CUDA sync per step). Strictly lower replaces, so ties keep the first."""

    def __init__(self):
        self.terms: dict[str, torch.Tensor] | None = None
        self.tensors: tuple[torch.Tensor, ...] = ()

    def update(self, terms: dict[str, torch.Tensor], *tensors: torch.Tensor) -> None:
        terms = {k: v.detach() for k, v in terms.items()}
        tensors = tuple(t.detach() for t in tensors)
        if self.terms is None:
            self.terms, self.tensors = {k: v.clone() for k, v in terms.items()}, tuple(t.clone() for t in tensors)
            return
        better = terms["loss"] < self.terms["loss"]
        self.terms = {k: torch.where(better, v, self.terms[k]) for k, v in terms.items()}
        self.tensors = tuple(torch.where(better, t, old) for t, old in zip(tensors, self.tensors))

    def logs(self) -> dict[str, float]:
        """One host transfer for all terms, at the end of the loop."""
        return host_floats(self.terms)


def generator_for(ctx, nz: int = 256, ngf: int = 64, kind: str = "sigmoid") -> "nn.Module":
    """A generator of ``models.generator.GENERATORS`` (the shared one by default) sized for
    the run's images, on the run's device."""
    from .models.generator import GENERATORS

    c, h, _ = ctx.image_shape
    return ctx.fast_path.prepare(GENERATORS[kind](nz=nz, ngf=ngf, img_size=h, nc=c).to(ctx.device))


def random_resized_crop(x: torch.Tensor, scale: tuple[float, float] = (0.25, 1.0),
                        ratio: tuple[float, float] = (3 / 4, 4 / 3),
                        generator: torch.Generator | None = None) -> torch.Tensor:
    """Per-sample random crop covering a ``scale`` share of the area at an aspect ratio
    in ``ratio``, resized back to the input size (bilinear), batched by grid sampling;
    CMI's second ("local") view of a synthetic image."""
    import math

    n = x.shape[0]
    area = torch.empty(n).uniform_(scale[0], scale[1], generator=generator)
    aspect = torch.empty(n).uniform_(math.log(ratio[0]), math.log(ratio[1]), generator=generator).exp()
    w, h = (area * aspect).sqrt().clamp(max=1.0), (area / aspect).sqrt().clamp(max=1.0)
    theta = torch.zeros(n, 2, 3)
    theta[:, 0, 0], theta[:, 1, 1] = w, h
    theta[:, 0, 2] = (torch.rand(n, generator=generator) * 2 - 1) * (1 - w)
    theta[:, 1, 2] = (torch.rand(n, generator=generator) * 2 - 1) * (1 - h)
    grid = F.affine_grid(theta.to(x), list(x.shape), align_corners=False)
    return F.grid_sample(x, grid, mode="bilinear", padding_mode="border", align_corners=False)


@contextmanager
def frozen(module: nn.Module):
    """Switch off ``requires_grad`` of ``module``'s trainable parameters for the block
    and restore it after: a generator step then backpropagates through the student
    to its input without computing or accumulating gradients for the student."""
    params = [p for p in module.parameters() if p.requires_grad]
    for p in params:
        p.requires_grad_(False)
    try:
        yield module
    finally:
        for p in params:
            p.requires_grad_(True)


@contextmanager
def train_mode_keeping_bn_statistics(model: nn.Module):
    """``model`` in train mode for the block (its BatchNorm layers normalise by the batch's
    statistics, as in a student step) with their running statistics restored after, so a
    scoring forward does not count as training; then back in its previous mode."""
    was_training = model.training
    bns = [m for m in model.modules() if isinstance(m, nn.modules.batchnorm._BatchNorm)]
    saved = [[b.clone() for b in m.buffers()] for m in bns]
    model.train()
    try:
        yield model
    finally:
        model.train(was_training)
        for m, buffers in zip(bns, saved):
            for live, old in zip(m.buffers(), buffers):
                live.copy_(old)


class OnlineGenerator:
    """A generator trained alongside the student, for the online methods (DAFL, DFAD,
    ZSKT, DFQ): a generator of ``GENERATORS`` (``kind``) in train mode, its Adam optimiser (betas 0.5,
    0.999), and a call counter so that it takes one step on the first call and every
    ``every``-th after (DFAD's 5, ZSKT's and DFQ's 10 student steps per generator step)."""

    def __init__(self, ctx, nz: int, lr: float, every: int = 1, betas: tuple[float, float] = (0.5, 0.999),
                 kind: str = "sigmoid"):
        if every < 1:
            raise ValueError(f"every must be >= 1, got {every}")
        self.ctx = ctx
        self.net = generator_for(ctx, nz, kind=kind)
        self.optimizer = torch.optim.Adam(self.net.parameters(), lr=lr, betas=betas)
        self.every = every
        self.calls = 0
        self.logs: dict[str, torch.Tensor] = {}

    def sample(self, n: int) -> torch.Tensor:
        """``n`` images in the models' normalised space, differentiable in the generator."""
        z = torch.randn(n, self.net.nz, device=self.ctx.device)
        x = self.net(z)
        return x if self.net.normalized_output else self.ctx.normalizer(x)

    def step(self, n: int, loss_fn) -> dict[str, float]:
        """One generator step minimising ``loss_fn(x) -> (loss, {name: tensor})`` on a
        fresh batch of ``n`` images, with the student's parameters frozen; returns its
        logs. Warm-up steps call it directly: they leave the call counter alone."""
        self.net.train()
        with frozen(self.ctx.student):
            loss, terms = loss_fn(self.sample(n))
            self.optimizer.zero_grad(set_to_none=True)
            loss.backward()
            self.optimizer.step()
        # kept on the device: the feed sums them there and reads the sums once an epoch
        # (issue 32: converting them here was a host sync every generator step)
        self.logs = {k: v.detach().float() for k, v in {"loss_g": loss, **terms}.items()}
        return dict(self.logs)

    def next_batch(self, n: int, loss_fn) -> tuple[torch.Tensor, dict[str, float]]:
        """One online synthesis call: when due, one generator step minimising
        ``loss_fn(x) -> (loss, {name: tensor})`` on a batch of ``n`` images with the
        student's parameters frozen; then, always, a fresh batch drawn without grad.
        The last step's logs come back on every call, so that per-epoch means are not
        diluted by the calls that took no step."""
        self.net.train()
        if self.calls % self.every == 0:
            self.step(n, loss_fn)
        self.calls += 1
        with torch.no_grad():
            images = self.sample(n)
        return images, dict(self.logs)

    def state_dict(self) -> dict:
        # Copies: the live tensors change in place with the next step.
        return copy.deepcopy({"generator": self.net.state_dict(), "optimizer": self.optimizer.state_dict(),
                              "calls": self.calls, "logs": self.logs})

    def load_state_dict(self, state: dict) -> None:
        self.net.load_state_dict(state["generator"])
        # A copy: Adam would otherwise keep (and update in place) the caller's tensors.
        self.optimizer.load_state_dict(copy.deepcopy(state["optimizer"]))
        self.calls, self.logs = state["calls"], dict(state["logs"])
