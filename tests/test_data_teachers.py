"""Data sets (ImageFolder and torchvision layouts, the decoded-tensor cache), pairs, and
the teacher zoo (import, verify, unsafe files, the ``teachers`` CLI), on tiny files."""
from __future__ import annotations

import hashlib
import json
import os
import pickle
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

from dfkd_bench import data as data_mod
from dfkd_bench.cli import main
from dfkd_bench.data import CIFAR, load_dataset, locate_cifar, tensor_cache_path
from dfkd_bench.errors import UserError
from dfkd_bench.models import build_model
from dfkd_bench.pairs import DEFAULT_PAIR, resolve_pair
from dfkd_bench.registry import PAIRS
from dfkd_bench.teachers import (TrainRecipe, import_teacher, load_teacher, sha256_file, teacher_metadata,
                                 teacher_paths, train_supervised, train_teacher, training_state_path, verify)

CIFAR10_CLASSES = ["airplane", "automobile", "bird", "cat", "deer", "dog", "frog", "horse", "ship", "truck"]
SHARED_JPG = Path(__file__).resolve().parents[2] / "shared" / "data" / "cifar10-jpg"


def write_image(path: Path, size: int, seed: int, grey: bool = False) -> np.ndarray:
    """A random image; PNG is lossless, so the decoded pixels must equal the returned ones."""
    rng = np.random.default_rng(seed)
    shape = (size, size) if grey else (size, size, 3)
    pixels = rng.integers(0, 256, shape, dtype=np.uint8)
    path.parent.mkdir(parents=True, exist_ok=True)
    Image.fromarray(pixels).save(path)
    return pixels


def make_imagefolder(root: Path, classes: list[str], per_class: int, size: int, ext: str = ".png") -> dict:
    """``root/{train,test}/<class>/<i><ext>``; returns the pixels written, by relative path."""
    written = {}
    seed = 0
    for split in ("train", "test"):
        for cls in classes:
            for i in range(per_class):
                rel = f"{split}/{cls}/{i}{ext}"
                written[rel] = write_image(root / rel, size, seed)
                seed += 1
    return written


@pytest.fixture()
def tiny_folder(tmp_path):
    root = tmp_path / "tiny-folder"
    return root, make_imagefolder(root, ["cat", "ant"], per_class=3, size=8)


def run_cli(capsys, *argv):
    code = main(list(argv))
    out, err = capsys.readouterr()
    return code, out, err


# --- data sets ---------------------------------------------------------------------

def test_imagefolder_loads_with_classes_from_folder_names(cache, tiny_folder):
    root, written = tiny_folder
    bundle = load_dataset(f"imagefolder:{root}")
    assert bundle.name == f"imagefolder:{root.resolve()}"
    assert bundle.class_names == ("ant", "cat")  # sorted, as torchvision's ImageFolder
    assert bundle.num_classes == 2 and bundle.image_shape == (3, 8, 8)
    assert bundle.train_labels.tolist() == [0, 0, 0, 1, 1, 1]
    assert bundle.train_images.dtype == torch.uint8 and bundle.test_images.shape == (6, 3, 8, 8)
    expected = torch.from_numpy(written["train/ant/0.png"]).permute(2, 0, 1)
    assert torch.equal(bundle.train_images[0], expected)
    train = bundle.train_images.double() / 255
    assert bundle.mean == pytest.approx(train.mean((0, 2, 3)).tolist(), abs=1e-4)
    assert bundle.std == pytest.approx(train.std((0, 2, 3), unbiased=False).tolist(), abs=1e-4)
    assert bundle.crop_padding == 1 and bundle.flip


def test_imagefolder_keeps_grey_images_single_channel(cache, tmp_path):
    root = tmp_path / "grey"
    for split in ("train", "test"):
        for c in ("a", "b"):
            write_image(root / split / c / "0.png", 8, seed=len(c), grey=True)
    assert load_dataset(f"imagefolder:{root}").image_shape == (1, 8, 8)


@pytest.mark.parametrize("name, message", [
    ("imagefolder", "needs a folder: imagefolder:PATH"),
    ("imagefolder:/nonexistent/folder", "expected /nonexistent/folder/train/<class>/"),
])
def test_imagefolder_errors(cache, name, message):
    with pytest.raises(UserError, match=message.replace("(", r"\(")):
        load_dataset(name)


def test_imagefolder_with_mixed_sizes_is_a_user_error(cache, tiny_folder):
    root, _ = tiny_folder
    write_image(root / "train" / "cat" / "odd.png", 9, seed=99)
    with pytest.raises(UserError, match="needs one image size"):
        load_dataset(f"imagefolder:{root}")


