"""The fast path: ``run.precision`` resolved per device and recorded, channels_last
models, fp32 losses under bf16, and the evaluator (issue 16)."""
from __future__ import annotations

import json
import warnings
from contextlib import nullcontext

import pytest
import torch
import torch.nn.functional as F

from dfkd_bench import harness, precision, store
from dfkd_bench.data import Normalizer
from dfkd_bench.errors import UserError
from dfkd_bench.method import Batch
from dfkd_bench.inversion import BNStatsHook, channel_stats
from dfkd_bench.models import build_model
from dfkd_bench.precision import FastPath, fp32_outputs
from dfkd_bench.teachers import Evaluator
from tests.helpers import smoke_spec


@pytest.fixture()
def native_bf16(monkeypatch):
    """Pretend the CPU has AMX-BF16 (or not): ``native_bf16(True)``."""
    def set_native(flag: bool):
        monkeypatch.setattr(precision, "cpu_bf16_support",
                            lambda: (True, "AMX-BF16") if flag else (False, "neither AMX-BF16 nor AVX512-BF16"))
    return set_native


def test_auto_is_bf16_only_where_the_cpu_runs_it_natively(native_bf16):
    cpu = torch.device("cpu")
    native_bf16(True)
    assert precision.resolve("auto", cpu) == ("bf16", "precision auto: bf16, since this CPU has AMX-BF16")
    native_bf16(False)
    chosen, why = precision.resolve("auto", cpu)
    assert chosen == "fp32" and "neither AMX-BF16 nor AVX512-BF16" in why
    chosen, why = precision.resolve("bf16", cpu)  # asked for: honoured, with the warning
    assert chosen == "bf16" and "emulated" in why
    assert precision.resolve("fp32", cpu) == ("fp32", "")


@pytest.mark.filterwarnings("ignore:CUDA is not available")
@pytest.mark.parametrize("capability, auto, bf16_says", [
    ((9, 0), "bf16", ""),  # H100
    ((8, 0), "bf16", ""),  # A100: native bf16 from compute capability 8.0
    ((7, 5), "fp16", "emulated"),  # T4: is_bf16_supported() says True (emulation); cuDNN has no bf16 convs
    ((7, 0), "fp16", "emulated"),  # V100
    ((6, 1), "fp32", "emulated"),  # Pascal: no fp16 tensor cores either
])
def test_auto_on_cuda_needs_native_bf16_and_falls_back_to_fp16_on_volta_and_turing(monkeypatch, capability, auto,
                                                                                   bf16_says):
    """The CUDA branch, without a GPU: only the capability queries are replaced (issue 32, item 1)."""
    cuda = torch.device("cuda")
    monkeypatch.setattr(torch.cuda, "is_bf16_supported", lambda *a, **k: True)  # what the old code trusted
    monkeypatch.setattr(torch.cuda, "get_device_capability", lambda device=None: capability)
    monkeypatch.setattr(torch.cuda, "get_device_name", lambda device=None: "Test GPU")
    chosen, why = precision.resolve("auto", cuda)
    assert chosen == auto and f"sm{capability[0]}{capability[1]}" in why
    assert bf16_says in precision.resolve("bf16", cuda)[1]  # asked-for bf16 runs, said to be emulated
    assert precision.resolve("auto", cuda, fp16=False)[0] == ("bf16" if auto == "bf16" else "fp32")  # teachers
    assert FastPath("cuda", "bf16").autocast().device == "cuda"


def test_fp16_autocasts_distillation_only_and_is_refused_on_the_cpu():
    fast = FastPath("cuda", "fp16")
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # "CUDA is not available": the region is built, not entered
        assert fast.autocast("distillation").fast_dtype == torch.float16
    assert isinstance(fast.autocast("synthesis"), nullcontext)  # no scaler for the methods' optimisers
    with pytest.raises(UserError, match="precision fp16 is for CUDA GPUs"):
        precision.resolve("fp16", torch.device("cpu"))


