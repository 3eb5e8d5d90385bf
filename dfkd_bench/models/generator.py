"""The DCGAN-style generator shared by the generator-based methods (DAFL, DFQ, CMI,
Fast-N), DFAD's and ZSKT's own variants of it (``GENERATORS``), and ``reinit_layers`` for
Fast's re-initialisation of its first layers.

Submodules are named ``l1``, ``conv_blocks0`` (the first BN), ``conv_blocks1`` and
``conv_blocks2`` after DAFL's generator, so a method can address the first Linear
and first BN by name.
"""
from __future__ import annotations

from typing import Iterable, Literal, get_args

import torch
from torch import nn
import torch.nn.functional as F


class Generator(nn.Module):
    """``z (B, nz) -> image (B, nc, img_size, img_size)`` in [0, 1]; dataset
    normalisation is the caller's job (``normalized_output`` False)."""

    normalized_output = False  # True: the output is already in the models' normalised space
    conv_bias = False

    def __init__(self, nz: int = 256, ngf: int = 64, img_size: int = 32, nc: int = 3):
        super().__init__()
        if img_size <= 0 or img_size % 4:
            raise ValueError(f"{type(self).__name__} img_size must be a positive multiple of 4 "
                             f"(two x2 upsamplings), got {img_size}")
        self.nz = nz
        self.init_size, self.mid_size, self.img_size = self.sizes(img_size)
        self.l1 = nn.Linear(nz, 2 * ngf * self.init_size ** 2)
        self.conv_blocks0 = nn.Sequential(nn.BatchNorm2d(2 * ngf))
        self.conv_blocks1 = nn.Sequential(
            nn.Conv2d(2 * ngf, 2 * ngf, 3, padding=1, bias=self.conv_bias),
            nn.BatchNorm2d(2 * ngf),
            nn.LeakyReLU(0.2, inplace=True),
        )
        self.conv_blocks2 = nn.Sequential(
            nn.Conv2d(2 * ngf, ngf, 3, padding=1, bias=self.conv_bias),
            nn.BatchNorm2d(ngf),
            nn.LeakyReLU(0.2, inplace=True),
            nn.Conv2d(ngf, nc, 3, padding=1),
            *self.output_layers(nc),
        )

    def sizes(self, img_size: int) -> tuple[int, int, int]:
        """Side of the Linear's feature map, after the first upsampling, and of the image."""
        return img_size // 4, img_size // 2, img_size

    def output_layers(self, nc: int) -> list[nn.Module]:
        return [nn.Sigmoid()]

    def forward(self, z: torch.Tensor) -> torch.Tensor:
        # In fp32 whatever the run's precision (the teacher and student may be bf16): in
        # bf16, Fast's meta-generator diverged during its warm-up on resnet20 -> resnet8
        # (BN loss 128 -> 134 over 10 rounds against 130 -> 76 in fp32; with only the
        # generator in fp32, 130 -> 75.6), and the run ended 8 points lower.
        with torch.autocast(z.device.type, enabled=False):
            out = self.l1(z.float()).view(z.shape[0], -1, self.init_size, self.init_size)
            out = self.conv_blocks0(out)
            # Nearest upsampling to a size: the same pixels as scale_factor 2 for the shared
            # generator, and as ZSKT's x1.6 (10 -> 16) for its own.
            out = self.conv_blocks1(F.interpolate(out, size=self.mid_size))
            return self.conv_blocks2(F.interpolate(out, size=self.img_size))


class DFADGenerator(Generator):
    """DFAD's own generator (``GeneratorA`` of VainF/Data-Free-Adversarial-Distillation,
    ``network/gan.py``; nz 256 in its CIFAR script): the shared layout with biased
    convolutions, ending in Tanh and then ``BatchNorm2d(nc, affine=False)``, so a batch
    comes out standardised per channel (mean 0, variance 1 in train mode) and goes to the
    teacher as it is, with no dataset normalisation."""

    normalized_output = True
    conv_bias = True

    def output_layers(self, nc: int) -> list[nn.Module]:
        return [nn.Tanh(), nn.BatchNorm2d(nc, affine=False)]


class ZSKTGenerator(Generator):
    """ZSKT's own generator (polo5/ZeroShotKnowledgeTransfer ``models/generator.py`` at its
    first commit, 2019-05-25, the NeurIPS submission's; z_dim 100 in its CIFAR scripts):
    a 10x10 map (for 32x32 images) upsampled x1.6 to 16 and x2 to 32, biased convolutions,
    and the last convolution straight into ``BatchNorm2d(nc, affine=False)``: standardised
    per channel, unbounded, fed to the teacher as it is. (The repository's later version,
    2019-08-20, starts from 8x8 with two x2 upsamplings and makes that BN affine.)"""

    normalized_output = True
    conv_bias = True

    def sizes(self, img_size: int) -> tuple[int, int, int]:
        return img_size // 2 * 5 // 8, img_size // 2, img_size

    def output_layers(self, nc: int) -> list[nn.Module]:
        return [nn.BatchNorm2d(nc, affine=False)]


# The choices of a method's ``generator`` field.
GeneratorKind = Literal["sigmoid", "dfad", "zskt"]  # a config's ``generator``: the keys of GENERATORS
GENERATORS: dict[str, type[Generator]] = {"sigmoid": Generator, "dfad": DFADGenerator, "zskt": ZSKTGenerator}
assert set(GENERATORS) == set(get_args(GeneratorKind))


def reinit_layers(module: nn.Module, names: Iterable[str], bn_gamma_mean: float = 1.0) -> None:
    """Re-initialise each named submodule (every descendant, for containers such as
    ``conv_blocks0``) as the reference code does (Fast-Datafree's ``reset_model``): Linear
    and Conv weights from N(0, 0.02), biases 0, BN gamma from N(``bn_gamma_mean``, 0.02)
    and beta 0 (BN running statistics are reset too; a generator runs in train mode, so
    they never enter its output). All names are checked before anything changes."""
    names = list(names)
    modules = dict(module.named_modules())
    missing = [n for n in names if n not in modules]
    if missing:
        raise KeyError(f"no submodule named {', '.join(missing)}; "
                       f"known: {', '.join(n for n in modules if n)}")
    with torch.no_grad():
        for n in names:
            for m in modules[n].modules():
                if isinstance(m, (nn.Linear, nn.Conv2d, nn.ConvTranspose2d)):
                    nn.init.normal_(m.weight, 0.0, 0.02)
                    if m.bias is not None:
                        nn.init.zeros_(m.bias)
                elif isinstance(m, nn.BatchNorm2d):
                    nn.init.normal_(m.weight, bn_gamma_mean, 0.02)
                    nn.init.zeros_(m.bias)
                    m.reset_running_stats()


def reinit_all(module: nn.Module) -> None:
    """``reinit_layers`` on every child: a fresh generator, as CMI's per-round reset."""
    reinit_layers(module, [name for name, _ in module.named_children()])
