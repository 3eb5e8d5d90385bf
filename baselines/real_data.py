"""Baselines that see the real training data: the student trained from scratch, and
vanilla KD on real images (with ``--data-scale N``, a class-balanced random subset of
N images: the "original samples at the same data scale" comparison of SSD-KD, Fig. 1)."""
from __future__ import annotations

from dataclasses import dataclass

import torch

from dfkd_bench.config import NonNegativeFloat
from dfkd_bench.inversion import kd_loss
from dfkd_bench.method import REAL, SMOKE_RUN, Batch, Method, register_method

# Segmentation presets (issue 34, Table 3 of the SSD-KD paper) are named after the data set
# they are set for, ``nyuv2`` and ``shapes``, in every method: ``paper`` and ``cpu`` keep their
# classification (CIFAR) meaning, and a segmentation run's pair, resolution and class count
# follow its data set, so the set's name says what the preset is for and collides with no
# classification preset. Fast's variants add it to theirs (``fast10-nyuv2``).
#
# NYUv2 (795 train images at 128 x 128, deeplabv3_r50 -> deeplabv3_mbv2): the supervised recipe
# of DFAD's NYUv2 scripts (VainF/Data-Free-Adversarial-Distillation, README and
# train_teacher_seg.py: batch 16, SGD lr 0.05, momentum 0.9, weight decay 5e-4, 200 epochs),
# the only published NYUv2 recipe of the references; Table 3's Student and KD rows give none.
# Their StepLR (x0.1 at 100 epochs) is replaced by the harness's cosine (a choice). KD keeps the
# run's T (20, as every KD loss of the suite's data-free rows; the papers do not give one).
_NYUV2 = {"epochs": 200, "batch_size": 16, "lr": 0.05, "weight_decay": 5e-4}
# shapes (2,000 train images at 32 x 32, segnet_m -> segnet_s): a choice, about a minute on one
# CPU core: 8 epochs of 32 steps of 64.
_SHAPES = {"epochs": 8, "batch_size": 64, "lr": 0.05, "weight_decay": 5e-4, "eval_every": 4}


@register_method
class Scratch(Method):
    """Deep Residual Learning for Image Recognition (He et al., CVPR 2016): the student
    trained on labelled real data: the reference row every distilled student is read against."""

    name = "scratch"
    mode = REAL
    tasks = ("classification", "segmentation")
    data_scale_means = "a class-balanced subset of that many real images"
    presets = {
        # The teacher zoo's CIFAR recipe applied to the student (Table rows "Student").
        "paper": {"epochs": 200, "batch_size": 128, "lr": 0.1, "weight_decay": 5e-4},
        "cpu": {"epochs": 15, "batch_size": 128},
        "nyuv2": _NYUV2,  # Table 3's "Student" row (see _NYUV2)
        "shapes": _SHAPES,
        "smoke": SMOKE_RUN,
    }

    def distill_loss(self, batch: Batch) -> dict[str, torch.Tensor]:
        loss = self.ctx.task.loss(self.ctx.student(batch.images), batch.labels)
        return {"loss": loss, "ce": loss.detach()}


@dataclass
class KDConfig:
    ce: NonNegativeFloat = 0.0  # weight of the hard-label CE term; 0 = pure KD, as the DFKD papers' "KD" rows


@register_method
class KD(Method):
    """Distilling the Knowledge in a Neural Network (Hinton et al., NeurIPS-W 2015):
    ``KL(teacher/T || student/T) * T^2`` on real training images; for segmentation per
    pixel, averaged over pixels (``kd_loss`` reads N x C x H x W logits so)."""

    name = "kd"
    mode = REAL
    tasks = ("classification", "segmentation")
    data_scale_means = "a class-balanced subset of that many real images"
    config_cls = KDConfig
    presets = {
        "paper": {"epochs": 200, "batch_size": 128, "lr": 0.1},
        "cpu": {"epochs": 15, "batch_size": 128},
        "nyuv2": _NYUV2,  # Table 3's "KD" row on the 795 real train images (see _NYUV2)
        "shapes": _SHAPES,
        "smoke": SMOKE_RUN,
    }

    def distill_loss(self, batch: Batch) -> dict[str, torch.Tensor]:
        with torch.no_grad():
            t = self.ctx.teacher(batch.images)
        s = self.ctx.student(batch.images)
        kd = kd_loss(s, t, self.ctx.run.T)
        losses = {"loss": kd, "kd": kd.detach()}
        if self.cfg.ce > 0:
            ce = self.ctx.task.loss(s, batch.labels)
            losses.update(loss=kd + self.cfg.ce * ce, ce=ce.detach())
        return losses