def test_an_fp16_student_step_goes_through_the_gradient_scaler_and_its_state_is_checkpointed(tiny_zoo):
    """The scaler's arithmetic on the CPU (its CUDA kernels are the GPU's to show): a step
    scales the loss, unscales before SGD, and the scale is in the checkpoint."""
    from dfkd_bench import harness
    from tests.helpers import smoke_spec

    spec = smoke_spec("kd", "unused")
    data_spec = spec.run
    student = torch.nn.Sequential(torch.nn.Flatten(), torch.nn.Linear(64, 4))

    class Ctx:
        run, device, fast_path = data_spec, torch.device("cpu"), FastPath("cpu", "fp32")

    class Plain:
        ctx = Ctx()

        def student_modules(self):
            return {}

        def distill_loss(self, batch):
            return {"loss": student(batch.images).pow(2).mean()}

        def after_distill_step(self, batch, losses):
            pass

    batch = Batch(torch.randn(8, 1, 8, 8))
    torch.manual_seed(0)
    reference = harness.StudentTrainer(student, Plain(), 10, lambda phase: nullcontext())
    before = [p.detach().clone() for p in student.parameters()]
    reference.step(batch, 0)
    plain_after = [p.detach().clone() for p in student.parameters()]
    with torch.no_grad():
        for p, b in zip(student.parameters(), before):
            p.copy_(b)
    scaler = torch.amp.GradScaler("cpu", init_scale=2.0 ** 10)
    scaled = harness.StudentTrainer(student, Plain(), 10, lambda phase: nullcontext(), scaler)
    scaled.step(batch, 0)
    for p, q in zip(student.parameters(), plain_after):  # unscaled before the step: the same update
        assert torch.allclose(p, q, atol=1e-6)
    state = scaled.state_dict()
    assert state["scaler"]["scale"] == 2.0 ** 10
    fresh = harness.StudentTrainer(student, Plain(), 10, lambda phase: nullcontext(),
                                   torch.amp.GradScaler("cpu", init_scale=1.0))
    fresh.load_state_dict(state)
    assert fresh.scaler.get_scale() == 2.0 ** 10


def test_cpu_bf16_support_reads_the_cpu():
    native, what = precision.cpu_bf16_support()
    assert isinstance(native, bool) and what


def test_a_run_records_the_precision_it_used_never_auto(tiny_zoo, tmp_path, native_bf16, monkeypatch):
    native_bf16(False)
    monkeypatch.setattr(harness, "_SAID", set())  # said once a process: this test's process starts afresh
    messages = []

    class Say(harness.RunObserver):
        def message(self, text):
            messages.append(text)

    fp32 = harness.run(smoke_spec("kd", tmp_path / "r", precision="auto"), Say())
    native_bf16(True)
    bf16 = harness.run(smoke_spec("kd", tmp_path / "r", precision="auto"))
    assert (fp32.precision, bf16.precision) == ("fp32", "bf16")
    assert fp32.name != bf16.name  # two experiments, never one directory
    for summary, expected in ((fp32, "fp32"), (bf16, "bf16")):
        run_dir = tmp_path / "r" / summary.name
        assert json.loads((run_dir / store.CONFIG).read_text())["run"]["precision"] == expected
        assert json.loads((run_dir / store.ENVIRONMENT).read_text())["precision"] == expected
        assert json.loads((run_dir / store.SUMMARY).read_text())["precision"] == expected
    assert sum("precision auto: fp32" in m for m in messages) == 1


@pytest.mark.parametrize("method", ["fast", "cmi", "deepinv", "dda", "dafl", "ssdkd"])
def test_methods_run_under_bf16_with_finite_fp32_losses(method, tiny_zoo, tmp_path):
    summary = harness.run(smoke_spec(method, tmp_path / "r", precision="bf16"))
    assert summary.status == "completed", summary.reason
    assert summary.precision == "bf16"
    records = [r for r in store.RunDir(tmp_path / "r", summary.name).read_metrics() if r["event"] == "epoch"]
    assert all(torch.isfinite(torch.tensor(r["loss"])) for r in records)


@pytest.mark.parametrize("phases, expected", [("all", {"synthesis": True, "distillation": True}),
                                              ("distillation", {"synthesis": False, "distillation": True}),
                                              ("synthesis", {"synthesis": True, "distillation": False})])
