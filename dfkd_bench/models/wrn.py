"""Wide ResNets (Zagoruyko & Komodakis, 2016) in the layout of the shared CIFAR
teachers: ``conv1``, ``block{1,2,3}.layer.{i}.*``, ``convShortcut``, ``bn1``, ``fc``."""
from __future__ import annotations

import torch
from torch import nn
import torch.nn.functional as F

from ..registry import MODELS


class WideBasicBlock(nn.Module):
    """Pre-activation unit. When the width changes, the shortcut sees the
    pre-activated input (BN-ReLU before the 1x1 conv), as in the reference code
    the public checkpoints were trained with."""

    def __init__(self, in_planes: int, out_planes: int, stride: int):
        super().__init__()
        self.bn1 = nn.BatchNorm2d(in_planes)
        self.relu1 = nn.ReLU(inplace=True)
        self.conv1 = nn.Conv2d(in_planes, out_planes, 3, stride=stride, padding=1, bias=False)
        self.bn2 = nn.BatchNorm2d(out_planes)
        self.relu2 = nn.ReLU(inplace=True)
        self.conv2 = nn.Conv2d(out_planes, out_planes, 3, stride=1, padding=1, bias=False)
        self.equal_in_out = in_planes == out_planes
        self.convShortcut = None if self.equal_in_out else nn.Conv2d(
            in_planes, out_planes, 1, stride=stride, bias=False)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        act = self.relu1(self.bn1(x))
        out = self.conv2(self.relu2(self.bn2(self.conv1(act))))
        return out + (x if self.equal_in_out else self.convShortcut(act))


class NetworkBlock(nn.Module):
    def __init__(self, n: int, in_planes: int, out_planes: int, stride: int):
        super().__init__()
        self.layer = nn.Sequential(*[
            WideBasicBlock(in_planes if i == 0 else out_planes, out_planes, stride if i == 0 else 1)
            for i in range(n)])

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.layer(x)


class WideResNet(nn.Module):
    def __init__(self, depth: int, widen_factor: int, num_classes: int = 10, in_channels: int = 3):
        super().__init__()
        if (depth - 4) % 6:
            raise ValueError(f"WideResNet depth must be 6n+4, got {depth}")
        n = (depth - 4) // 6
        ch = [16, 16 * widen_factor, 32 * widen_factor, 64 * widen_factor]
        self.conv1 = nn.Conv2d(in_channels, ch[0], 3, stride=1, padding=1, bias=False)
        self.block1 = NetworkBlock(n, ch[0], ch[1], 1)
        self.block2 = NetworkBlock(n, ch[1], ch[2], 2)
        self.block3 = NetworkBlock(n, ch[2], ch[3], 2)
        self.bn1 = nn.BatchNorm2d(ch[3])
        self.relu = nn.ReLU(inplace=True)
        self.fc = nn.Linear(ch[3], num_classes)
        for m in self.modules():
            if isinstance(m, nn.Conv2d):
                nn.init.kaiming_normal_(m.weight, mode="fan_out", nonlinearity="relu")
            elif isinstance(m, nn.BatchNorm2d):
                nn.init.ones_(m.weight)
                nn.init.zeros_(m.bias)
            elif isinstance(m, nn.Linear):
                nn.init.zeros_(m.bias)

    def forward(self, x: torch.Tensor, return_features: bool = False):
        out = self.block3(self.block2(self.block1(self.conv1(x))))
        out = self.relu(self.bn1(out))
        # Adaptive pooling equals the reference avg_pool2d(8) at 32x32 and also serves 16x16.
        f = F.adaptive_avg_pool2d(out, 1).flatten(1)
        logits = self.fc(f)
        return (logits, f) if return_features else logits


@MODELS.register("wrn16_1")
def wrn16_1(num_classes: int = 10, in_channels: int = 3) -> nn.Module:
    """WRN-16-1 (0.18M parameters at C=10), a small student."""
    return WideResNet(16, 1, num_classes, in_channels)


@MODELS.register("wrn16_2")
def wrn16_2(num_classes: int = 10, in_channels: int = 3) -> nn.Module:
    """WRN-16-2 (0.69M parameters at C=10)."""
    return WideResNet(16, 2, num_classes, in_channels)


@MODELS.register("wrn40_1")
def wrn40_1(num_classes: int = 10, in_channels: int = 3) -> nn.Module:
    """WRN-40-1 (0.56M parameters at C=10)."""
    return WideResNet(40, 1, num_classes, in_channels)


@MODELS.register("wrn40_2")
def wrn40_2(num_classes: int = 10, in_channels: int = 3) -> nn.Module:
    """WRN-40-2 (2.2M parameters at C=10), the usual WRN teacher."""
    return WideResNet(40, 2, num_classes, in_channels)
