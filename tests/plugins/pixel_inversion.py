"""An outside plugin written from the README (issue 30's reproduction of the bf16 cast
cache): class-balanced pixel inversion. A leaf ``x`` is optimised by Adam inside one
``synthesize`` call and fed straight to ``ctx.teacher(x)``, so a cast cache that outlives
one forward freezes it. Loaded with ``--plugin tests.plugins.pixel_inversion``."""
from __future__ import annotations

from dataclasses import dataclass

import torch
import torch.nn.functional as F

from dfkd_bench.inversion import bn_hooks, bn_loss, total_variation
from dfkd_bench.method import SMOKE_RUN, Batch, Method, register_method
from dfkd_bench.registry import METHODS


@dataclass
class PixelInversionConfig:
    steps: int = 100  # Adam steps on the pixels (issue 30's reproduction)
    lr_x: float = 0.1
    synth_batch: int = 128
    bn: float = 0.1  # weight of inversion.bn_loss
    tv: float = 0.001  # weight of the total-variation prior


class PixelInversion(Method):
    """Class-balanced pixel inversion (a test plugin)."""

    name = "pixel_inversion"
    config_cls = PixelInversionConfig
    presets = {"smoke": {**SMOKE_RUN, "epochs": 1, "steps": 30, "synth_batch": 32}}

    def __init__(self, cfg, ctx):
        super().__init__(cfg, ctx)
        self.hooks = bn_hooks(ctx.teacher, self.name)

    def synthesize(self, epoch):
        cfg, ctx = self.cfg, self.ctx
        targets = torch.arange(cfg.synth_batch, device=ctx.device) % ctx.num_classes
        x = torch.randn(cfg.synth_batch, *ctx.image_shape, device=ctx.device, requires_grad=True)
        opt = torch.optim.Adam([x], lr=cfg.lr_x)
        first = None
        for _ in range(cfg.steps):
            t_out = ctx.teacher(x)
            ce = F.cross_entropy(t_out, targets)
            loss = ce + cfg.bn * bn_loss(self.hooks) + cfg.tv * total_variation(x)
            opt.zero_grad(set_to_none=True)
            loss.backward()
            opt.step()
            first = ce.item() if first is None else first
        with torch.no_grad():
            agree = (ctx.teacher(x).argmax(1) == targets).float().mean().item()
        return Batch(x.detach(), targets), {"ce_first": first, "ce": ce.item(), "agree": agree}


if PixelInversion.name not in METHODS:
    register_method(PixelInversion)
