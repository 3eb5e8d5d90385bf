"""Towards Effective Data-Free Knowledge Distillation via Diverse Diffusion Augmentation
(DDA; Li et al., ACM MM 2024).

Three stages, each switchable:

1. **Inversion**: CMI's contrastive inversion (``methods/cmi.py``: a generator
   re-initialised every round, BN-statistics + one-hot + adversarial + contrastive
   terms), plus the released code's self-supervised auxiliary task: a small MLP head on
   the student's penultimate features predicts rotation x class (4C labels; one random
   rotation of 0/90/180/270 degrees per image). The head is trained with the student by
   the harness (``student_modules``) on detached features, so the student's own loss is
   the released code's; the generator, from the round the adversarial term starts,
   maximises the head's loss (weight ``ss``): images whose rotation and class the
   student's features cannot tell apart. (REFERENCE.md says "trained adversarially";
   this is our reading of which side maximises.)
2. **Augmentation** of each round's images by the harness's ``augmented`` feed with the
   augmenter this method names (``augment``): a diffusion pipeline
   (``StableDiffusionImageVariationPipeline``, the paper's linked model, or
   ``StableDiffusionImg2ImgPipeline`` for SD-2 weights) from a local directory
   (``model``), ``k`` outputs an image; or RandAugment (``classical``); or none.
3. **Filtering**: an augmentation is kept if the cosine similarity between the teacher's
   penultimate features of it and of its source is at least ``tau`` (0.75, the paper's).
   Each round logs the kept fraction and the similarity quantiles.

Distillation on originals and kept augmentations, with the released code's student
loss: ``kl`` * KL at T + ``ce`` * CE on the synthesis labels + ``align`` * MSE between the
teacher's penultimate features and the student's through a linear alignment head
(trained with the student by the harness).

Not published, so chosen here and documented per preset: diffusion steps, strength,
guidance, ``k`` and which features the filter compares (the teacher's penultimate ones).
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Literal

import torch
import torch.nn.functional as F
from torch import nn

from dfkd_bench.augment import ClassicalAugmenter, DiffusionAugmenter, check_model, require_diffusers
from dfkd_bench.config import NonNegativeFloat, NonNegativeInt, PositiveFloat, PositiveInt
from dfkd_bench.errors import UserError
from dfkd_bench.inversion import kd_loss
from dfkd_bench.method import AUGMENTED, Batch, register_method

from .cmi import CMI, CMIConfig

QUANTILES = (0.1, 0.25, 0.5, 0.75, 0.9)


class PenultimateTap:
    """Keeps the input of a model's last ``nn.Linear`` (its penultimate features) from
    every forward."""

    def __init__(self, model: nn.Module, who: str):
        linears = [m for m in model.modules() if isinstance(m, nn.Linear)]
        if not linears:
            raise UserError(f"dda: {who} {type(model).__name__} has no nn.Linear classifier whose input could serve "
                            "as penultimate features")
        self.width = linears[-1].in_features
        self.value: torch.Tensor | None = None
        linears[-1].register_forward_hook(self._hook)

    def _hook(self, module, inputs, output):
        self.value = inputs[0].flatten(1).float()

    def __call__(self, model: nn.Module, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """(logits, penultimate features) of ``model`` on ``x``."""
        out = model(x)
        return out, self.value


def rotate_batch(x: torch.Tensor, rotations: torch.Tensor) -> torch.Tensor:
    """Each image turned by ``rotations[i]`` x 90 degrees (square images). Selected with
    ``torch.where`` from the batch turned each way, not by boolean-mask indexing, whose
    shape depends on the mask: on CUDA that read the mask back to the host three times
    a call (issue 32)."""
    out = x
    for r in range(1, 4):
        out = torch.where((rotations == r).view(-1, *([1] * (x.dim() - 1))), torch.rot90(x, r, dims=(2, 3)), out)
    return out


def cosine_keep(source_f: torch.Tensor, augmented_f: torch.Tensor, k: int, tau: float
                ) -> tuple[torch.Tensor, torch.Tensor]:
    """(mask, similarities): augmentation j of source j // k is kept where the cosine
    similarity of its features to its source's is at least ``tau``."""
    sims = F.cosine_similarity(augmented_f.float(), source_f.float().repeat_interleave(k, dim=0), dim=1)
    return sims >= tau, sims


