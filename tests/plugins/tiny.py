"""A test plugin: a tiny random data set (registered as ``tiny``), a method that
diverges on purpose and one that stops itself with SIGTERM. Loaded with
``--plugin tests.plugins.tiny`` like any outside plugin."""
from __future__ import annotations

import os
import signal
import time
from dataclasses import dataclass
from typing import Literal

import torch

from dfkd_bench.data import DataBundle
from dfkd_bench.method import Batch, Method, register_method
from dfkd_bench.registry import DATASETS, METHODS


def tiny_bundle(name: str = "tiny", root=None, download: bool = False) -> DataBundle:
    """64 training and 32 test 8x8 grey images of 4 classes; class c brightens row
    block c, so a teacher can learn it in a few steps."""
    g = torch.Generator().manual_seed(1234)

    def make(n: int):
        labels = torch.arange(n) % 4
        x = torch.rand(n, 1, 8, 8, generator=g) * 0.3
        for i, c in enumerate(labels.tolist()):
            x[i, :, 2 * c:2 * c + 2, :] += 0.6
        return (x.clamp(0, 1) * 255).to(torch.uint8), labels

    xtr, ytr = make(64)
    xte, yte = make(32)
    return DataBundle(name="tiny", train_images=xtr, train_labels=ytr, test_images=xte, test_labels=yte,
                      num_classes=4, mean=(0.35,), std=(0.3,), crop_padding=1, flip=False)


if "tiny" not in DATASETS:
    DATASETS.register("tiny", tiny_bundle)


@dataclass
class DivergeConfig:
    at_epoch: int = 1  # the first epoch whose loss is NaN
    # what turns NaN: the distillation loss, or the synthesis round's logged loss or its images
    where: Literal["distillation", "synthesis-loss", "synthesis-images"] = "distillation"


class Diverging(Method):
    """A method whose loss becomes NaN at a given epoch (tests the failure path)."""

    name = "diverging"
    config_cls = DivergeConfig

    def synthesize(self, epoch):
        self.epoch = epoch
        images = torch.randn(8, *self.ctx.image_shape, device=self.ctx.device)
        late = epoch >= self.cfg.at_epoch
        if late and self.cfg.where == "synthesis-images":
            images[0, 0, 0, 0] = float("inf")
        return Batch(images), {"loss": float("nan") if late and self.cfg.where == "synthesis-loss" else 1.0}

    def distill_loss(self, batch):
        losses = super().distill_loss(batch)
        if self.epoch >= self.cfg.at_epoch and self.cfg.where == "distillation":
            losses["loss"] = losses["loss"] * float("nan")
        return losses


@dataclass
class TermConfig:
    at_epoch: int = 1  # the epoch in which the process receives SIGTERM, once


class SelfTerminating(Method):
    """KD on noise that sends SIGTERM to its own process once, in a given epoch (tests
    that a run stopped by ``kill`` or a scheduler is recorded as interrupted)."""

    name = "self_terminating"
    config_cls = TermConfig
    sent = False

    def synthesize(self, epoch):
        if epoch == self.cfg.at_epoch and not SelfTerminating.sent:
            SelfTerminating.sent = True
            os.kill(os.getpid(), signal.SIGTERM)
        return Batch(torch.randn(8, *self.ctx.image_shape, device=self.ctx.device)), {}


@dataclass
class SleepConfig:
    sleep: float = 0.3  # seconds each synthesis round waits


class Sleepy(Method):
    """KD on noise that takes its time, so a test can stop a process mid-run (the sleep
    draws no random numbers: the run's result does not depend on it)."""

    name = "sleepy"
    config_cls = SleepConfig

    def synthesize(self, epoch):
        time.sleep(self.cfg.sleep)
        return Batch(torch.randn(8, *self.ctx.image_shape, device=self.ctx.device)), {}


for _cls in (Diverging, SelfTerminating, Sleepy):
    if _cls.name not in METHODS:
        register_method(_cls)
