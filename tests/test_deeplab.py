"""The SSD-KD paper's segmentation pair (issue 34, item 2): torchvision's DeepLabV3-ResNet50
teacher and smp's DeepLabV3-MobileNetV2 student give per-pixel logits at the input's
resolution, the pair is registered and is NYUv2's default, and the ImageNet backbones load
where they can be had and otherwise stop in one line naming the weights. Everything is
built with random weights at small inputs; nothing downloads."""
from __future__ import annotations

import functools
import urllib.error

import pytest
import torch

from dfkd_bench.cli import main
from dfkd_bench.errors import UserError
from dfkd_bench.models import build_model, count_parameters
from dfkd_bench.pairs import default_pair, resolve_pair
from dfkd_bench.registry import MODELS, PAIRS

PAIR = "deeplabv3_r50-deeplabv3_mbv2"
NUM_CLASSES = 13


def _needs(name: str) -> None:
    for package in getattr(MODELS.get(name), "requires", ()):
        pytest.importorskip(package)


@functools.lru_cache(maxsize=None)
def _built(name: str) -> torch.nn.Module:
    """One random instance per architecture: building ResNet-50 dominates these tests."""
    torch.manual_seed(0)
    return build_model(name, NUM_CLASSES).eval()


@pytest.mark.parametrize("name", ["deeplabv3_r50", "deeplabv3_mbv2"])
def test_deeplabv3_gives_logits_per_pixel_at_the_input_resolution(name):
    _needs(name)
    model = _built(name)
    with torch.no_grad():
        logits, feats = model(torch.randn(1, 3, 64, 64), return_features=True)
        assert logits.shape == (1, NUM_CLASSES, 64, 64) and logits.isfinite().all()
        assert feats.shape == (1, 256, 8, 8)  # what the 1x1 classifier reads, at output stride 8
        # a side that is no multiple of the stride (smp's own forward refuses one) still comes back whole
        assert model(torch.randn(1, 3, 36, 44)).shape == (1, NUM_CLASSES, 36, 44)


def test_the_teacher_has_torchvisions_keys_so_its_checkpoints_import_as_they_are():
    from torchvision.models.segmentation import deeplabv3_resnet50

    with torch.device("meta"):  # names and shapes only
        library = deeplabv3_resnet50(weights=None, weights_backbone=None, num_classes=NUM_CLASSES, aux_loss=False)
    ours = _built("deeplabv3_r50").state_dict()
    assert {k: v.shape for k, v in library.state_dict().items()} == {k: v.shape for k, v in ours.items()}


def test_the_student_is_the_references_mobilenetv2_to_its_320_channel_stage_under_a_deeplab_head():
    _needs("deeplabv3_mbv2")
    from segmentation_models_pytorch import encoders
    from torchvision.models.segmentation.deeplabv3 import DeepLabHead

    with torch.device("meta"):
        encoder = encoders.get_encoder("mobilenet_v2", weights=None, output_stride=8).state_dict()
        head = DeepLabHead(320, NUM_CLASSES).state_dict()
    expected = {f"encoder.{k}": v.shape for k, v in encoder.items() if not k.startswith("features.18.")}
    expected.update({f"classifier.{k}": v.shape for k, v in head.items()})
    model = _built("deeplabv3_mbv2")
    assert {k: v.shape for k, v in model.state_dict().items()} == expected
    assert not any(getattr(m, "out_channels", 0) == 1280 for m in model.modules())  # MobileNetV2's last 1x1 conv
    # the references' count (their backbone is MobileNetV2's features[:-1]); smp's own DeepLabV3 has 12,651,021
    assert count_parameters(model) == 5_111_821


def test_the_paper_pair_is_registered_and_the_segmentation_sets_default_to_it():
    _needs("deeplabv3_mbv2")
    pair = PAIRS.get(PAIR)
    assert (pair.teacher, pair.student) == ("deeplabv3_r50", "deeplabv3_mbv2") and "NYUv2" in pair.note
    assert resolve_pair(None, "nyuv2", "cuda").name == resolve_pair(None, "nyuv2:256", "cpu").name == PAIR
    # another segmentation set: DeepLabV3 on CUDA, the small segnets on a CPU; classification unchanged
    assert default_pair("segfolder:/x", "cuda") == PAIR and default_pair("segfolder:/x", "cpu") == "segnet_m-segnet_s"
    assert default_pair("imagefolder:/x", "cpu") == "resnet20-resnet8"
    # torchvision's count for 13 classes without the auxiliary head
    assert count_parameters(_built("deeplabv3_r50")) == 39_636_813