@pytest.fixture()
def cifar_folder(tmp_path):
    """A data root whose ``cifar10/`` is an ImageFolder copy: one 32x32 JPEG per class and split."""
    base = tmp_path / "data"
    make_imagefolder(base / "cifar10", CIFAR10_CLASSES, per_class=1, size=32, ext=".jpg")
    return base


def test_cifar10_detects_an_imagefolder_under_the_root_or_at_it(cache, cifar_folder):
    assert locate_cifar("cifar10", cifar_folder) == ("imagefolder", cifar_folder / "cifar10")
    assert locate_cifar("cifar10", cifar_folder / "cifar10") == ("imagefolder", cifar_folder / "cifar10")
    for root in (cifar_folder, cifar_folder / "cifar10"):
        bundle = load_dataset("cifar10", root)
        assert bundle.name == "cifar10" and bundle.num_classes == 10
        assert bundle.class_names == tuple(CIFAR10_CLASSES)
        assert bundle.train_labels.tolist() == list(range(10)) and bundle.image_shape == (3, 32, 32)
        assert (bundle.mean, bundle.std) == (CIFAR["cifar10"].mean, CIFAR["cifar10"].std)
        assert bundle.source.startswith("ImageFolder at ")


def test_cifar_with_the_wrong_class_count_fails_before_decoding(cache, tiny_folder, monkeypatch):
    root, _ = tiny_folder
    monkeypatch.setattr(data_mod, "decode_images", lambda *a, **k: pytest.fail("decoded"))
    with pytest.raises(UserError, match="has 2 class folders under train/, but cifar100 has 100"):
        load_dataset("cifar100", root)


def test_missing_cifar_names_the_path_and_the_download_flag(cache, tmp_path):
    with pytest.raises(UserError) as info:
        load_dataset("cifar10", tmp_path / "empty")
    message = str(info.value)
    # both layouts --data-root accepts: the folder above the data set's, and the data set's own
    assert f"expected {tmp_path / 'empty' / 'cifar10'} or {tmp_path / 'empty'} itself to hold " \
           "cifar-10-batches-py/ (torchvision) or train/<class>/ and test/<class>/ image folders" in message
    assert "the data set's own folder" in message and "the folder above it (holding cifar10/)" in message
    assert "--download" in message and "\n" not in message


def write_fake_cifar10_batches(tv_root: Path, per_batch: int = 4) -> tuple[np.ndarray, list[int]]:
    """torchvision's ``cifar-10-batches-py`` format: pickled dicts whose ``data`` is N x
    3072 uint8 (the R, G and B planes of each 32x32 image in turn) and ``labels`` a list."""
    folder = tv_root / "cifar-10-batches-py"
    folder.mkdir(parents=True)
    rng = np.random.default_rng(0)
    images, labels = [], []
    for name in [f"data_batch_{i}" for i in range(1, 6)] + ["test_batch"]:
        rows = rng.integers(0, 256, (per_batch, 3072), dtype=np.uint8)
        ys = rng.integers(0, 10, per_batch).tolist()
        with open(folder / name, "wb") as fh:
            pickle.dump({"data": rows, "labels": ys, "batch_label": name}, fh)
        images.append(rows)
        labels.extend(ys)
    with open(folder / "batches.meta", "wb") as fh:
        pickle.dump({"label_names": CIFAR10_CLASSES}, fh)
    return np.concatenate(images).reshape(-1, 3, 32, 32), labels


def md5(path: Path) -> str:
    return hashlib.md5(path.read_bytes()).hexdigest()


def test_torchvision_batches_load_when_their_md5s_match(cache, tmp_path, monkeypatch):
    """torchvision checks the official md5s before unpickling; the fake batches get theirs
    registered in place of the official ones, so the real reading code runs."""
    from torchvision.datasets import CIFAR10

    images, labels = write_fake_cifar10_batches(tmp_path / "data" / "cifar10")
    folder = tmp_path / "data" / "cifar10" / "cifar-10-batches-py"
    monkeypatch.setattr(CIFAR10, "train_list", [[f"data_batch_{i}", md5(folder / f"data_batch_{i}")]
                                                for i in range(1, 6)])
    monkeypatch.setattr(CIFAR10, "test_list", [["test_batch", md5(folder / "test_batch")]])
    monkeypatch.setattr(CIFAR10, "meta", {**CIFAR10.meta, "md5": md5(folder / "batches.meta")})
    assert locate_cifar("cifar10", tmp_path / "data") == ("torchvision", tmp_path / "data" / "cifar10")
    bundle = load_dataset("cifar10", tmp_path / "data")
    assert torch.equal(bundle.train_images, torch.from_numpy(images[:20]))
    assert torch.equal(bundle.test_images, torch.from_numpy(images[20:]))
    assert bundle.train_labels.tolist() == labels[:20] and bundle.class_names == tuple(CIFAR10_CLASSES)
    assert bundle.source.startswith("torchvision batches at ")


