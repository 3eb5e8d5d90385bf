"""Small CNNs for the embedded ``digits`` data set (16x16 grey images): they train in
seconds on a laptop CPU yet carry BatchNorm layers, which every inversion method
needs for its BN-statistics loss."""
from __future__ import annotations

import torch
from torch import nn
import torch.nn.functional as F

from ..registry import MODELS


class SmallCNN(nn.Module):
    def __init__(self, widths: tuple[int, ...], num_classes: int, in_channels: int = 1):
        super().__init__()
        layers: list[nn.Module] = []
        c = in_channels
        for i, w in enumerate(widths):
            layers += [nn.Conv2d(c, w, 3, padding=1, bias=False), nn.BatchNorm2d(w), nn.ReLU(inplace=True)]
            if i < len(widths) - 1:
                layers.append(nn.MaxPool2d(2))
            c = w
        self.features = nn.Sequential(*layers)
        self.fc = nn.Linear(c, num_classes)

    def forward(self, x: torch.Tensor, return_features: bool = False):
        f = F.adaptive_avg_pool2d(self.features(x), 1).flatten(1)
        logits = self.fc(f)
        return (logits, f) if return_features else logits


@MODELS.register("cnn_m")
def cnn_m(num_classes: int = 10, in_channels: int = 1) -> nn.Module:
    """Teacher for ``digits``: three conv-BN-ReLU stages, widths 32-64-128."""
    return SmallCNN((32, 64, 128), num_classes, in_channels)


@MODELS.register("cnn_s")
def cnn_s(num_classes: int = 10, in_channels: int = 1) -> nn.Module:
    """Student for ``digits``: widths 8-16-32, about 1/16 of the teacher's parameters."""
    return SmallCNN((8, 16, 32), num_classes, in_channels)
