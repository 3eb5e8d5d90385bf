"""Architectures: every registered model runs forward/backward, the CIFAR nets have the
exact parameter counts and key layout of the shared public checkpoints, and those
checkpoints round-trip; plus the generator and the timm adapter."""
from __future__ import annotations

import functools

import pytest
import torch

from dfkd_bench.errors import UserError
from dfkd_bench.models import build_model, count_parameters
from dfkd_bench.models.generator import GENERATORS, Generator, reinit_layers
from dfkd_bench.registry import MODELS


def _input_spec(name: str) -> tuple[int, int]:
    """(in_channels, image size): the cnn_* nets are for 16x16 grey digits."""
    return (1, 16) if name.startswith("cnn_") else (3, 32)


@functools.lru_cache(maxsize=None)
def _built(name: str) -> torch.nn.Module:
    """One instance per name for the tests that only read structure: building the
    big nets dominates the run time on a small CPU."""
    torch.manual_seed(0)
    return build_model(name, num_classes=10, in_channels=_input_spec(name)[0])


@pytest.mark.parametrize("name", MODELS.names())
def test_forward_backward_and_features(name):
    for package in getattr(MODELS.get(name), "requires", ()):  # an optional extra's models
        pytest.importorskip(package)
    torch.manual_seed(0)
    c, s = _input_spec(name)
    model = _built(name).train()
    model.zero_grad(set_to_none=True)
    logits, feats = model(torch.randn(2, c, s, s), return_features=True)
    if getattr(MODELS.get(name), "task", "classification") == "segmentation":
        # per-pixel logits at the input's resolution; the map the classifier reads, at the net's stride
        side = s // getattr(MODELS.get(name), "feature_stride", 1)
        assert logits.shape == (2, 10, s, s)
        assert feats.ndim == 4 and feats.shape[0] == 2 and feats.shape[2:] == (side, side)
    else:
        assert logits.shape == (2, 10)
        assert feats.ndim == 2 and feats.shape[0] == 2
    logits.sum().backward()
    # Every parameter must be on the gradient path, or a layer is dead weight.
    assert all(p.grad is not None for p in model.parameters())


# Published counts at C=10 (REFERENCE.md); the small ResNets use 1x1 conv + BN
# projection shortcuts, so they are slightly above He et al.'s option-A counts.
PARAM_COUNTS = {
    "resnet18": 11_173_962,
    "resnet34": 21_282_122,
    "resnet50": 23_520_842,
    "resnet8": 78_042,
    "resnet20": 272_474,
    "resnet32": 466_906,
    "vgg11": 9_231_114,
    "wrn16_1": 175_066,
    "wrn16_2": 691_674,
    "wrn40_1": 563_930,
    "wrn40_2": 2_243_546,
}


@pytest.mark.parametrize("name,count", sorted(PARAM_COUNTS.items()))
def test_parameter_counts(name, count):
    assert count_parameters(_built(name)) == count


@pytest.mark.parametrize("name,present,absent", [
    ("resnet18", ["conv1.weight", "bn1.running_mean", "layer2.0.shortcut.0.weight",
                  "layer2.0.shortcut.1.running_var", "layer4.1.bn2.weight", "linear.weight"],
     ["layer1.0.shortcut.0.weight", "fc.weight"]),
    ("resnet34", ["linear.weight", "layer3.5.conv2.weight", "layer4.0.shortcut.1.weight"],
     ["layer3.6.conv1.weight"]),
    ("resnet50", ["layer1.0.shortcut.0.weight", "layer4.2.bn3.weight", "linear.weight"], []),
    ("resnet20", ["layer1.2.conv2.weight", "layer2.0.shortcut.0.weight", "linear.weight"],
     ["layer1.0.shortcut.0.weight", "layer4.0.conv1.weight"]),
    ("vgg11", ["block0.0.weight", "block0.0.bias", "block0.1.running_mean", "block2.0.weight",
               "block2.3.weight", "block4.4.bias", "classifier.weight"],
     ["block0.3.weight", "features.0.weight"]),
    ("wrn40_2", ["conv1.weight", "block1.layer.0.convShortcut.weight", "block3.layer.5.bn2.weight",
                 "bn1.running_mean", "fc.weight"],
     ["block1.layer.1.convShortcut.weight"]),
    ("wrn16_1", ["block2.layer.0.convShortcut.weight", "block1.layer.1.conv2.weight"],
     ["block1.layer.0.convShortcut.weight"]),
])
def test_key_layout(name, present, absent):
    keys = set(_built(name).state_dict())
    assert set(present) <= keys
    assert not set(absent) & keys


@pytest.mark.parametrize("name", ["resnet18", "resnet8", "vgg11", "wrn16_2", "cnn_s"])
def test_public_checkpoint_round_trip(name, tmp_path):
    torch.manual_seed(0)
    c, s = _input_spec(name)
    model = build_model(name, num_classes=10, in_channels=c)
    x = torch.randn(2, c, s, s)
    # A train-mode pass moves the BN running statistics away from their defaults,
    # so the check also covers buffers, not only parameters.
    model.train()(x)
    path = tmp_path / "teacher.pth"
    torch.save({"state_dict": model.state_dict()}, path)

    fresh = build_model(name, num_classes=10, in_channels=c).eval()
    untrained = fresh.state_dict()
    assert any(not torch.equal(v, untrained[k]) for k, v in model.state_dict().items()
               if k.endswith("running_mean"))
    fresh.load_state_dict(torch.load(path, weights_only=True)["state_dict"], strict=True)
    with torch.no_grad():
        expected, feats = model.eval()(x, return_features=True)
        assert torch.equal(fresh(x), expected)
        assert torch.equal(fresh(x, return_features=True)[1], feats)


