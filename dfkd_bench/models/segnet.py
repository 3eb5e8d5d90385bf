"""Small fully convolutional nets for the embedded ``shapes`` segmentation set: a
U-Net-shaped encoder-decoder (two 2x poolings, skip connections) whose logits are
N x C x H x W at the input's resolution. Every convolution is followed by BatchNorm, which
the data-free methods invert. They train in about a minute on a CPU; the papers'
DeepLabV3 is for GPUs."""
from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from ..registry import MODELS

SEGMENTATION_MODELS = ("segnet_m", "segnet_s")


def _convs(c_in: int, c_out: int, depth: int) -> nn.Sequential:
    layers: list[nn.Module] = []
    for i in range(depth):
        layers += [nn.Conv2d(c_in if i == 0 else c_out, c_out, 3, padding=1, bias=False), nn.BatchNorm2d(c_out),
                   nn.ReLU(inplace=True)]
    return nn.Sequential(*layers)


class SegNet(nn.Module):
    """Encoder stages at ``widths`` (each ``depth`` conv-BN-ReLU layers, a 2x max-pool
    between stages), a decoder that upsamples bilinearly, concatenates the encoder's map
    of the same size and convolves back to that stage's width, and a 1x1 classifier."""

    def __init__(self, widths: tuple[int, ...], depth: int, num_classes: int, in_channels: int = 3):
        super().__init__()
        self.encoder = nn.ModuleList()
        c = in_channels
        for w in widths:
            self.encoder.append(_convs(c, w, depth))
            c = w
        self.decoder = nn.ModuleList(_convs(widths[i + 1] + widths[i], widths[i], depth)
                                     for i in reversed(range(len(widths) - 1)))
        self.classifier = nn.Conv2d(widths[0], num_classes, 1)

    def forward(self, x: torch.Tensor, return_features: bool = False):
        skips = []
        for i, stage in enumerate(self.encoder):
            x = stage(x if i == 0 else F.max_pool2d(x, 2))
            skips.append(x)
        for stage, skip in zip(self.decoder, reversed(skips[:-1])):
            up = F.interpolate(x, size=skip.shape[-2:], mode="bilinear", align_corners=False)
            x = stage(torch.cat([up, skip], 1))
        logits = self.classifier(x)
        return (logits, x) if return_features else logits


@MODELS.register("segnet_m")
def segnet_m(num_classes: int = 5, in_channels: int = 3) -> nn.Module:
    """Teacher for ``shapes``: widths 16-32-64, two conv-BN-ReLU layers a stage."""
    return SegNet((16, 32, 64), 2, num_classes, in_channels)


@MODELS.register("segnet_s")
def segnet_s(num_classes: int = 5, in_channels: int = 3) -> nn.Module:
    """Student for ``shapes``: widths 8-16-32, one conv-BN-ReLU layer a stage."""
    return SegNet((8, 16, 32), 1, num_classes, in_channels)


for _builder in (segnet_m, segnet_s):
    _builder.task = "segmentation"  # logits per pixel (tests read it, as they read a data set's)