def test_the_teachers_pretrained_backbone_loads_torchvisions_imagenet_weights(monkeypatch):
    from torchvision.models import _api, resnet50

    torch.manual_seed(1)
    imagenet = resnet50().state_dict()  # stands in for the download: same keys, fc included
    asked = []
    monkeypatch.setattr(_api, "load_state_dict_from_url", lambda url, **kw: asked.append(url) or imagenet)
    model = build_model("deeplabv3_r50", NUM_CLASSES, pretrained_backbone=True)
    backbone = model.backbone.state_dict()
    assert asked and asked[0].endswith("resnet50-0676ba61.pth")  # IMAGENET1K_V1's file
    assert all(torch.equal(backbone[k], imagenet[k]) for k in backbone)


def test_the_students_pretrained_backbone_loads_smps_imagenet_encoder(monkeypatch, tmp_path):
    pytest.importorskip("segmentation_models_pytorch")
    from safetensors.torch import save_file
    from segmentation_models_pytorch import encoders

    torch.manual_seed(1)
    imagenet = {k: v.contiguous() for k, v in encoders.get_encoder("mobilenet_v2", weights=None).state_dict().items()}
    save_file(imagenet, tmp_path / "model.safetensors")
    (tmp_path / "config.json").write_text("{}")
    asked = []

    def fake_download(repo_id, filename, revision=None, **kw):
        asked.append((repo_id, filename))
        return str(tmp_path / filename)

    monkeypatch.setattr(encoders, "hf_hub_download", fake_download)
    model = build_model("deeplabv3_mbv2", NUM_CLASSES, pretrained_backbone=True)
    encoder = model.encoder.state_dict()
    assert ("smp-hub/mobilenet_v2.imagenet", "model.safetensors") in asked
    assert set(imagenet) - set(encoder) == {"features.18.0.weight", *(f"features.18.1.{k}" for k in (
        "weight", "bias", "running_mean", "running_var", "num_batches_tracked"))}  # the 1x1 conv left out
    assert all(torch.equal(encoder[k], imagenet[k]) for k in encoder)


def _unreachable(*args, **kwargs):
    raise urllib.error.URLError("[Errno -3] Temporary failure in name resolution")


def test_a_pretrained_backbone_that_cannot_be_downloaded_is_one_line_naming_the_weights(monkeypatch):
    from torchvision.models import _api

    monkeypatch.setattr(_api, "load_state_dict_from_url", _unreachable)
    with pytest.raises(UserError) as teacher:
        build_model("deeplabv3_r50", NUM_CLASSES, pretrained_backbone=True)
    text = str(teacher.value)
    assert len(text.splitlines()) == 1 and "ResNet50_Weights.IMAGENET1K_V1" in text
    assert "cannot be downloaded here (URLError" in text and "leave pretrained_backbone off" in text

    pytest.importorskip("segmentation_models_pytorch")
    from segmentation_models_pytorch import encoders

    monkeypatch.setattr(encoders, "hf_hub_download", _unreachable)
    with pytest.raises(UserError) as student:
        build_model("deeplabv3_mbv2", NUM_CLASSES, pretrained_backbone=True)
    text = str(student.value)
    assert len(text.splitlines()) == 1 and "mobilenet_v2 'imagenet' encoder weights" in text
    assert "smp-hub/mobilenet_v2.imagenet" in text and "leave pretrained_backbone off" in text


def test_without_smp_the_student_is_one_line_saying_how_to_install_it(monkeypatch):
    monkeypatch.setitem(__import__("sys").modules, "segmentation_models_pytorch", None)  # import fails
    with pytest.raises(UserError, match=r"needs the segmentation_models_pytorch package: pip install -e \"\.\[seg\]\""):
        build_model("deeplabv3_mbv2", NUM_CLASSES)


def test_a_model_option_the_architecture_lacks_is_one_line(tmp_path, capsys):
    with pytest.raises(UserError, match="architecture segnet_m takes no option pretrained_backbone; its options: none"):
        build_model("segnet_m", 5, pretrained_backbone=True)
    code = main(["teachers", "train", "--dataset", "shapes", "--arch", "segnet_m", "--pretrained-backbone",
                 "--cache-dir", str(tmp_path / "cache")])
    err = capsys.readouterr().err.strip()
    assert code == 2 and len(err.splitlines()) == 1
    assert "segnet_m has no pretrained backbone to load; those that do: deeplabv3_mbv2, deeplabv3_r50" in err
    assert not (tmp_path / "cache").exists()
