"""CIFAR ResNets: resnet18/34/50 (the widely shared teacher/student layout) and the
small resnet8/20/32 of He et al. (2016).

Key names follow the public CIFAR checkpoints (``conv1``, ``bn1``, ``layerK.i.*``,
``shortcut.0/.1``, ``linear``) so those files load with ``strict=True``.
"""
from __future__ import annotations

import torch
from torch import nn
import torch.nn.functional as F

from ..registry import MODELS


def _shortcut(in_planes: int, out_planes: int, stride: int) -> nn.Sequential:
    """Identity (empty Sequential, no keys) unless shape changes, then 1x1 conv + BN."""
    if stride == 1 and in_planes == out_planes:
        return nn.Sequential()
    return nn.Sequential(
        nn.Conv2d(in_planes, out_planes, 1, stride=stride, bias=False),
        nn.BatchNorm2d(out_planes),
    )


class BasicBlock(nn.Module):
    expansion = 1

    def __init__(self, in_planes: int, planes: int, stride: int = 1):
        super().__init__()
        self.conv1 = nn.Conv2d(in_planes, planes, 3, stride=stride, padding=1, bias=False)
        self.bn1 = nn.BatchNorm2d(planes)
        self.conv2 = nn.Conv2d(planes, planes, 3, stride=1, padding=1, bias=False)
        self.bn2 = nn.BatchNorm2d(planes)
        self.shortcut = _shortcut(in_planes, planes, stride)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        out = F.relu(self.bn1(self.conv1(x)))
        out = self.bn2(self.conv2(out))
        return F.relu(out + self.shortcut(x))


class Bottleneck(nn.Module):
    expansion = 4

    def __init__(self, in_planes: int, planes: int, stride: int = 1):
        super().__init__()
        out_planes = planes * self.expansion
        self.conv1 = nn.Conv2d(in_planes, planes, 1, bias=False)
        self.bn1 = nn.BatchNorm2d(planes)
        self.conv2 = nn.Conv2d(planes, planes, 3, stride=stride, padding=1, bias=False)
        self.bn2 = nn.BatchNorm2d(planes)
        self.conv3 = nn.Conv2d(planes, out_planes, 1, bias=False)
        self.bn3 = nn.BatchNorm2d(out_planes)
        self.shortcut = _shortcut(in_planes, out_planes, stride)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        out = F.relu(self.bn1(self.conv1(x)))
        out = F.relu(self.bn2(self.conv2(out)))
        out = self.bn3(self.conv3(out))
        return F.relu(out + self.shortcut(x))


class CifarResNet(nn.Module):
    """3x3 stride-1 stem without max-pool (32x32 inputs), then one stage per width;
    every stage after the first halves the resolution."""

    def __init__(self, block: type[nn.Module], num_blocks: tuple[int, ...],
                 widths: tuple[int, ...], num_classes: int = 10, in_channels: int = 3):
        super().__init__()
        self.in_planes = widths[0]
        self.conv1 = nn.Conv2d(in_channels, widths[0], 3, stride=1, padding=1, bias=False)
        self.bn1 = nn.BatchNorm2d(widths[0])
        for k, (n, w) in enumerate(zip(num_blocks, widths)):
            setattr(self, f"layer{k + 1}", self._make_layer(block, w, n, 1 if k == 0 else 2))
        self.num_stages = len(num_blocks)
        self.linear = nn.Linear(widths[-1] * block.expansion, num_classes)
        for m in self.modules():
            if isinstance(m, nn.Conv2d):
                nn.init.kaiming_normal_(m.weight, mode="fan_out", nonlinearity="relu")
            elif isinstance(m, nn.BatchNorm2d):
                nn.init.ones_(m.weight)
                nn.init.zeros_(m.bias)

    def _make_layer(self, block, planes: int, n: int, stride: int) -> nn.Sequential:
        layers = []
        for s in [stride] + [1] * (n - 1):
            layers.append(block(self.in_planes, planes, s))
            self.in_planes = planes * block.expansion
        return nn.Sequential(*layers)

    def forward(self, x: torch.Tensor, return_features: bool = False):
        out = F.relu(self.bn1(self.conv1(x)))
        for k in range(1, self.num_stages + 1):
            out = getattr(self, f"layer{k}")(out)
        f = F.adaptive_avg_pool2d(out, 1).flatten(1)
        logits = self.linear(f)
        return (logits, f) if return_features else logits


_WIDE = (64, 128, 256, 512)
_SMALL = (16, 32, 64)


@MODELS.register("resnet18")
def resnet18(num_classes: int = 10, in_channels: int = 3) -> nn.Module:
    """CIFAR ResNet-18 (11.2M parameters at C=10)."""
    return CifarResNet(BasicBlock, (2, 2, 2, 2), _WIDE, num_classes, in_channels)


@MODELS.register("resnet34")
def resnet34(num_classes: int = 10, in_channels: int = 3) -> nn.Module:
    """CIFAR ResNet-34 (21.3M parameters at C=10), the usual CIFAR teacher."""
    return CifarResNet(BasicBlock, (3, 4, 6, 3), _WIDE, num_classes, in_channels)


@MODELS.register("resnet50")
def resnet50(num_classes: int = 10, in_channels: int = 3) -> nn.Module:
    """CIFAR ResNet-50 with bottleneck blocks (23.5M parameters at C=10)."""
    return CifarResNet(Bottleneck, (3, 4, 6, 3), _WIDE, num_classes, in_channels)


@MODELS.register("resnet8")
def resnet8(num_classes: int = 10, in_channels: int = 3) -> nn.Module:
    """He et al.'s CIFAR ResNet-8: one block per stage, widths 16-32-64."""
    return CifarResNet(BasicBlock, (1, 1, 1), _SMALL, num_classes, in_channels)


@MODELS.register("resnet20")
def resnet20(num_classes: int = 10, in_channels: int = 3) -> nn.Module:
    """He et al.'s CIFAR ResNet-20: three blocks per stage, widths 16-32-64."""
    return CifarResNet(BasicBlock, (3, 3, 3), _SMALL, num_classes, in_channels)


@MODELS.register("resnet32")
def resnet32(num_classes: int = 10, in_channels: int = 3) -> nn.Module:
    """He et al.'s CIFAR ResNet-32: five blocks per stage, widths 16-32-64."""
    return CifarResNet(BasicBlock, (5, 5, 5), _SMALL, num_classes, in_channels)
