"""Distilling the Knowledge in a Neural Network (Hinton et al., NeurIPS-W 2015), on noise.

The floor every data-free method must clear: KD at the run's T on Gaussian noise,
N(0, std^2) in the models' normalised space, clamped to the range that [0,1] pixels
map to. Online mode: a fresh noise batch for every student step, so the student never
sees the same input twice (the strongest form of the baseline, at no synthesis cost);
a fixed pool of noise would only make the floor lower.

Segmentation: the same floor, distilled per pixel (the harness's KD over every pixel); nothing
in it is class-based. Its ``nyuv2`` and ``shapes`` presets take DFAD's student budget of the
same name, so Table 3's online rows have their floor at equal steps.
"""
from __future__ import annotations

from dataclasses import dataclass

import torch

from dfkd_bench.config import PositiveFloat
from dfkd_bench.method import ONLINE, SMOKE_RUN, Batch, Method, register_method


@dataclass
class NoiseConfig:
    std: PositiveFloat = 1.0  # noise scale in the normalised space (chosen: DeepInv's N(0,1) initialisation)


@register_method
class Noise(Method):
    name = "noise"
    tasks = ("classification", "segmentation")
    mode = ONLINE
    config_cls = NoiseConfig
    presets = {
        # No published settings: the same student budget as the reference CIFAR runs of
        # the online methods (batch 256, lr 0.1, 200 epochs of 400 steps, T 20).
        "paper": {"epochs": 200, "kd_steps": 400, "batch_size": 256, "lr": 0.1, "T": 20.0,
                  "lr_schedule": "reference"},
        # The student-step budget of the zskt/dfq cpu presets (about 5 minutes for
        # wrn16_2->wrn16_1 at 32x32 on 2 CPU cores: no generator to run).
        "cpu": {"epochs": 10, "kd_steps": 70, "batch_size": 128, "eval_every": 2},
        # DFAD's Table 3 student budgets (methods/adversarial.py), without its generator
        "nyuv2": {"epochs": 300, "kd_steps": 250, "batch_size": 64, "lr": 0.1, "weight_decay": 5e-5},
        "shapes": {"epochs": 8, "kd_steps": 15, "batch_size": 64, "lr": 0.1, "weight_decay": 5e-5, "eval_every": 4},
        "smoke": SMOKE_RUN,
    }

    def synthesize(self, epoch: int) -> tuple[Batch, dict[str, float]]:
        ctx = self.ctx
        x = torch.randn(ctx.run.batch_size, *ctx.image_shape, device=ctx.device) * self.cfg.std
        return Batch(ctx.normalizer.clamp(x)), {}
