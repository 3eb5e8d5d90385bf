from __future__ import annotations

import inspect

from torch import nn

from ..errors import UserError
from ..registry import MODELS


def build_model(name: str, num_classes: int, in_channels: int = 3, **options) -> nn.Module:
    """Build a registered architecture; ``timm:<name>`` goes to the timm adapter.
    ``options`` are the builder's own keywords (``pretrained_backbone`` for the DeepLabV3
    nets); one the builder does not take is a one-line error naming the ones it does."""
    if name.startswith("timm:"):
        from .timm_adapter import build_timm

        if options:
            raise UserError(f"timm:{name[len('timm:'):]} takes no model options (got {', '.join(sorted(options))})")
        return build_timm(name[len("timm:"):], num_classes, in_channels)
    builder = MODELS.get(name)
    if options:
        takes = model_options(name)
        unknown = sorted(set(options) - set(takes))
        if unknown:
            raise UserError(f"architecture {name} takes no option {unknown[0]}; "
                            f"its options: {', '.join(takes) or 'none'}")
    return builder(num_classes=num_classes, in_channels=in_channels, **options)


def model_options(name: str) -> list[str]:
    """The keywords a registered architecture's builder takes beside the class and
    channel counts (``timm:`` models take none)."""
    if name.startswith("timm:"):
        return []
    params = inspect.signature(MODELS.get(name)).parameters
    return [p for p in params if p not in ("num_classes", "in_channels")]


def count_parameters(model: nn.Module) -> int:
    return sum(p.numel() for p in model.parameters())
