"""Contrastive Model Inversion for Data-Free Knowledge Distillation (Fang et al., IJCAI 2021).

Every round a freshly initialised generator (weights N(0, 0.02), BN gamma N(1, 0.02), as
the reference's ``reset_model``) and its latents z are optimised jointly (Adam (0.5,
0.999), lr_g) on ``bn * BN-statistics + oh * CE(teacher, random targets) + adv *
adversarial term + cr * contrastive loss``.

The contrastive loss, as the reference code builds it: an image's instance feature is
the concatenation of the per-sample spatial means of the inputs of the teacher's
feature layers (every BN layer; the four residual stages of a 4-stage ResNet such as
resnet34, ``features``). Each image has a global view (the data set's crop/flip, the
one the inversion losses see) and a local view (a random-resized crop of 25-100 % of
its area). The memory bank holds both views' features of earlier rounds' images; up to
``n_neg`` rows are drawn a step and join the batch. A head (Linear(F, F), ReLU,
Linear(F, head_dim), L2-normalised; its own Adam at lr_g with default betas, kept across
rounds) projects them. Each local projection is an anchor whose positive is its own
image's global projection among the global projections of every other image of the
batch and the drawn bank rows, which are detached: cross-entropy over the cosine
similarities / ``cr_T``. The loss is the mean over the batch's anchors plus the mean
over the bank rows' anchors (which reach only the head). The lowest-loss step's images
enter the pool and their two views' features enter the bank.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Literal

import torch
import torch.nn.functional as F
from torch import nn

from dfkd_bench.errors import UserError
from dfkd_bench.config import NonNegativeFloat, NonNegativeInt, PositiveFloat, PositiveInt
from dfkd_bench.inversion import (KeepBest, adversarial_kl_agree, bn_hooks, bn_loss, generator_for, js_divergence,
                                  random_resized_crop, random_targets)
from dfkd_bench.method import SMOKE_RUN, Batch, Method, register_method
from dfkd_bench.models.generator import reinit_all


class InstanceMeanHook:
    """Keeps each sample's spatial mean of a module's input (CMI's instance feature),
    for forwards with gradients enabled."""

    def __init__(self, module: nn.Module):
        self.module = module
        self.instance_mean: torch.Tensor | None = None
        self.handle = module.register_forward_hook(self._hook)

    def _hook(self, module, inputs, output):
        if torch.is_grad_enabled():
            self.instance_mean = inputs[0].float().mean(dim=(2, 3))


def feature_layers(teacher: nn.Module, which: str) -> list[nn.Module]:
    """The teacher layers whose inputs make CMI's instance feature: ``bn`` every
    BatchNorm2d, ``blocks`` the four stages ``layer1..layer4`` of a ResNet, ``auto``
    blocks where the teacher has them (the reference code's choice for resnet34), else BN."""
    stages = [getattr(teacher, f"layer{i}", None) for i in range(1, 5)]
    has_stages = all(isinstance(m, nn.Module) for m in stages)
    if which == "blocks" and not has_stages:
        raise UserError(f"cmi: features=blocks needs a teacher with four stages layer1..layer4 (a ResNet-18/34); "
                        f"{type(teacher).__name__} has none; use features=bn or auto")
    if which == "blocks" or (which == "auto" and has_stages):
        return stages
    return [m for m in teacher.modules() if isinstance(m, nn.BatchNorm2d)]


def contrastive_loss(local_p: torch.Tensor, global_p: torch.Tensor, n_batch: int, T: float) -> torch.Tensor:
    """CMI's contrastive loss on L2-normalised projections (rows: the batch's images,
    then the bank rows): local row i is the anchor, global row i its positive, the other
    global rows its negatives; the global rows are detached. Mean over the batch's
    anchors plus, if there are bank rows, the mean over theirs."""
    logits = local_p @ global_p.detach().t() / T
    per_anchor = F.cross_entropy(logits, torch.arange(len(logits), device=logits.device), reduction="none")
    loss = per_anchor[:n_batch].mean()
    return loss + per_anchor[n_batch:].mean() if len(per_anchor) > n_batch else loss


@dataclass
class CMIConfig:
    steps: PositiveInt = 20  # generator steps a round; paper: 200 (digits quickstart scale)
    synth_batch: PositiveInt = 128  # images made a round; reference CIFAR runs: 256
    lr_g: PositiveFloat = 1e-3  # Adam (0.5, 0.999) on generator and latents, default-beta Adam on the head (reference)
    nz: PositiveInt = 256  # latent size of the reference generator
    bn: NonNegativeFloat = 1.0  # paper
    oh: NonNegativeFloat = 1.0  # paper
    adv: NonNegativeFloat = 0.5  # paper
    adv_loss: Literal["kl", "js"] = "kl"  # "kl": KL where teacher and student agree (reference code); "js": -JS at adv_T
    adv_T: PositiveFloat = 3.0  # temperature of the "js" variant (as DeepInv's)
    cr: NonNegativeFloat = 0.8  # contrastive weight (paper)
    cr_T: PositiveFloat = 0.2  # temperature of the contrastive loss (paper)
    head_dim: PositiveInt = 256  # the head's output width (reference); its hidden width is the feature width
    bank_size: NonNegativeInt = 4096  # bank rows (an image's two views each); paper 40,960 (CIFAR), scaled to digits
    n_neg: NonNegativeInt = 1024  # negatives drawn from the bank a step; paper 4,096
    local_scale: float = 0.25  # smallest area share of the local view's crop (reference: 0.25-1)
    # Layers whose inputs give the instance feature: "auto" = the 4 stages of a ResNet-18/34
    # teacher (reference, resnet34: fewer, wider features, less memory), else every BN input
    features: Literal["auto", "bn", "blocks"] = "auto"


@register_method
class CMI(Method):
    """Contrastive Model Inversion for Data-Free Knowledge Distillation (Fang et al., IJCAI 2021)."""

    name = "cmi"
    config_cls = CMIConfig
    presets = {
        # Paper CIFAR-10 settings: 200 generator steps a round, batch 256, bank 40,960 with
        # 4,096 negatives, 400 KD steps an epoch, 200 epochs, student lr 0.1, T 20.
        "paper": {"steps": 200, "synth_batch": 256, "bank_size": 40960, "n_neg": 4096, "batch_size": 256,
                  "kd_steps": 400, "epochs": 200, "lr": 0.1, "T": 20.0, "lr_schedule": "reference"},
        # A CPU budget for a small 32x32 pair (resnet20 -> resnet8): a CMI step costs
        # about 1.2 Fast steps (a second teacher view); 20 steps of 64 images a round,
        # 20 rounds: about 10 minutes on 2 free cores (measured before issue 12 with KD
        # batches of 128, 48.47% top-1). KD batches are 64 (80 steps, the same 5,120
        # samples an epoch) since issue 12: a KD batch is never larger than the round's
        # synthesis batch, as in the paper (256 and 256).
        "cpu": {"steps": 20, "synth_batch": 64, "bank_size": 2048, "n_neg": 512, "batch_size": 64,
                "kd_steps": 80, "epochs": 20, "lr": 0.1, "T": 20.0, "eval_every": 4},
        "smoke": {**SMOKE_RUN, "steps": 3, "synth_batch": 16, "bank_size": 64, "n_neg": 16},
    }

    def __init__(self, cfg: CMIConfig, ctx):
        super().__init__(cfg, ctx)
        self.hooks = bn_hooks(ctx.teacher, self.name)
        self.feature_hooks = [InstanceMeanHook(m) for m in feature_layers(ctx.teacher, cfg.features)]
        feature_dim = self.feature_dim()
        self.generator = generator_for(ctx, cfg.nz).train()
        self.head = nn.Sequential(nn.Linear(feature_dim, feature_dim), nn.ReLU(inplace=True),
                                  nn.Linear(feature_dim, cfg.head_dim)).to(ctx.device)
        self.head_optimizer = torch.optim.Adam(self.head.parameters(), lr=cfg.lr_g)
        # A bank row is an earlier image's local and global feature, side by side.
        self.bank = torch.zeros(cfg.bank_size, 2 * feature_dim, device=ctx.device)
        self.bank_count, self.bank_next = 0, 0

    def feature_dim(self) -> int:
        """Width of the instance feature: one probe forward of the teacher."""
        probe = torch.zeros(1, *self.ctx.image_shape, device=self.ctx.device)
        with torch.enable_grad():
            self.ctx.teacher(probe)
        return self.features().shape[1]

    def features(self) -> torch.Tensor:
        return torch.cat([h.instance_mean for h in self.feature_hooks], dim=1)

    def project(self, f: torch.Tensor) -> torch.Tensor:
        return F.normalize(self.head(f), dim=1)

    def synthesize(self, epoch: int) -> tuple[Batch, dict[str, float]]:
        cfg, ctx = self.cfg, self.ctx
        reinit_all(self.generator)
        z = torch.randn(cfg.synth_batch, cfg.nz, device=ctx.device, requires_grad=True)
        targets = random_targets(cfg.synth_batch, ctx.num_classes, ctx.device)
        optimizer = torch.optim.Adam([*self.generator.parameters(), z], lr=cfg.lr_g, betas=(0.5, 0.999))
        use_adv = cfg.adv > 0 and epoch >= ctx.run.warmup_epochs
        best = KeepBest()
        for _ in range(cfg.steps):
            x = ctx.normalizer(self.generator(z))
            terms, bank_f = self.inner_loss(x, targets, use_adv)
            optimizer.zero_grad(set_to_none=True)
            self.head_optimizer.zero_grad(set_to_none=True)
            terms["loss"].backward()
            optimizer.step()
            self.head_optimizer.step()
            best.update(terms, x, bank_f)
        best_x, best_f = best.tensors
        self.add_to_bank(best_f)
        return Batch(best_x, targets), best.logs()

    def inner_loss(self, x: torch.Tensor, targets: torch.Tensor, use_adv: bool):
        """Loss terms of one step on normalised images ``x``, and the features the bank
        keeps of them (local and global, side by side)."""
        cfg, ctx = self.cfg, self.ctx
        view = ctx.augment(x)
        t_out = ctx.teacher(view)
        terms = {"bn": bn_loss(self.hooks), "oh": F.cross_entropy(t_out, targets)}
        global_f = self.features()
        if use_adv:
            s_out = ctx.student(view)
            terms["adv"] = (adversarial_kl_agree(s_out, t_out) if cfg.adv_loss == "kl"
                            else -js_divergence(s_out, t_out, cfg.adv_T))
        else:
            terms["adv"] = t_out.new_zeros(())
        ctx.teacher(ctx.augment(random_resized_crop(x, (cfg.local_scale, 1.0))))
        local_f = self.features()
        bank_f = torch.cat([local_f, global_f], dim=1)
        cached = self.sample_bank(cfg.n_neg)
        rows = bank_f if cached is None else torch.cat([bank_f, cached])
        local_all, global_all = rows.chunk(2, dim=1)
        terms["cr"] = contrastive_loss(self.project(local_all), self.project(global_all), len(x), cfg.cr_T)
        terms["loss"] = (cfg.bn * terms["bn"] + cfg.oh * terms["oh"] + cfg.adv * terms["adv"]
                         + cfg.cr * terms["cr"])
        return terms, bank_f

    # --- memory bank -------------------------------------------------------------
    def sample_bank(self, n: int) -> torch.Tensor | None:
        if not self.bank_count or n <= 0:
            return None
        idx = torch.randperm(self.bank_count, device=self.bank.device)[:n]  # drawn on the bank's device (issue 32)
        return self.bank[idx]

    def add_to_bank(self, features: torch.Tensor) -> None:
        """Ring buffer: the newest features overwrite the oldest once the bank is full
        (``bank_size`` 0: no bank, the other images of the batch are the only negatives)."""
        if not len(self.bank):
            return
        features = features[-len(self.bank):]
        n = len(features)
        idx = (self.bank_next + torch.arange(n)) % len(self.bank)
        self.bank[idx.to(self.bank.device)] = features
        self.bank_next = int((self.bank_next + n) % len(self.bank))
        self.bank_count = min(len(self.bank), self.bank_count + n)

    # --- bookkeeping -------------------------------------------------------------
    def cost_modules(self):
        return {"generator": self.generator}

    def state_dict(self):
        # Only the filled part of the bank: the paper's bank is 40,960 wide features.
        return {"head": self.head.state_dict(), "head_optimizer": self.head_optimizer.state_dict(),
                "bank": self.bank[:self.bank_count].clone(), "bank_next": self.bank_next}

    def load_state_dict(self, state):
        self.head.load_state_dict(state["head"])
        self.head_optimizer.load_state_dict(state["head_optimizer"])
        self.bank_count, self.bank_next = len(state["bank"]), state["bank_next"]
        self.bank[:self.bank_count] = state["bank"].to(self.bank.device)
