"""Any timm architecture as a benchmark classifier (``--teacher timm:<name>``).

Nothing is downloaded: weights come only from a local file. timm is imported inside
``build_timm`` so the package works without it until a ``timm:`` model is asked for.
"""
from __future__ import annotations

import os

import torch
from torch import nn

from ..errors import UserError


class TimmClassifier(nn.Module):
    """Adds the benchmark's ``return_features`` to a timm model; the features are
    timm's pre-logits vector (what its classifier layer consumes)."""

    def __init__(self, model: nn.Module):
        super().__init__()
        self.model = model

    def forward(self, x: torch.Tensor, return_features: bool = False):
        f = self.model.forward_head(self.model.forward_features(x), pre_logits=True)
        logits = self.model.get_classifier()(f)
        return (logits, f) if return_features else logits


def _state_dict_from(obj, path: str) -> dict:
    """Accept a bare state dict or one under ``state_dict`` / ``model``; drop the
    ``module.`` (DataParallel) and ``model.`` (this wrapper) prefixes."""
    if isinstance(obj, dict):
        for key in ("state_dict", "model"):
            if isinstance(obj.get(key), dict):
                obj = obj[key]
                break
    if not isinstance(obj, dict) or not all(isinstance(k, str) for k in obj):
        raise UserError(f"checkpoint {path!r} holds no state dict")
    for prefix in ("module.", "model."):
        if obj and all(k.startswith(prefix) for k in obj):
            obj = {k[len(prefix):]: v for k, v in obj.items()}
    return obj


def build_timm(name: str, num_classes: int, in_channels: int = 3,
               checkpoint: str | None = None) -> nn.Module:
    """Build timm model ``name`` with a fresh ``num_classes`` head, weights from the
    local file ``checkpoint`` when given."""
    try:
        import timm
    except ImportError:
        raise UserError(f"timm:{name} needs the timm package; pip install timm") from None
    if not timm.is_model(name):
        raise UserError(f"unknown timm model {name!r}; see timm.list_models() for names")
    model = timm.create_model(name, pretrained=False, num_classes=num_classes, in_chans=in_channels)
    if checkpoint is not None:
        if not os.path.isfile(checkpoint):
            raise UserError(f"timm checkpoint {checkpoint!r} does not exist")
        state = _state_dict_from(torch.load(checkpoint, map_location="cpu", weights_only=True), checkpoint)
        try:
            model.load_state_dict(state, strict=True)
        except RuntimeError as exc:
            detail = " ".join(str(exc).split())
            raise UserError(f"checkpoint {checkpoint!r} does not fit timm:{name} with "
                            f"{num_classes} classes: {detail[:300]}") from None
    return TimmClassifier(model)
