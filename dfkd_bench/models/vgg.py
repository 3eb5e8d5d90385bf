"""VGG-11 with BatchNorm in the CIFAR layout of the CRD / Fast-Datafree repositories,
whose checkpoints are the shared vgg11 teachers.

Each ``blockK`` is ``conv, BN, ReLU, conv, BN`` (the block's last ReLU is applied in
``forward``, as in those repositories); ``pool3`` only runs for 64x64 inputs, so a
32x32 image reaches ``block4`` at 4x4; ``pool4`` is a global average pool.
"""
from __future__ import annotations

import torch
from torch import nn
import torch.nn.functional as F

from ..registry import MODELS

_CFG11 = ((64,), (128,), (256, 256), (512, 512), (512, 512))


def _make_block(widths: tuple[int, ...], in_channels: int) -> nn.Sequential:
    layers: list[nn.Module] = []
    for w in widths:
        layers += [nn.Conv2d(in_channels, w, 3, padding=1), nn.BatchNorm2d(w), nn.ReLU(inplace=True)]
        in_channels = w
    # Dropping the trailing ReLU keeps the indices (conv 0/3, BN 1/4) of the public files.
    return nn.Sequential(*layers[:-1])


class VGG(nn.Module):
    def __init__(self, cfg=_CFG11, num_classes: int = 10, in_channels: int = 3):
        super().__init__()
        c = in_channels
        for k, widths in enumerate(cfg):
            setattr(self, f"block{k}", _make_block(widths, c))
            c = widths[-1]
        self.pool0 = nn.MaxPool2d(2, 2)
        self.pool1 = nn.MaxPool2d(2, 2)
        self.pool2 = nn.MaxPool2d(2, 2)
        self.pool3 = nn.MaxPool2d(2, 2)
        self.pool4 = nn.AdaptiveAvgPool2d(1)
        self.classifier = nn.Linear(c, num_classes)
        for m in self.modules():
            if isinstance(m, nn.Conv2d):
                nn.init.kaiming_normal_(m.weight, mode="fan_out", nonlinearity="relu")
                nn.init.zeros_(m.bias)
            elif isinstance(m, nn.BatchNorm2d):
                nn.init.ones_(m.weight)
                nn.init.zeros_(m.bias)
            elif isinstance(m, nn.Linear):
                nn.init.normal_(m.weight, 0, 0.01)
                nn.init.zeros_(m.bias)

    def forward(self, x: torch.Tensor, return_features: bool = False):
        h = x.shape[2]
        x = self.pool0(F.relu(self.block0(x)))
        x = self.pool1(F.relu(self.block1(x)))
        x = self.pool2(F.relu(self.block2(x)))
        x = F.relu(self.block3(x))
        if h == 64:
            x = self.pool3(x)
        x = F.relu(self.block4(x))
        f = self.pool4(x).flatten(1)
        logits = self.classifier(f)
        return (logits, f) if return_features else logits


@MODELS.register("vgg11")
def vgg11(num_classes: int = 10, in_channels: int = 3) -> nn.Module:
    """VGG-11 with BN for CIFAR (9.2M parameters at C=10), a common teacher."""
    return VGG(_CFG11, num_classes, in_channels)