def test_bf16_phases_choose_where_autocast_applies(phases, expected, tiny_zoo, tmp_path, monkeypatch):
    from dfkd_bench.methods.fast import Fast

    seen = {"synthesis": set(), "distillation": set()}

    def spy(phase, original):
        def wrapped(self, *args):
            seen[phase].add(torch.is_autocast_enabled("cpu"))
            return original(self, *args)
        return wrapped

    monkeypatch.setattr(Fast, "synthesize", spy("synthesis", Fast.synthesize))
    monkeypatch.setattr(Fast, "distill_loss", spy("distillation", Fast.distill_loss))
    summary = harness.run(smoke_spec("fast", tmp_path / "r", precision="bf16", bf16_phases=phases))
    assert summary.status == "completed", summary.reason
    assert seen == {k: {v} for k, v in expected.items()}
    config = json.loads((tmp_path / "r" / summary.name / store.CONFIG).read_text())
    assert config["run"]["bf16_phases"] == phases
    assert isinstance(FastPath("cpu", "fp32", bf16_phases="synthesis").autocast("synthesis"), nullcontext)


@pytest.fixture()
def responsive_tiny_zoo(cache):
    """The ``tiny`` zoo's random cnn_s teacher with its head scaled 10x, so that its
    prediction moves with its input within a few pixel steps (the random head's logits
    barely do)."""
    from tests.conftest import save_random_tiny_teacher
    from tests.plugins import pixel_inversion  # noqa: F401  (registers the method)

    save_random_tiny_teacher(head_scale=10.0)
    return cache


def test_a_leaf_trained_inside_synthesize_learns_under_bf16_as_under_fp32(responsive_tiny_zoo, tmp_path):
    """Issue 30: autocast caches the bf16 copy of a leaf that requires grad until its region
    ends, and the harness wraps a whole ``synthesize`` in one region. The outside plugin's
    pixels, trained by 30 Adam steps there, were seen by every forward at their first
    value: its CE stayed at exactly its first value (1.4710) where fp32 fell to 0.69."""
    ce = {}
    for name in ("fp32", "bf16"):
        summary = harness.run(smoke_spec("pixel_inversion", tmp_path / "r", precision=name))
        assert summary.status == "completed", summary.reason
        (record,) = [r for r in store.RunDir(tmp_path / "r", summary.name).read_metrics() if r["event"] == "epoch"]
        assert record["synth_ce"] < 0.6 * record["synth_ce_first"], (name, record)
        ce[name] = record["synth_ce"]
    assert abs(ce["bf16"] - ce["fp32"]) < 0.05, ce
    with FastPath("cpu", "bf16").autocast("synthesis"):
        assert not torch.is_autocast_cache_enabled()
    with FastPath("cpu", "bf16").autocast("distillation"):  # one student step a region: the cache is safe
        assert torch.is_autocast_cache_enabled()


def test_generators_run_in_fp32_inside_a_bf16_autocast():
    """bf16 made Fast's meta-generator diverge (see models.generator); teacher and
    student still run in bf16 around it."""
    from dfkd_bench.models.generator import Generator

    gen = FastPath("cpu", "bf16").prepare(Generator(nz=8, ngf=4, img_size=8, nc=1))
    conv = torch.nn.Conv2d(1, 2, 3)
    dtypes = []
    gen.conv_blocks1[0].register_forward_hook(lambda m, i, o: dtypes.append(o.dtype))
    with FastPath("cpu", "bf16").autocast():
        x = gen(torch.randn(4, 8))
        inside = conv(x)
    assert dtypes == [torch.float32] and x.dtype == torch.float32
    assert inside.dtype == torch.bfloat16  # autocast is back on for the models after it


def test_retired_flags_name_their_successor(tmp_path):
    with pytest.raises(UserError, match="amp_bf16.*replaced by precision=bf16"):
        smoke_spec("kd", tmp_path, amp_bf16="true")
    with pytest.raises(UserError, match="precision='fp8'; accepted: auto, fp32, bf16, fp16"):
        smoke_spec("kd", tmp_path, precision="fp8")
    fp16 = smoke_spec("kd", tmp_path / "r", precision="fp16")  # a CUDA precision: planned anywhere, run on CUDA
    with pytest.raises(UserError, match="precision fp16 is for CUDA GPUs"):
        harness.run(fp16)
    assert not (tmp_path / "r").exists()  # refused before anything is written


def test_prepare_makes_conv_models_channels_last_and_bf16_outputs_fp32():
    model = build_model("cnn_s", 4, 1)
    FastPath("cpu", "bf16").prepare(model)
    conv = next(m for m in model.modules() if isinstance(m, torch.nn.Conv2d))
    assert conv.weight.is_contiguous(memory_format=torch.channels_last)
    with FastPath("cpu", "bf16").autocast():
        out = model(torch.randn(4, 1, 8, 8))
    assert out.dtype == torch.float32
    plain = build_model("cnn_s", 4, 1)
    with torch.autocast("cpu", dtype=torch.bfloat16):
        assert plain(torch.randn(4, 1, 8, 8)).dtype == torch.bfloat16  # what the hook changes
    fp32_outputs(model)  # a second call adds no second hook
    assert len(model._forward_hooks) == 1