@dataclass
class DDAConfig(CMIConfig):
    # Self-supervised rotation x class head (released code): generator weight; 0 switches
    # the head off (no head, no rotated forwards).
    ss: NonNegativeFloat = 0.5
    # Augmentation: "diffusion" (a diffusers pipeline from `model`), "classical"
    # (RandAugment in its place) or "none" (the no-aug ablation).
    augment: Literal["diffusion", "classical", "none"] = "diffusion"
    model: str = ""  # local diffusers pipeline directory (a hub id only where the hub is reachable)
    pipeline: Literal["variation", "img2img"] = "variation"
    k: PositiveInt = 2  # augmentations per synthetic image (not published)
    diffusion_steps: PositiveInt = 25  # denoising steps (not published)
    guidance: NonNegativeFloat = 3.0  # classifier-free guidance (the variation model's card uses 3)
    strength: PositiveFloat = 0.5  # img2img only: how far the source is noised (not published)
    prompt: str = "a photo of a {label}"  # img2img only; {label} is the class name
    diffusion_batch: PositiveInt = 16  # source images per pipeline call
    diffusion_dtype: Literal["auto", "fp32", "fp16", "bf16"] = "auto"  # auto: fp16 on CUDA, fp32 on the CPU
    randaugment_ops: PositiveInt = 2
    randaugment_magnitude: NonNegativeInt = 9
    # Filter: keep an augmentation if cos(teacher features) with its source >= tau.
    filter: bool = True
    tau: float = 0.75  # paper
    # Student terms (released code): KL at T, CE on synthesis labels, feature alignment MSE.
    kl: NonNegativeFloat = 1.0
    ce: NonNegativeFloat = 1.0
    align: NonNegativeFloat = 30.0


CMI_PAPER = CMI.presets["paper"]
CMI_CPU = CMI.presets["cpu"]


