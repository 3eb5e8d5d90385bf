"""The SSD-KD paper's segmentation pair (Table 3, NYUv2), taken from well-kept libraries
rather than written here: ``deeplabv3_r50`` (teacher) and ``deeplabv3_mbv2`` (student).

- ``deeplabv3_r50``: torchvision's ``deeplabv3_resnet50`` (ResNet-50 dilated to output
  stride 8, ASPP rates 12/24/36, no auxiliary FCN head), the references' teacher.
- ``deeplabv3_mbv2``: the references' DeepLabV3-MobileNetV2 (the Fast and DFAD code's
  ``deeplabv3_mobilenet``, whose rows SSD-KD's Table 3 reprints), put together from library
  parts: segmentation_models_pytorch's ``mobilenet_v2`` encoder (torchvision's MobileNetV2
  layer for layer, dilated by smp to output stride 8, ImageNet weights from smp) up to its
  320-channel stage, under torchvision's ``DeepLabHead`` (ASPP rates 12/24/36, 256
  channels), as the references build it. 5.1 M parameters at 13 classes, as theirs.

Why this student: the paper's architecture decides it. torchvision's
``deeplabv3_mobilenet_v3_large`` is another backbone (MobileNetV3: squeeze-excitation,
hard-swish; 11.0 M parameters), and smp's ready-made ``DeepLabV3(encoder_name=
"mobilenet_v2")`` feeds its ASPP from MobileNetV2's last 1x1 convolution (320 -> 1280
channels, the ImageNet classifier's input), which makes a 12.7 M-parameter student, two and
a half times the references' (their backbone drops that layer). So the encoder is smp's,
which dilates MobileNetV2 and ships its ImageNet weights, that layer is left out, and the
head is torchvision's, the one the references' head copies (their ASPP's dropout is 0.1,
torchvision's 0.5). smp is an optional extra (``pip install -e ".[seg]"``), imported only
when the student is built; its absence is a one-line error.

Both return logits N x C x H x W at the input's resolution (bilinear upsampling of the
stride-8 map, as torchvision does), for any input size, and with ``return_features`` the
map the 1x1 classifier reads (256 channels at stride 8). Weights start random, so nothing
downloads; ``pretrained_backbone=True`` loads the ImageNet weights of the backbone
(torchvision's ``ResNet50_Weights.IMAGENET1K_V1``; smp's ``mobilenet_v2`` ``imagenet``
encoder weights from the Hugging Face hub) where the machine can download them or has them
cached, and otherwise stops with one line naming the weights.
"""
from __future__ import annotations

from typing import Callable

import torch
import torch.nn.functional as F
from torch import nn

from ..errors import UserError
from ..registry import MODELS

SMP_PACKAGE = "segmentation_models_pytorch"
STUDENT_CHANNELS = 320  # MobileNetV2's last inverted-residual stage, what the references' ASPP reads
TEACHER_WEIGHTS = "torchvision ResNet50_Weights.IMAGENET1K_V1"
STUDENT_WEIGHTS = "segmentation_models_pytorch mobilenet_v2 'imagenet' encoder weights (smp-hub/mobilenet_v2.imagenet)"


def _fetch(download: Callable, weights: str, arch: str, cache: str):
    """``download()``'s result, or a one-line UserError naming ``weights`` when it cannot
    be had (no network, a proxy refusing, a full disk): whatever the library raises."""
    try:
        return download()
    except Exception as exc:  # noqa: BLE001  (every way a download fails is the same advice)
        reason = (str(exc).strip().splitlines() or [""])[0][:160]
        raise UserError(f"{arch} with pretrained_backbone needs the ImageNet weights {weights}, which cannot be "
                        f"downloaded here ({type(exc).__name__}{': ' + reason if reason else ''}); run once where "
                        f"the machine can download them (they are kept in {cache}) or leave pretrained_backbone "
                        f"off for a random initialisation") from None


class _Segmenter(nn.Module):
    """The benchmark's view of a DeepLabV3: ``forward(x, return_features=False)`` gives
    logits at the input's resolution, and with ``return_features`` the map the last 1x1
    convolution reads."""

    def features(self, x: torch.Tensor) -> torch.Tensor:
        raise NotImplementedError

    def classify(self, features: torch.Tensor) -> torch.Tensor:
        raise NotImplementedError

    def forward(self, x: torch.Tensor, return_features: bool = False):
        feats = self.features(x)
        logits = F.interpolate(self.classify(feats), size=x.shape[-2:], mode="bilinear", align_corners=False)
        return (logits, feats) if return_features else logits