def test_bn_statistics_loss_is_computed_in_fp32_under_bf16():
    """A BN layer's input is bf16 under autocast; the loss reads it in fp32."""
    bn = torch.nn.BatchNorm2d(3).eval()
    bn.running_mean.fill_(0.5)
    hook = BNStatsHook(bn)
    x = torch.randn(8, 3, 4, 4).bfloat16()
    hook._hook(bn, (x,), None)
    mean, var = channel_stats(x)
    expected = torch.norm(bn.running_mean - mean, 2) + torch.norm(bn.running_var - var, 2)
    assert hook.loss.dtype == torch.float32 and torch.equal(hook.loss, expected)
    hook.remove()


@pytest.mark.parametrize("memory_format", [torch.channels_last, torch.contiguous_format])
@pytest.mark.parametrize("dtype", [torch.float32, torch.bfloat16])
def test_channel_stats_are_var_mean_and_differentiate_alike(memory_format, dtype):
    torch.manual_seed(0)
    base = (torch.randn(16, 5, 6, 7) * 3 + 2).to(dtype)
    x = base.clone(memory_format=memory_format).requires_grad_()
    y = base.clone().requires_grad_()
    mean, var = channel_stats(x)
    ref_var, ref_mean = torch.var_mean(y.float(), dim=(0, 2, 3), unbiased=False)
    assert mean.dtype == var.dtype == torch.float32 and mean.shape == var.shape == (5,)
    torch.testing.assert_close(mean, ref_mean, rtol=1e-6, atol=1e-6)
    torch.testing.assert_close(var, ref_var, rtol=1e-6, atol=1e-6)
    w = torch.randn(5)
    ((mean * w).sum() + (var * w).square().sum()).backward()
    ((ref_mean * w).sum() + (ref_var * w).square().sum()).backward()
    tol = 1e-5 if dtype == torch.float32 else 1e-2  # bf16 gradients round to 8 bits of mantissa
    torch.testing.assert_close(x.grad.float(), y.grad.float(), rtol=tol, atol=tol)


def test_evaluator_matches_a_plain_loop_and_restores_the_mode():
    torch.manual_seed(0)
    model = build_model("cnn_s", 4, 1).train()
    images = torch.randint(0, 256, (250, 1, 8, 8), dtype=torch.uint8)
    labels = torch.randint(0, 4, (250,))
    norm = Normalizer((0.35,), (0.3,))
    model.eval()
    with torch.no_grad():
        expected = 100.0 * (model(norm.from_uint8(images)).argmax(1) == labels).sum().item() / 250
    model.train()
    kept = Evaluator(images, labels, norm, batch_size=64)
    streamed = Evaluator(images, labels, norm, batch_size=64, keep_bytes=0)
    assert kept.kept and not streamed.kept
    assert kept.top1(model) == streamed.top1(model) == expected
    assert model.training
    bn = next(m for m in model.modules() if isinstance(m, torch.nn.BatchNorm2d))
    before = bn.running_mean.clone()
    kept.top1(model)
    assert torch.equal(bn.running_mean, before)  # eval mode inside: statistics untouched


def test_bf16_and_fp32_steps_agree_to_bf16_precision():
    """One KD loss on the same models and batch in both precisions: bf16 keeps 2-3
    significant digits, so they agree to a few per cent and differ (bf16 did run)."""
    torch.manual_seed(0)
    teacher, student = build_model("cnn_m", 4, 1).eval(), build_model("cnn_s", 4, 1).eval()
    x = torch.randn(32, 1, 16, 16)
    losses = {}
    for name in ("fp32", "bf16"):
        path = FastPath("cpu", name)
        for m in (teacher, student):
            path.prepare(m)
        with path.autocast():
            t, s = teacher(x), student(x)
        losses[name] = F.kl_div(F.log_softmax(s / 4, 1), F.softmax(t / 4, 1), reduction="batchmean")
    assert losses["fp32"] != losses["bf16"]
    assert torch.allclose(losses["fp32"], losses["bf16"], rtol=0.05)