def test_torchvision_batches_failing_the_md5_check_are_a_user_error(cache, tmp_path):
    write_fake_cifar10_batches(tmp_path / "data" / "cifar10")
    with pytest.raises(UserError, match="fails torchvision's check .*--download"):
        load_dataset("cifar10", tmp_path / "data")


def test_decoded_tensors_are_cached_and_a_damaged_cache_is_rebuilt(cache, tiny_folder, monkeypatch):
    root, _ = tiny_folder
    first = load_dataset(f"imagefolder:{root}")
    files = list((cache / "data" / "tensors").glob("imagefolder-*.pt"))
    assert len(files) == 1 and not list(files[0].parent.glob(".*tmp"))

    calls = []
    real_decode = data_mod.decode_images
    monkeypatch.setattr(data_mod, "decode_images", lambda *a, **k: calls.append(1) or real_decode(*a, **k))
    second = load_dataset(f"imagefolder:{root}")
    assert calls == [] and torch.equal(first.train_images, second.train_images)

    files[0].write_bytes(os.urandom(2000))
    with pytest.warns(UserWarning, match="damaged or outdated"):
        third = load_dataset(f"imagefolder:{root}")
    assert len(calls) == 2  # train and test split decoded again
    assert torch.equal(first.train_images, third.train_images)
    assert torch.load(files[0], weights_only=True)["train_images"].shape == (6, 3, 8, 8)


def test_a_changed_file_gives_a_new_cache_key(cache, tiny_folder):
    root, _ = tiny_folder
    before = load_dataset(f"imagefolder:{root}").train_images
    pixels = write_image(root / "train" / "ant" / "0.png", 8, seed=1234)
    after = load_dataset(f"imagefolder:{root}").train_images
    assert torch.equal(after[0], torch.from_numpy(pixels).permute(2, 0, 1)) and not torch.equal(before, after)
    assert len(list((cache / "data" / "tensors").glob("imagefolder-*.pt"))) == 2


def test_cache_dir_argument_overrides_the_environment(cache, tiny_folder, tmp_path):
    root, _ = tiny_folder
    other = tmp_path / "other-cache"
    load_dataset(f"imagefolder:{root}", cache=other)
    assert list((other / "data" / "tensors").glob("imagefolder-*.pt")) and not (cache / "data").exists()
    assert tensor_cache_path("x", "0" * 64, other).parent == other / "data" / "tensors"


@pytest.mark.skipif(not SHARED_JPG.is_dir(), reason=f"the shared CIFAR-10 JPEG copy is not at {SHARED_JPG}")
def test_shared_cifar10_jpg_test_split_decodes_in_worker_processes():
    """Only the 10,000-image test split, decoded directly, so the test stays fast: layout
    detection at the folder itself, torchvision's class order, and the pixel statistics."""
    assert locate_cifar("cifar10", SHARED_JPG) == ("imagefolder", SHARED_JPG)
    classes, splits = data_mod._imagefolder_listing(SHARED_JPG)
    assert classes == CIFAR10_CLASSES
    files, labels = splits["test"]
    images = data_mod.decode_images(files, "decoding cifar10-jpg/test")
    assert images.shape == (10_000, 3, 32, 32) and images.dtype == torch.uint8
    assert torch.bincount(torch.tensor(labels)).tolist() == [1000] * 10
    mean, _ = data_mod.channel_stats(images)
    assert mean == pytest.approx(CIFAR["cifar10"].mean, abs=0.01)


# --- pairs -------------------------------------------------------------------------

def test_paper_and_cpu_pairs_are_registered():
    paper = ["resnet34-resnet18", "vgg11-resnet18", "wrn40_2-wrn16_1", "wrn40_2-wrn40_1", "wrn40_2-wrn16_2"]
    for name in paper + ["wrn16_2-wrn16_1", "resnet20-resnet8", "cnn_m-cnn_s"]:
        assert name in PAIRS
    assert all("CPU scale" in PAIRS.get(n).note for n in ("wrn16_2-wrn16_1", "resnet20-resnet8"))
    assert resolve_pair(None, "cifar100", "cuda").name == resolve_pair(None, "cifar10").name == "resnet34-resnet18"
    assert resolve_pair(None, "imagefolder:x", "cpu").name == "resnet20-resnet8"  # CPU-scale on a CPU
    assert resolve_pair(None, "digits", "cpu").name == DEFAULT_PAIR["digits"] == "cnn_m-cnn_s"
    assert PAIRS.get("wrn40_2-wrn16_1").parameter_counts() == (2_243_546, 175_066)
    assert PAIRS.get("cnn_m-cnn_s").in_channels == 1


# --- teacher zoo ---------------------------------------------------------------------