def test_generator_shape_and_range():
    torch.manual_seed(0)
    g = Generator(nz=256, ngf=64, img_size=32, nc=3)
    assert count_parameters(g) == 2_328_899
    x = g(torch.randn(2, 256))
    assert x.shape == (2, 3, 32, 32)
    assert x.min() >= 0 and x.max() <= 1
    small = Generator(nz=16, ngf=8, img_size=16, nc=1)
    assert small(torch.randn(2, 16)).shape == (2, 1, 16, 16)


# DFAD's GeneratorA at its CIFAR script's nz 256, ZSKT's Generator at its scripts' z_dim 100
# (issue 30), with parameter counts worked out by hand from the originals' layers:
# Linear (nz + 1) * 128 * s^2, BN(128) 256, Conv 128->128 147,584, BN 256,
# Conv 128->64 73,792, BN(64) 128, Conv 64->3 1,731, and a final BN without parameters
# (s = 8: 2,105,344 + 223,747; s = 10: 1,292,800 + 223,747).
OWN_GENERATORS = [("dfad", 256, 8, 2_329_091), ("zskt", 100, 10, 1_516_547)]


@pytest.mark.parametrize("kind, nz, first_side, params", OWN_GENERATORS)
def test_own_generators_have_the_originals_layout_and_standardised_output(kind, nz, first_side, params):
    torch.manual_seed(0)
    g = GENERATORS[kind](nz=nz, ngf=64, img_size=32, nc=3).train()
    assert count_parameters(g) == params and g.normalized_output
    assert g.l1.out_features == 128 * first_side ** 2
    final = g.conv_blocks2[-1]
    assert isinstance(final, torch.nn.BatchNorm2d) and not final.affine and final.num_features == 3
    seen = {}
    final.register_forward_hook(lambda m, i, o: seen.update(before=i[0].detach()))
    x = g(torch.randn(64, nz))
    assert x.shape == (64, 3, 32, 32)
    # Train mode: each channel standardised over the batch (BN's biased variance, eps 1e-5)
    assert torch.allclose(x.mean((0, 2, 3)), torch.zeros(3), atol=1e-5)
    assert torch.allclose(x.std((0, 2, 3), unbiased=False), torch.ones(3), atol=1e-3)
    if kind == "dfad":  # Tanh before the BN: bounded input to it
        assert seen["before"].abs().max() < 1
    else:  # the convolution's raw output
        assert isinstance(g.conv_blocks2[-2], torch.nn.Conv2d)


def test_zskt_generator_upsamples_as_its_x1_6():
    # 10 -> 16 nearest by size is the original's nn.Upsample(scale_factor=1.6) pixel for pixel
    g = GENERATORS["zskt"](nz=4)
    assert (g.init_size, g.mid_size, g.img_size) == (10, 16, 32)
    m = torch.randn(2, 3, 10, 10)
    assert torch.equal(torch.nn.functional.interpolate(m, size=16), torch.nn.Upsample(scale_factor=1.6)(m))


def test_generator_rejects_bad_size():
    with pytest.raises(ValueError):
        Generator(img_size=30)


def test_reinit_layers_touches_only_named_layers():
    torch.manual_seed(0)
    g = Generator(nz=8, ngf=4, img_size=8, nc=3)
    with torch.no_grad():
        for t in list(g.parameters()) + [b for b in g.buffers() if b.is_floating_point()]:
            t.fill_(0.5)
    before = {k: v.clone() for k, v in g.state_dict().items()}
    reinit_layers(g, ["l1", "conv_blocks0"])
    after = g.state_dict()
    for k, v in before.items():
        if not v.is_floating_point():
            continue
        named = k.startswith(("l1.", "conv_blocks0."))
        assert (not torch.equal(v, after[k])) == named, k


def test_reinit_layers_missing_name():
    with pytest.raises(KeyError, match="nope"):
        reinit_layers(Generator(nz=8, ngf=4, img_size=8), ["l1", "nope"])


def test_timm_adapter(tmp_path):
    timm = pytest.importorskip("timm")
    from dfkd_bench.models.timm_adapter import build_timm

    name = "test_resnet" if "test_resnet" in timm.list_models("test_*") else "resnet10t"
    torch.manual_seed(0)
    model = build_model(f"timm:{name}", num_classes=10, in_channels=3).eval()
    x = torch.randn(2, 3, 32, 32)
    with torch.no_grad():
        logits, feats = model(x, return_features=True)
        assert logits.shape == (2, 10)
        assert feats.shape == (2, model.model.num_features)
        assert torch.allclose(model(x), logits)

    path = tmp_path / "timm.pth"
    torch.save({"state_dict": model.model.state_dict()}, path)
    loaded = build_timm(name, 10, 3, checkpoint=str(path)).eval()
    with torch.no_grad():
        assert torch.equal(loaded(x), logits)

    with pytest.raises(UserError, match="bogus"):
        build_model("timm:bogus_net_xyz", num_classes=10, in_channels=3)
    with pytest.raises(UserError):
        build_timm(name, 10, 3, checkpoint=str(tmp_path / "missing.pth"))
