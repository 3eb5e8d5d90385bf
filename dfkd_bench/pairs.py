"""Teacher-student pairs, named ``TEACHER-STUDENT``."""
from __future__ import annotations

from dataclasses import dataclass

from .errors import UserError
from .registry import DATASETS, MODELS, PAIRS


@dataclass(frozen=True)
class Pair:
    teacher: str
    student: str
    note: str = ""
    in_channels: int = 3

    @property
    def name(self) -> str:
        return f"{self.teacher}-{self.student}"

    def parameter_counts(self, num_classes: int = 10) -> tuple[int, int]:
        """(teacher, student) parameter counts for ``num_classes`` outputs."""
        from .models import build_model, count_parameters

        return tuple(count_parameters(build_model(a, num_classes, self.in_channels))
                     for a in (self.teacher, self.student))


def _add(teacher: str, student: str, note: str, in_channels: int = 3) -> None:
    pair = Pair(teacher, student, note, in_channels)
    PAIRS.register(pair.name, pair)


_add("cnn_m", "cnn_s", "embedded digits quickstart; seconds on a CPU", in_channels=1)
_add("segnet_m", "segnet_s", "embedded shapes segmentation quickstart; a minute on a CPU")
# SSD-KD's Table 3 pair (NYUv2), as in the Fast and DFAD reference code (models/deeplab.py).
_add("deeplabv3_r50", "deeplabv3_mbv2", "paper pair (NYUv2 segmentation); GPU scale")
# The five CIFAR pairs of the DFKD literature's tables (DeepInv, CMI, Fast, SSD-KD).
_add("resnet34", "resnet18", "paper pair (CIFAR); GPU scale")
_add("vgg11", "resnet18", "paper pair (CIFAR), cross-architecture; GPU scale")
_add("wrn40_2", "wrn16_1", "paper pair (CIFAR); GPU scale")
_add("wrn40_2", "wrn40_1", "paper pair (CIFAR); GPU scale")
_add("wrn40_2", "wrn16_2", "paper pair (CIFAR); GPU scale")
# Small enough to train and distil on a CPU: a resnet20 epoch over CIFAR-10 takes about
# 3-5 minutes on two idle cores (benchmarks/teacher_throughput.py), the paper pairs hours.
_add("wrn16_2", "wrn16_1", "CPU scale (CIFAR): the paper's WRN family, shallower teacher")
_add("resnet20", "resnet8", "CPU scale (CIFAR): He et al.'s small CIFAR ResNets")
# The CPU reference study's pair (reports/cpu-study): a teacher deeper than resnet20 (79% after
# 5 CPU epochs) for a stronger one trainable on a CPU; 40 epochs gave 88.73% on CIFAR-10 (JPEG).
_add("resnet32", "resnet8", "CPU reference study (CIFAR): a stronger teacher trained on a CPU")

# The data set a run uses when none is given, and the pair it defaults to: the embedded
# digits and shapes and NYUv2 have their own; other image data sets get the papers' pair on
# CUDA and the CPU-scale pair elsewhere (resnet34 on a CPU takes hours an epoch), and other
# segmentation sets (segfolder:PATH) DeepLabV3 on CUDA and the small segnets elsewhere.
DEFAULT_DATASET = "digits"
DEFAULT_PAIR = {"digits": "cnn_m-cnn_s", "shapes": "segnet_m-segnet_s", "nyuv2": "deeplabv3_r50-deeplabv3_mbv2"}
DEFAULT_PAIR_BY_DEVICE = {"cuda": "resnet34-resnet18", "cpu": "resnet20-resnet8"}
DEFAULT_SEGMENTATION_PAIR_BY_DEVICE = {"cuda": "deeplabv3_r50-deeplabv3_mbv2", "cpu": "segnet_m-segnet_s"}


def default_pair(dataset: str, device_type: str = "cuda") -> str:
    kind = dataset.split(":", 1)[0]
    if kind in DEFAULT_PAIR:
        return DEFAULT_PAIR[kind]
    segmentation = kind in DATASETS and getattr(DATASETS.get(kind), "task", "classification") == "segmentation"
    by_device = DEFAULT_SEGMENTATION_PAIR_BY_DEVICE if segmentation else DEFAULT_PAIR_BY_DEVICE
    return by_device.get(device_type, by_device["cpu"])


def resolve_pair(name: str | None, dataset: str, device_type: str = "cuda") -> Pair:
    """A registered pair, or any ``T-S`` of two known architectures (``timm:`` too);
    ``None`` is the data set's default pair on ``device_type``."""
    if name is None:
        name = default_pair(dataset, device_type)
    if name in PAIRS:
        return PAIRS.get(name)
    teacher, sep, student = name.partition("-")
    known = lambda a: a.startswith("timm:") or a in MODELS  # noqa: E731
    if sep and known(teacher) and known(student):
        return Pair(teacher, student, "ad hoc")
    raise UserError(f"unknown pair {name!r}; known pairs: {', '.join(PAIRS.names())} "
                    f"(or TEACHER-STUDENT of the architectures {', '.join(MODELS.names())})")