@pytest.fixture()
def tiny_data():
    from tests.plugins.tiny import tiny_bundle

    return tiny_bundle()


def trained_cnn_s(num_classes: int = 4, seed: int = 0) -> torch.nn.Module:
    torch.manual_seed(seed)
    model = build_model("cnn_s", num_classes, 1)
    with torch.no_grad():  # non-trivial BN statistics, so a round trip is checked on them too
        model(torch.randn(16, 1, 8, 8))
    return model.eval()


def test_import_of_the_public_layout_round_trips_strictly(cache, tmp_path, tiny_data):
    model = trained_cnn_s()
    ckpt = tmp_path / "public.pth"
    torch.save({"state_dict": model.state_dict(), "epoch": 199, "best_acc1": np.float64(25.0)}, ckpt)
    meta = import_teacher(ckpt, "tiny", "cnn_s", data=tiny_data)
    assert meta["source"] == str(ckpt.resolve()) and meta["recipe"] == {"imported": True}
    assert meta["source_sha256"] == hashlib.sha256(ckpt.read_bytes()).hexdigest()
    assert 0 <= meta["top1"] <= 100 and teacher_metadata("tiny", "cnn_s") == meta
    loaded = load_teacher(tiny_data, "cnn_s", 1)
    for key, value in model.state_dict().items():
        assert torch.equal(loaded.state_dict()[key], value), key
    result = verify("tiny", "cnn_s", data=tiny_data)
    assert result["ok"] and result["measured_top1"] == pytest.approx(meta["top1"])


def test_import_of_a_bare_state_dict_with_dataparallel_prefix(cache, tmp_path, tiny_data):
    model = trained_cnn_s(seed=1)
    ckpt = tmp_path / "bare.pt"
    torch.save({f"module.{k}": v for k, v in model.state_dict().items()}, ckpt)
    import_teacher(ckpt, "tiny", "cnn_s", data=tiny_data)
    assert torch.equal(load_teacher(tiny_data, "cnn_s", 1).state_dict()["fc.weight"], model.state_dict()["fc.weight"])


class Payload:
    """Unpickling this runs ``Path.touch`` on the sentinel: a code-execution probe."""

    def __init__(self, sentinel: Path):
        self.sentinel = sentinel

    def __reduce__(self):
        return (Path.touch, (self.sentinel,))


def bad_checkpoints(tmp_path: Path) -> dict[str, tuple[Path, str]]:
    files = {}
    wrong_arch = tmp_path / "cnn_m.pt"
    torch.save({"state_dict": build_model("cnn_m", 4, 1).state_dict()}, wrong_arch)
    files["wrong arch"] = (wrong_arch, "does not match architecture cnn_s")
    wrong_classes = tmp_path / "ten.pt"
    torch.save({"state_dict": build_model("cnn_s", 10, 1).state_dict()}, wrong_classes)
    files["wrong classes"] = (wrong_classes, "is a 10-class cnn_s .* but tiny has 4 classes")
    corrupt = tmp_path / "random.pt"
    corrupt.write_bytes(np.random.default_rng(0).integers(0, 256, 4096, dtype=np.uint8).tobytes())
    files["corrupt"] = (corrupt, "is corrupt or not a weights-only PyTorch file")
    evil = tmp_path / "evil.pt"
    torch.save({"state_dict": build_model("cnn_s", 4, 1).state_dict(), "x": Payload(tmp_path / "PWNED")}, evil)
    files["code"] = (evil, "refers to .*, which a weights-only load refuses because it could run code")
    evil_pickle = tmp_path / "evil.pkl"
    with open(evil_pickle, "wb") as fh:
        pickle.dump({"state_dict": {"w": Payload(tmp_path / "PWNED")}}, fh)
    files["plain pickle"] = (evil_pickle, "is corrupt or not a weights-only PyTorch file")
    return files


@pytest.mark.parametrize("kind", ["wrong arch", "wrong classes", "corrupt", "code", "plain pickle"])
def test_bad_checkpoints_are_one_line_user_errors_and_run_nothing(cache, tmp_path, tiny_data, kind):
    path, message = bad_checkpoints(tmp_path)[kind]
    with pytest.raises(UserError, match=message) as info:
        import_teacher(path, "tiny", "cnn_s", data=tiny_data)
    assert "\n" not in str(info.value)
    assert not (tmp_path / "PWNED").exists()
    assert not teacher_paths("tiny", "cnn_s")[0].exists()


def test_verify_catches_a_swapped_file(cache, tmp_path, tiny_data):
    ckpt = tmp_path / "t.pt"
    torch.save({"state_dict": trained_cnn_s().state_dict()}, ckpt)
    import_teacher(ckpt, "tiny", "cnn_s", data=tiny_data)
    zoo_file, _ = teacher_paths("tiny", "cnn_s")
    torch.save({"state_dict": trained_cnn_s(seed=5).state_dict()}, zoo_file)
    with pytest.raises(UserError, match="does not match the sha256"):
        verify("tiny", "cnn_s", data=tiny_data)


