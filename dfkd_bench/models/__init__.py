"""Network architectures, registered by name in ``registry.MODELS``.

Every builder has the signature ``build(num_classes, in_channels=3) -> nn.Module``
and every classifier's ``forward(x, return_features=False)`` returns the logits, or
``(logits, penultimate_features)`` when asked (DAFL's activation loss and feature
heads need them). Segmentation nets (``segnet``, ``deeplab``) return per-pixel logits at the
input's resolution; the DeepLabV3 builders also take ``pretrained_backbone``.
"""
from . import deeplab, generator, resnet, segnet, small, vgg, wrn  # noqa: F401  (importing registers the architectures)
from .registry_helpers import build_model, count_parameters  # noqa: F401