@register_method
class DDA(CMI):
    """Data-free KD via Diverse Diffusion Augmentation (Li et al., ACM MM 2024)."""

    name = "dda"
    config_cls = DDAConfig
    mode = AUGMENTED
    presets = {
        # CIFAR-10 wrn40_2 -> wrn16_1, CMI's inversion budget, the linked image-variation
        # model; k, steps and guidance are this project's choice (not published).
        "paper": {**CMI_PAPER, "augment": "diffusion", "pipeline": "variation", "k": 2},
        "no-aug": {**CMI_PAPER, "augment": "none"},
        "no-filter": {**CMI_PAPER, "augment": "diffusion", "filter": False},
        "classical": {**CMI_PAPER, "augment": "classical"},
        # The CPU pairs: CMI's cpu budget; RandAugment stands in for diffusion, since no
        # diffusion model runs at CPU speed (a 512 px SD UNet step per image takes
        # seconds); tables name the augmentation ("dda-cpu [RandAugment x1]").
        "cpu": {**CMI_CPU, "augment": "classical", "k": 1},
        "no-aug-cpu": {**CMI_CPU, "augment": "none"},
        "smoke": {**CMI.presets["smoke"], "augment": "classical", "k": 1},
    }

    @classmethod
    def check_config(cls, run, cfg: DDAConfig) -> None:
        if not -1.0 <= cfg.tau <= 1.0:
            raise UserError(f"dda: tau={cfg.tau}; expected a cosine similarity from -1 to 1")
        if cfg.augment == "diffusion":
            require_diffusers()
            check_model(cfg.model)

    def __init__(self, cfg: DDAConfig, ctx):
        super().__init__(cfg, ctx)
        self.teacher_tap = PenultimateTap(ctx.teacher, "teacher")
        self.student_tap = PenultimateTap(ctx.student, "student")
        c = ctx.num_classes
        s_width = self.student_tap.width
        self.align_head = nn.Linear(s_width, self.teacher_tap.width).to(ctx.device)
        self.rotation_head = (nn.Sequential(nn.Linear(s_width, s_width), nn.ReLU(inplace=True),
                                            nn.Linear(s_width, 4 * c)).to(ctx.device) if cfg.ss > 0 else None)

    # --- the harness's contract ------------------------------------------------------
    def student_modules(self) -> dict[str, nn.Module]:
        heads = {"align_head": self.align_head} if self.cfg.align > 0 else {}
        if self.rotation_head is not None:
            heads["rotation_head"] = self.rotation_head
        return heads

    def make_augmenter(self):
        cfg = self.cfg
        if cfg.augment == "none":
            return None
        if cfg.augment == "classical":
            return ClassicalAugmenter(cfg.k, cfg.randaugment_ops, cfg.randaugment_magnitude)
        return DiffusionAugmenter(cfg.model, cfg.pipeline, cfg.k, self.ctx.device, cfg.diffusion_steps, cfg.guidance,
                                  cfg.strength, cfg.prompt, cfg.diffusion_batch, cfg.diffusion_dtype)

    def variant(self) -> str:
        cfg = self.cfg
        if cfg.augment == "none":
            return "no augmentation"
        what = "RandAugment" if cfg.augment == "classical" else f"diffusion {cfg.pipeline}"
        return f"{what} x{cfg.k}" + ("" if cfg.filter else ", unfiltered")

    # --- inversion -------------------------------------------------------------------
    def rotation_targets(self, n: int, classes: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        rotations = torch.randint(4, (n,), device=classes.device)  # drawn where it is used (issue 32)
        return rotations, rotations * self.ctx.num_classes + classes

    def rotation_loss(self, x: torch.Tensor, classes: torch.Tensor, detach: bool) -> torch.Tensor:
        """CE of the rotation x class head on the student's features of ``x`` turned by
        one random rotation each (features detached when ``detach``)."""
        rotations, labels = self.rotation_targets(len(x), classes)
        with torch.set_grad_enabled(torch.is_grad_enabled() and not detach):
            _, feats = self.student_tap(self.ctx.student, rotate_batch(x, rotations))
        return F.cross_entropy(self.rotation_head(feats).float(), labels)

    def inner_loss(self, x: torch.Tensor, targets: torch.Tensor, use_adv: bool):
        terms, bank_f = super().inner_loss(x, targets, use_adv)
        if self.rotation_head is not None and use_adv:
            # The generator maximises the head's loss; the head is not stepped here.
            terms["ss"] = -self.rotation_loss(x, targets, detach=False)
            terms["loss"] = terms["loss"] + self.cfg.ss * terms["ss"]
        return terms, bank_f

    # --- augmentation filter --------------------------------------------------------
    @torch.no_grad()
    def filter_augmentations(self, sources: torch.Tensor, augmented: torch.Tensor, k: int):
        cfg = self.cfg
        if not cfg.filter:
            return torch.ones(len(augmented), dtype=torch.bool, device=augmented.device), {}
        _, src_f = self.teacher_tap(self.ctx.teacher, sources)
        _, aug_f = self.teacher_tap(self.ctx.teacher, augmented)
        keep, sims = cosine_keep(src_f, aug_f, k, cfg.tau)
        q = torch.quantile(sims, torch.tensor(QUANTILES, device=sims.device)).tolist()
        return keep, {f"sim_q{int(p * 100):02d}": v for p, v in zip(QUANTILES, q)}

    # --- distillation ----------------------------------------------------------------
    def distill_loss(self, batch: Batch) -> dict[str, torch.Tensor]:
        cfg, ctx = self.cfg, self.ctx
        with torch.no_grad():
            t_out, t_f = self.teacher_tap(ctx.teacher, batch.images)
        s_out, s_f = self.student_tap(ctx.student, batch.images)
        terms = {"kd": kd_loss(s_out, t_out, ctx.run.T)}
        loss = cfg.kl * terms["kd"]
        labels = batch.labels if batch.labels is not None else t_out.argmax(1)
        if cfg.ce > 0:
            terms["ce"] = F.cross_entropy(s_out, labels)
            loss = loss + cfg.ce * terms["ce"]
        if cfg.align > 0:
            terms["align"] = F.mse_loss(self.align_head(s_f).float(), t_f.float())
            loss = loss + cfg.align * terms["align"]
        if self.rotation_head is not None:
            # The head learns on the student's detached features (eval-mode forward: the
            # rotated images leave the student's BN statistics alone).
            ctx.student.eval()
            terms["ss_head"] = self.rotation_loss(batch.images, labels, detach=True)
            ctx.student.train()
            loss = loss + terms["ss_head"]
        return {"loss": loss, **{k: v.detach() for k, v in terms.items()}}