def test_train_supervised_fast_path_reports_progress(tiny_data):
    """The bf16 fast path (autocast, channels_last) forced on the CPU, one epoch."""
    events = []
    model = build_model("cnn_s", 4, 1)
    recipe = TrainRecipe(epochs=1, batch_size=16, lr=0.05)
    top1 = train_supervised(model, tiny_data, recipe, torch.device("cpu"), lambda e, i: events.append((e, i)),
                            precision="bf16")
    assert 0 <= top1 <= 100
    assert events[0] == ("start", {"epochs": 1, "steps": 4, "resumed_epochs": 0, "metric": "top-1"})
    assert [e for e, _ in events].count("step") == 4
    assert events[-1][0] == "epoch" and events[-1][1]["top1"] == top1 and "train_top1" in events[-1][1]


class Killed(Exception):
    """Stands for the SIGKILL of a preempted job: raised from the progress callback."""


def _kill_after(epochs: int):
    def progress(event, info):
        if event == "epoch" and info["epoch"] + 1 == epochs:
            raise Killed
    return progress


def test_teacher_training_killed_and_resumed_ends_with_the_same_weights(tmp_path, tiny_data):
    recipe = TrainRecipe(epochs=3, batch_size=16, lr=0.05)
    cpu = torch.device("cpu")
    whole, whole_meta = train_teacher(tiny_data, "cnn_s", cpu, recipe, root=tmp_path / "a", eval_every=1)
    state = training_state_path("tiny", "cnn_s", tmp_path / "b")
    with pytest.raises(Killed):
        train_teacher(tiny_data, "cnn_s", cpu, recipe, root=tmp_path / "b", eval_every=1, progress=_kill_after(2))
    assert state.exists() and not teacher_paths("tiny", "cnn_s", tmp_path / "b")[0].exists()
    events = []
    resumed, meta = train_teacher(tiny_data, "cnn_s", cpu, recipe, root=tmp_path / "b", eval_every=1,
                                  progress=lambda e, i: events.append((e, i)))
    assert events[0][1]["resumed_epochs"] == 2 and [e for e, _ in events].count("epoch") == 1
    for (name, a), b in zip(whole.state_dict().items(), resumed.state_dict().values()):
        assert torch.equal(a, b), name
    assert meta["top1"] == whole_meta["top1"] and meta["sha256"] == whole_meta["sha256"]
    assert [e["epoch"] for e in meta["curve"]] == [0, 1, 2]
    assert [e["top1"] for e in meta["curve"]] == [e["top1"] for e in whole_meta["curve"]]
    assert not state.exists()


def test_a_training_state_from_other_settings_is_refused_and_kept(tmp_path, tiny_data):
    cpu = torch.device("cpu")
    with pytest.raises(Killed):
        train_teacher(tiny_data, "cnn_s", cpu, TrainRecipe(epochs=3, batch_size=16, lr=0.05), root=tmp_path,
                      progress=_kill_after(1))
    state = training_state_path("tiny", "cnn_s", tmp_path)
    before = state.read_bytes()
    with pytest.raises(UserError, match=r"was made with other settings \(recipe: .*'lr': 0.05.*pass --restart"):
        train_teacher(tiny_data, "cnn_s", cpu, TrainRecipe(epochs=3, batch_size=16, lr=0.1), root=tmp_path)
    with pytest.raises(UserError, match=r"other settings \(seed: 0 there, 1 now\)"):
        train_teacher(tiny_data, "cnn_s", cpu, TrainRecipe(epochs=3, batch_size=16, lr=0.05), root=tmp_path, seed=1)
    assert state.read_bytes() == before


def test_a_warm_restart_starts_from_the_given_weights_and_records_them(tmp_path, tiny_data):
    cpu = torch.device("cpu")
    recipe = TrainRecipe(epochs=2, batch_size=16, lr=0.05)
    first, first_meta = train_teacher(tiny_data, "cnn_s", cpu, recipe, root=tmp_path / "a", eval_every=1)
    source, _ = teacher_paths("tiny", "cnn_s", tmp_path / "a")
    again = TrainRecipe(epochs=1, batch_size=16, lr=0.05)
    warm, meta = train_teacher(tiny_data, "cnn_s", cpu, again, root=tmp_path / "b", eval_every=1, init_from=source)
    with torch.random.fork_rng(devices=[]):  # what the warm restart must be: the same steps from those weights
        torch.manual_seed(0)
        expected = build_model("cnn_s", tiny_data.num_classes, tiny_data.image_shape[0])
        expected.load_state_dict(first.state_dict())
        train_supervised(expected, tiny_data, again, cpu)
    for (name, a), b in zip(expected.state_dict().items(), warm.state_dict().values()):
        assert torch.equal(a, b), name
    init = meta["init_from"]
    assert init["sha256"] == first_meta["sha256"] == sha256_file(source) and init["top1"] == first_meta["top1"]
    assert len(init["curve"]) == 2 and init["recipe"]["epochs"] == 2 and len(meta["curve"]) == 1
    # a state left by a fresh training is not resumed into a warm restart, nor the other way round
    with pytest.raises(Killed):
        train_teacher(tiny_data, "cnn_s", cpu, recipe, root=tmp_path / "c", progress=_kill_after(1))
    with pytest.raises(UserError, match=r"other settings \(init_from: None there, '[0-9a-f]{64}' now\)"):
        train_teacher(tiny_data, "cnn_s", cpu, recipe, root=tmp_path / "c", init_from=source)