class TorchvisionDeepLabV3(_Segmenter):
    """torchvision's ``DeepLabV3`` without its dict output: ``backbone`` then every layer of
    ``classifier`` (a ``DeepLabHead``) but the last. It holds the library model's modules
    under their own names, so its state dict is the library's, key for key, and a
    checkpoint of torchvision's model imports as it is."""

    def __init__(self, model: nn.Module):
        super().__init__()
        self.backbone, self.classifier = model.backbone, model.classifier

    def features(self, x):
        x = self.backbone(x)["out"]
        for layer in list(self.classifier)[:-1]:  # slicing would rebuild the DeepLabHead class
            x = layer(x)
        return x

    def classify(self, features):
        return self.classifier[-1](features)


class MobileNetV2DeepLabV3(_Segmenter):
    """smp's dilated MobileNetV2 encoder (its last, 320-channel stage) under torchvision's
    ``DeepLabHead``: every layer of ``classifier`` but the last gives the features."""

    def __init__(self, encoder: nn.Module, classifier: nn.Module):
        super().__init__()
        self.encoder, self.classifier = encoder, classifier

    def features(self, x):
        x = self.encoder(x)[-1]  # smp encoders return every stage's map; the head reads the last
        for layer in list(self.classifier)[:-1]:
            x = layer(x)
        return x

    def classify(self, features):
        return self.classifier[-1](features)


@MODELS.register("deeplabv3_r50")
def deeplabv3_r50(num_classes: int = 13, in_channels: int = 3, pretrained_backbone: bool = False) -> nn.Module:
    """DeepLabV3-ResNet50 (torchvision): the SSD-KD/Fast/DFAD segmentation teacher."""
    from torchvision.models import ResNet50_Weights
    from torchvision.models.segmentation import deeplabv3_resnet50

    model = deeplabv3_resnet50(weights=None, weights_backbone=None, num_classes=num_classes, aux_loss=False)
    if pretrained_backbone:
        state = _fetch(lambda: ResNet50_Weights.IMAGENET1K_V1.get_state_dict(progress=False, check_hash=True),
                       TEACHER_WEIGHTS, "deeplabv3_r50", "torch's hub cache, ~/.cache/torch/hub")
        # The classification head (fc) has no place in the segmentation backbone.
        missing, unexpected = model.backbone.load_state_dict(state, strict=False)
        if missing or any(not k.startswith("fc.") for k in unexpected):
            raise RuntimeError(f"{TEACHER_WEIGHTS} does not fit the DeepLabV3 backbone: missing {missing[:3]}, "
                               f"unexpected {unexpected[:3]}")
    if in_channels != 3:  # a fresh stem for other inputs (pretrained or not, the rest is kept)
        old = model.backbone.conv1
        model.backbone.conv1 = nn.Conv2d(in_channels, old.out_channels, old.kernel_size, old.stride, old.padding,
                                         bias=False)
    return TorchvisionDeepLabV3(model)


@MODELS.register("deeplabv3_mbv2")
def deeplabv3_mbv2(num_classes: int = 13, in_channels: int = 3, pretrained_backbone: bool = False) -> nn.Module:
    """DeepLabV3-MobileNetV2 (smp encoder, torchvision head): the SSD-KD/Fast/DFAD segmentation student."""
    try:
        from segmentation_models_pytorch import encoders as smp_encoders
    except ImportError:
        raise UserError(f"deeplabv3_mbv2 needs the {SMP_PACKAGE} package: pip install -e \".[seg]\" "
                        f"(or pip install {SMP_PACKAGE})") from None
    from torchvision.models.segmentation.deeplabv3 import DeepLabHead

    weights = None
    if pretrained_backbone:
        settings = smp_encoders.encoders["mobilenet_v2"]["pretrained_settings"]["imagenet"]
        # Fetched here, where a failure becomes one line; smp's own calls then find the files cached.
        _fetch(lambda: [smp_encoders.hf_hub_download(settings["repo_id"], filename=f, revision=settings["revision"])
                        for f in ("config.json", "model.safetensors")],
               STUDENT_WEIGHTS, "deeplabv3_mbv2", "the Hugging Face cache, ~/.cache/huggingface/hub")
        weights = "imagenet"
    encoder = smp_encoders.get_encoder("mobilenet_v2", in_channels=in_channels, depth=5, weights=weights,
                                       output_stride=8)
    # The references' backbone stops at the 320-channel stage: MobileNetV2's last 1x1
    # convolution (to 1280 channels, its classifier's input) is not part of it.
    encoder.features[-1] = nn.Identity()
    return MobileNetV2DeepLabV3(encoder, DeepLabHead(STUDENT_CHANNELS, num_classes, atrous_rates=(12, 24, 36)))


for _builder in (deeplabv3_r50, deeplabv3_mbv2):
    _builder.task = "segmentation"  # logits per pixel (tests read it, as they read a data set's)
    _builder.feature_stride = 8  # the features ``return_features`` gives are 1/8 of the input's side
deeplabv3_mbv2.requires = (SMP_PACKAGE,)  # an optional extra: its tests skip without it
