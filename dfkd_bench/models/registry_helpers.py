from __future__ import annotations

from torch import nn

from ..registry import MODELS


def build_model(name: str, num_classes: int, in_channels: int = 3) -> nn.Module:
    """Build a registered architecture; ``timm:<name>`` goes to the timm adapter."""
    if name.startswith("timm:"):
        from .timm_adapter import build_timm

        return build_timm(name[len("timm:"):], num_classes, in_channels)
    return MODELS.get(name)(num_classes=num_classes, in_channels=in_channels)


def count_parameters(model: nn.Module) -> int:
    return sum(p.numel() for p in model.parameters())