def test_recipe_for_cifar_is_the_standard_one():
    recipe = TrainRecipe.for_dataset("cifar10")
    assert (recipe.epochs, recipe.lr, recipe.weight_decay, recipe.nesterov, recipe.label_smoothing) == \
        (200, 0.1, 5e-4, True, 0.0)
    assert recipe.summary() == "200 ep cosine lr 0.1 bs 128 wd 0.0005"


# --- the teachers CLI ----------------------------------------------------------------

PLUGIN = ["--plugin", "tests.plugins.tiny"]


def test_teachers_cli_import_list_verify(cache, tmp_path, capsys):
    ckpt = tmp_path / "t.pt"
    torch.save({"state_dict": trained_cnn_s().state_dict()}, ckpt)
    code, out, err = run_cli(capsys, *PLUGIN, "teachers", "import", str(ckpt), "--dataset", "tiny", "--arch", "cnn_s")
    assert code == 0, err
    assert "imported" in out and "cnn_s teacher for tiny" in out
    code, out, _ = run_cli(capsys, "teachers", "list")
    meta = teacher_metadata("tiny", "cnn_s")
    assert code == 0 and "cnn_s" in out and f"{meta['top1']:.2f}" in out and meta["sha256"][:12] in out
    assert "imported from" in out
    code, out, _ = run_cli(capsys, *PLUGIN, "teachers", "verify", "--dataset", "tiny", "--arch", "cnn_s")
    assert code == 0 and out.startswith("ok:")
    code, _, err = run_cli(capsys, *PLUGIN, "teachers", "import", str(ckpt), "--dataset", "tiny", "--arch", "cnn_s")
    assert code == 2 and "pass --force" in err
    _, meta_path = teacher_paths("tiny", "cnn_s")
    meta_path.write_text(json.dumps({**meta, "top1": meta["top1"] + 10}))
    code, out, _ = run_cli(capsys, *PLUGIN, "teachers", "verify", "--dataset", "tiny", "--arch", "cnn_s")
    assert code == 1 and out.startswith("mismatch")


def test_teachers_cli_trains_a_tiny_teacher(cache, capsys):
    code, out, err = run_cli(capsys, *PLUGIN, "teachers", "train", "--dataset", "tiny", "--arch", "cnn_s",
                             "--epochs", "2", "--device", "cpu")
    assert code == 0, err
    assert "epoch 2/2: loss" in out and "saved cnn_s teacher for tiny" in out
    meta = teacher_metadata("tiny", "cnn_s")
    assert meta["recipe"]["epochs"] == 2 and meta["device"] == "cpu" and meta["seed"] == 0
    assert len(meta["curve"]) == 2 and "top1" in meta["curve"][1]


def test_teachers_cli_resumes_an_interrupted_training_or_restarts_it(cache, capsys):
    import tests.plugins.tiny  # noqa: F401 - registers the data set
    from dfkd_bench.data import load_dataset

    tiny = load_dataset("tiny")
    with pytest.raises(Killed):  # the same training the CLI would run, killed after its first epoch
        train_teacher(tiny, "cnn_s", torch.device("cpu"), TrainRecipe(epochs=2),
                      eval_every=1, progress=_kill_after(1))
    args = [*PLUGIN, "teachers", "train", "--dataset", "tiny", "--arch", "cnn_s", "--epochs", "2", "--device", "cpu"]
    code, out, err = run_cli(capsys, *args, "--seed", "3")
    assert code == 2 and "other settings (seed: 0 there, 3 now)" in err and "--restart" in err
    code, out, err = run_cli(capsys, *args)
    assert code == 0, err
    assert "resuming from" in out and "1/2 epochs done" in out and "epoch 2/2" in out and "epoch 1/2" not in out
    assert len(teacher_metadata("tiny", "cnn_s")["curve"]) == 2
    with pytest.raises(Killed):
        train_teacher(tiny, "cnn_s", torch.device("cpu"), TrainRecipe(epochs=2),
                      seed=3, eval_every=1, progress=_kill_after(1))
    code, out, err = run_cli(capsys, *args, "--force", "--restart")
    assert code == 0, err
    assert "resuming" not in out and "epoch 1/2" in out and not training_state_path("tiny", "cnn_s").exists()


@pytest.mark.parametrize("argv, message", [
    (["teachers"], "the following arguments are required: {list,train,import,verify}"),
    (["teachers", "train", "--dataset", "cifar10"], "the following arguments are required: --arch"),
    (["teachers", "train", "--dataset", "cifar10", "--arch", "nosuch"], "unknown model 'nosuch'"),
    (["teachers", "train", "--dataset", "mnist", "--arch", "resnet20"], "unknown data set 'mnist'"),
    (["teachers", "train", "--dataset", "cifar10", "--arch", "resnet20", "--epochs", "0"],
     "expected a positive integer"),
    (["teachers", "train", "--dataset", "cifar10", "--arch", "resnet20", "--device", "tpu"], "unknown device"),
    (["teachers", "train", "--dataset", "cifar10", "--arch", "resnet20", "--data-root", "/nonexistent"],
     "pass --download to fetch it"),
    (["teachers", "import", "/nonexistent.pt", "--dataset", "tiny", "--arch", "cnn_s"], "does not exist"),
    (["teachers", "train", "--dataset", "tiny", "--arch", "cnn_s", "--init-from", "/nonexistent.pt"],
     "--init-from /nonexistent.pt: no such checkpoint file"),
    (["teachers", "verify", "--dataset", "tiny", "--arch", "cnn_s"], "no cnn_s teacher for tiny in the zoo"),
])
def test_teachers_cli_user_errors_exit_2(cache, capsys, argv, message):
    code, _, err = run_cli(capsys, *PLUGIN, *argv)
    assert code == 2 and message in err
    assert len(err.strip().splitlines()) == 1 and "Traceback" not in err


@pytest.mark.parametrize("kind", ["wrong arch", "wrong classes", "corrupt", "code"])
def test_teachers_cli_import_of_bad_files_exits_2(cache, tmp_path, capsys, kind):
    path, _ = bad_checkpoints(tmp_path)[kind]
    code, _, err = run_cli(capsys, *PLUGIN, "teachers", "import", str(path), "--dataset", "tiny", "--arch", "cnn_s")
    assert code == 2 and len(err.strip().splitlines()) == 1
    assert not (tmp_path / "PWNED").exists()


# --- the normalisation a teacher was trained with (issue 12, item 6) ------------------

def test_public_normalisation_values_are_the_reference_constants():
    from dfkd_bench.data import PUBLIC_NORMALIZATION

    assert PUBLIC_NORMALIZATION["cifar10"] == ((0.4914, 0.4822, 0.4465), (0.2023, 0.1994, 0.2010))
    assert PUBLIC_NORMALIZATION["cifar100"] == ((0.5071, 0.4867, 0.4408), (0.2675, 0.2565, 0.2761))
    assert CIFAR["cifar10"].std != PUBLIC_NORMALIZATION["cifar10"][1]  # the project's own teachers differ


def test_a_teacher_imported_with_its_normalisation_scores_as_under_its_own(cache, tmp_path, tiny_data, capsys):
    """Trained under a normaliser that is not the data set's, then imported: under its own
    normaliser the zoo measures the top-1 it was trained to, under the data set's it does
    not, and a run with it uses the recorded one (config.json says which)."""
    import dataclasses

    from dfkd_bench import harness
    from dfkd_bench.teachers import train_teacher
    from tests.helpers import smoke_spec

    own = dataclasses.replace(tiny_data, mean=(0.9,), std=(0.05,))
    elsewhere = tmp_path / "elsewhere"
    _, trained = train_teacher(own, "cnn_s", torch.device("cpu"), TrainRecipe(epochs=6, batch_size=16, lr=0.05),
                               root=elsewhere)
    assert trained["normalization"] == {"name": "dataset", "mean": [0.9], "std": [0.05]}
    ckpt, _ = teacher_paths("tiny", "cnn_s", elsewhere)
    wrong = import_teacher(ckpt, "tiny", "cnn_s", data=tiny_data, normalization="dataset")
    assert wrong["normalization"]["mean"] == [0.35] and wrong["top1"] != trained["top1"]
    code, out, err = run_cli(capsys, *PLUGIN, "teachers", "import", str(ckpt), "--dataset", "tiny", "--arch",
                             "cnn_s", "--force", "--normalization", "0.9/0.05")
    assert code == 0, err
    meta = teacher_metadata("tiny", "cnn_s")
    assert meta["top1"] == trained["top1"] and meta["normalization"]["name"] == "explicit"
    assert "explicit normalisation 0.9/0.05" in out
    assert verify("tiny", "cnn_s", data=tiny_data)["measured_top1"] == pytest.approx(trained["top1"])
    harness.run(smoke_spec("kd", tmp_path / "out"))
    (config,) = (tmp_path / "out").rglob("config.json")
    resolved = json.loads(config.read_text())
    assert resolved["teacher_normalization"] == "0.9/0.05" and resolved["teacher_sha256"] == meta["sha256"]
    (summary,) = (tmp_path / "out").rglob("summary.json")
    assert json.loads(summary.read_text())["teacher_top1"] == trained["top1"]


@pytest.mark.parametrize("value, message", [
    ("0.5", "is not understood; accepted: 'public'"),
    ("0.5,0.5/0.2,0.2", "has 2 means and 2 stds; tiny images have 1 channel(s)"),
    ("0.5/0", "every std must be a positive number"),
    ("public", "no public values are known for tiny"),
])
def test_bad_normalisation_is_a_one_line_error_before_the_zoo_is_touched(cache, tmp_path, capsys, value, message):
    ckpt = tmp_path / "t.pt"
    torch.save({"state_dict": trained_cnn_s().state_dict()}, ckpt)
    code, _, err = run_cli(capsys, *PLUGIN, "teachers", "import", str(ckpt), "--dataset", "tiny", "--arch", "cnn_s",
                           "--normalization", value)
    assert code == 2 and message in err and len(err.strip().splitlines()) == 1
    assert not teacher_paths("tiny", "cnn_s")[0].exists()


def test_cifar_imports_default_to_the_public_normalisation(tiny_data):
    import dataclasses

    from dfkd_bench.data import PUBLIC_NORMALIZATION, parse_normalization
    from dfkd_bench.teachers import default_import_normalization

    cifar = dataclasses.replace(tiny_data, name="cifar10", mean=CIFAR["cifar10"].mean, std=CIFAR["cifar10"].std,
                                train_images=torch.zeros(1, 3, 8, 8, dtype=torch.uint8))
    assert default_import_normalization(cifar) == "public" and default_import_normalization(tiny_data) == "dataset"
    assert parse_normalization("public", cifar)[1:] == PUBLIC_NORMALIZATION["cifar10"]
    assert parse_normalization("dataset", cifar)[1:] == (CIFAR["cifar10"].mean, CIFAR["cifar10"].std)


def test_a_teachers_metadata_caveat_is_said_once_a_process(tiny_zoo, tiny_data, monkeypatch):
    from dfkd_bench import teachers
    from dfkd_bench.teachers import get_or_train_teacher

    monkeypatch.setattr(teachers, "_ANNOUNCED", set())  # earlier tests used the same teacher
    said = []
    for _ in range(3):  # a grid's runs share one teacher: the warning is not repeated per run
        get_or_train_teacher(tiny_data, "cnn_s", torch.device("cpu"), announce=said.append)
    assert len(said) == 1 and "records no data fingerprint" in said[0]


@pytest.mark.parametrize("native_bf16", [True, False])
def test_verify_remeasures_at_the_recorded_precision(cache, tmp_path, tiny_data, monkeypatch, native_bf16):
    """A teacher whose score was recorded in bf16 is re-measured in bf16 where the device
    has it natively, else in fp32 with a note (a bf16 score is not an fp32 one)."""
    from dfkd_bench import teachers
    from dfkd_bench.precision import FastPath
    from dfkd_bench.store import atomic_write_json, read_json

    ckpt = tmp_path / "t.pt"
    model = trained_cnn_s()
    torch.save({"state_dict": model.state_dict()}, ckpt)
    import_teacher(ckpt, "tiny", "cnn_s", data=tiny_data)
    _, meta_path = teacher_paths("tiny", "cnn_s")
    norm = teachers.teacher_normalizer(read_json(meta_path), tiny_data, torch.device("cpu"))
    scores = {p: teachers.evaluator_for(tiny_data, norm, FastPath("cpu", p)).score(model.eval()) for p in ("bf16", "fp32")}
    atomic_write_json(meta_path, {**read_json(meta_path), "precision": "bf16", "top1": scores["bf16"]})
    monkeypatch.setattr(teachers, "resolve_precision",
                        lambda *a, **k: ("bf16" if native_bf16 else "fp32", ""))
    result = verify("tiny", "cnn_s", data=tiny_data)
    expected = "bf16" if native_bf16 else "fp32"
    assert result["precision"] == expected and result["measured_top1"] == round(scores[expected], 4)
    assert bool(result["note"]) is not native_bf16
    assert result["ok"] == (abs(scores[expected] - scores["bf16"]) <= (0.1 if native_bf16 else 1.0))
