"""Fast-N and CMI on tiny CPU models: Fast's meta update, reset_l0 and BN moving
average; CMI's contrastive loss and memory bank; both methods' batches and resume."""
from __future__ import annotations

import copy

import pytest
import torch
import torch.nn.functional as F

from dfkd_bench.inversion import KeepBest, random_resized_crop
from dfkd_bench.method import MethodContext
from dfkd_bench.methods.cmi import CMI, CMIConfig, contrastive_loss
from dfkd_bench.methods.fast import Fast, FastConfig
from tests.helpers import method_context

SHAPE = (1, 16, 16)


@pytest.fixture(autouse=True, scope="module")
def one_thread():
    """Models this small run fastest on one thread, and a shared CPU stays responsive."""
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


def make_ctx(seed: int = 0, warmup: int = 0) -> MethodContext:
    # BN running statistics from N(0, 1) inputs for the BN loss to match
    return method_context(classes=10, shape=SHAPE, teacher="cnn_m", seed=seed, bn_input=lambda s: torch.randn(16, *s),
                          mean=(0.3,), std=(0.4,), crop_padding=2, warmup_epochs=warmup)


def fast(**changes) -> Fast:
    return Fast(FastConfig(**{"steps": 2, "synth_batch": 8, "nz": 16, **changes}), make_ctx())


def cmi(**changes) -> CMI:
    return CMI(CMIConfig(**{"steps": 2, "synth_batch": 8, "nz": 16, "bank_size": 20, "n_neg": 8, **changes}),
               make_ctx())


def params_and_buffers(module: torch.nn.Module) -> dict[str, torch.Tensor]:
    return {k: v.detach().clone() for k, v in module.state_dict().items()}


@pytest.mark.parametrize("meta", ["maml", "reptile"])
def test_fast_meta_update_moves_the_meta_generator(meta):
    method = fast(meta=meta)
    before = {k: p.detach().clone() for k, p in method.generator.named_parameters()}
    method.synthesize(0)
    moved = [k for k, p in method.generator.named_parameters() if not torch.equal(p, before[k])]
    assert moved == list(before)


def test_fast_reset_l0_reinitialises_exactly_l1_and_first_bn():
    method = fast(reset_round=2)
    method.synthesize(0)  # round 1 of 2: no reset yet, the meta update moves every layer
    assert not method.maybe_reset()
    before = params_and_buffers(method.generator)
    method.round = 2
    assert method.maybe_reset()
    after = params_and_buffers(method.generator)
    reset = {"l1.weight", "l1.bias", "conv_blocks0.0.weight", "conv_blocks0.0.bias"}
    for k in before:
        if k in reset:
            assert not torch.equal(before[k], after[k]), k
        else:
            assert torch.equal(before[k], after[k]), k
    # as the reference's reset_l0: weights N(0, 0.02), biases 0, and BN gamma N(0, 0.02)
    gamma = after["conv_blocks0.0.weight"]
    assert abs(gamma.mean()) < 0.01 and 0.01 < gamma.std() < 0.03
    assert abs(after["l1.weight"].std() - 0.02) < 0.002
    assert not after["l1.bias"].any() and not after["conv_blocks0.0.bias"].any()


def test_fast_reset_bn_gamma_one_is_the_conventional_form():
    method = fast(reset_round=1, reset_bn_gamma=1.0)
    method.round = 1
    assert method.maybe_reset()
    gamma = method.generator.conv_blocks0[0].weight.detach()
    assert abs(gamma.mean() - 1) < 0.01 and 0.01 < gamma.std() < 0.03


def test_fast_reptile_is_one_meta_adam_step_towards_the_copy():
    method = fast(meta="reptile", steps=3, lr_g=1e-3)
    before = {k: p.detach().clone() for k, p in method.generator.named_parameters()}
    method.synthesize(0)
    for k, p in method.generator.named_parameters():
        copy_p = dict(method.fast_generator.named_parameters())[k].detach()
        diff = copy_p - before[k]
        # a first Adam step moves each weight by lr (= lr_g * N) in the sign of its gradient,
        # here 67 * (meta - copy): towards the copy
        moved = diff.abs() * 67 > 1e-4  # far above Adam's eps, where the step is lr exactly
        expected = before[k] + 3e-3 * torch.sign(diff)
        assert torch.allclose(p.detach()[moved], expected[moved], atol=1e-6), k


def test_fast_adversarial_term_starts_at_the_last_warmup_round():
    """The reference counts rounds from 1 and switches adv on at round ``warmup``."""
    method = Fast(FastConfig(steps=1, synth_batch=4, nz=8), make_ctx(warmup=2))
    calls = []
    method.ctx.student.register_forward_hook(lambda *args: calls.append(1))
    counts = []
    for epoch in range(3):
        calls.clear()
        method.synthesize(epoch)
        counts.append(len(calls))
    assert counts == [0, 1, 1]


def test_fast_reset_waits_for_the_warmup():
    method = Fast(FastConfig(steps=1, synth_batch=4, nz=8, reset_round=1), make_ctx(warmup=2))
    method.round = 1
    assert not method.maybe_reset()
    method.round = 3
    assert method.maybe_reset()


def test_fast_bn_moving_average_blends_from_the_second_round():
    with_mmt, plain = fast(bn_mmt=0.9), fast(bn_mmt=0.0)
    logs = []
    for epoch in range(2):
        for method in (with_mmt, plain):
            torch.manual_seed(10 + epoch)
            logs.append(method.synthesize(epoch)[1]["bn"])
    assert logs[0] == logs[1]  # first round: no average yet
    assert logs[2] != logs[3]
    # Golden: the hook compares against 0.1 * current + 0.9 * average.
    hook = with_mmt.hooks[0]
    x = torch.randn(8, *SHAPE)
    with torch.enable_grad():
        with_mmt.ctx.teacher(x)
    m = hook.module
    expected = (torch.norm(m.running_mean - (0.1 * hook.mean + 0.9 * hook.avg_mean))
                + torch.norm(m.running_var - (0.1 * hook.var + 0.9 * hook.avg_var)))
    assert torch.allclose(hook.loss, expected)


def test_cmi_contrastive_loss_by_hand_with_bank_rows_as_anchors():
    torch.manual_seed(0)
    local = F.normalize(torch.randn(5, 6), dim=1).requires_grad_()
    glob = F.normalize(torch.randn(5, 6), dim=1).requires_grad_()
    loss = contrastive_loss(local, glob, n_batch=2, T=0.2)
    logits = local.detach() @ glob.detach().t() / 0.2
    per_row = -(logits.diag() - logits.logsumexp(dim=1))
    assert loss.item() == pytest.approx((per_row[:2].mean() + per_row[2:].mean()).item(), rel=1e-5)
    assert contrastive_loss(local, glob, n_batch=5, T=0.2).item() == pytest.approx(per_row.mean().item(), rel=1e-5)
    loss.backward()
    assert local.grad.abs().sum() > 0 and glob.grad is None  # the global views are detached
    eye = torch.eye(4)
    assert contrastive_loss(eye, eye, 4, 0.05) < 1e-6  # distinct instances are told apart


def test_cmi_head_bank_and_features_follow_the_reference():
    method = cmi()
    feature_dim = sum(m.num_features for m in method.ctx.teacher.modules() if isinstance(m, torch.nn.BatchNorm2d))
    assert method.head[0].weight.shape == (feature_dim, feature_dim)  # hidden width = feature width
    assert method.head[2].weight.shape == (256, feature_dim)
    assert method.head_optimizer.defaults["betas"] == (0.9, 0.999)
    assert method.bank.shape == (20, 2 * feature_dim)  # both views of an image
    method.synthesize(0)
    local, glob = method.bank[:8].chunk(2, dim=1)
    assert method.bank_count == 8 and not torch.equal(local, glob)
    # the round's generator starts from the reference's N(0, 0.02) initialisation (one
    # Adam step of 1e-3 later); PyTorch's default would give about 0.14 at nz 16
    one_step = cmi(steps=1)
    one_step.synthesize(0)
    assert abs(one_step.generator.l1.weight.std() - 0.02) < 0.003
    gamma = one_step.generator.conv_blocks1[1].weight
    assert abs(gamma.mean() - 1) < 0.01


def test_cmi_features_are_the_resnet_stages_where_the_teacher_has_them():
    from dfkd_bench.errors import UserError
    from dfkd_bench.methods.cmi import feature_layers
    from dfkd_bench.models import build_model

    resnet = build_model("resnet18", 10, 3)
    assert feature_layers(resnet, "auto") == [resnet.layer1, resnet.layer2, resnet.layer3, resnet.layer4]
    assert len(feature_layers(resnet, "bn")) == sum(isinstance(m, torch.nn.BatchNorm2d) for m in resnet.modules())
    small = build_model("cnn_m", 10, 1)
    assert all(isinstance(m, torch.nn.BatchNorm2d) for m in feature_layers(small, "auto"))
    with pytest.raises(UserError, match="features=blocks needs a teacher with four stages"):
        feature_layers(small, "blocks")


def test_cmi_memory_bank_is_a_ring():
    method = cmi(bank_size=5)
    dim = method.bank.shape[1]
    method.add_to_bank(torch.full((3, dim), 1.0))
    method.add_to_bank(torch.full((4, dim), 2.0))
    assert method.bank_count == 5 and method.bank_next == 2
    assert method.bank[:, 0].tolist() == [2.0, 2.0, 1.0, 2.0, 2.0]
    assert method.sample_bank(10).shape == (5, dim)


def test_random_resized_crop_keeps_shape_and_full_crop_is_identity():
    x = torch.rand(4, 3, 12, 12)
    assert random_resized_crop(x, (0.25, 1.0)).shape == x.shape
    assert torch.allclose(random_resized_crop(x, (1.0, 1.0), (1.0, 1.0)), x, atol=1e-5)


@pytest.mark.parametrize("make", [fast, cmi, lambda: cmi(adv_loss="js", bank_size=0)],
                         ids=["fast", "cmi", "cmi-js-nobank"])
def test_batch_shape_range_and_device(make):
    method = make()
    batch, logs = method.synthesize(0)
    assert batch.images.shape == (8, *SHAPE) and batch.labels.shape == (8,)
    assert batch.images.device.type == "cpu" and not batch.images.requires_grad
    assert torch.equal(method.ctx.normalizer.clamp(batch.images), batch.images)
    assert all(isinstance(v, float) for v in logs.values()) and "loss" in logs


@pytest.mark.parametrize("make", [fast, cmi], ids=["fast", "cmi"])
def test_state_dict_round_trip_reproduces_the_next_round(make):
    original = make()
    for epoch in range(2):
        original.synthesize(epoch)
    state = copy.deepcopy(original.state_dict())
    torch.manual_seed(123)
    expected, expected_logs = original.synthesize(2)
    resumed = make()
    resumed.load_state_dict(state)
    torch.manual_seed(123)
    got, got_logs = resumed.synthesize(2)
    assert torch.equal(got.images, expected.images) and torch.equal(got.labels, expected.labels)
    assert got_logs == expected_logs


# Fast's reset_l0 falls at round 2 + warm-up 1 = epoch 2, after the cut: the round counter must resume.
@pytest.mark.parametrize("method,changes", [("fast", {"reset_round": 2}), ("cmi", {})])
def test_harness_resume_matches_uninterrupted(method, changes, tiny_zoo, tmp_path):
    from dfkd_bench import harness
    from tests.helpers import StopAfter, checkpoint, same_tensors, smoke_spec

    def spec(out):
        return smoke_spec(method, out, epochs=4, **{"steps": 2, "synth_batch": 8, "nz": 16, "kd_steps": 2,
                                                    "warmup_epochs": 1, **changes})

    full = harness.run(spec(tmp_path / "full"))
    with pytest.raises(KeyboardInterrupt):
        harness.run(spec(tmp_path / "cut"), StopAfter(1))
    resumed = harness.run(spec(tmp_path / "cut"))
    assert resumed.status == "completed" and resumed.final_top1 == full.final_top1
    a, b = checkpoint(full, tmp_path / "full"), checkpoint(resumed, tmp_path / "cut")
    assert same_tensors(a["trainer"]["student"], b["trainer"]["student"])
    assert a["feed"]["shards"] == b["feed"]["shards"] and len(a["feed"]["shards"]) == 4  # one a round
    for name, _ in a["feed"]["shards"]:
        assert same_tensors(torch.load(tmp_path / "full" / full.name / "pool" / name, weights_only=True),
                            torch.load(tmp_path / "cut" / full.name / "pool" / name, weights_only=True))


def test_keep_best_keeps_the_lowest_loss_step_on_device_first_on_ties():
    best = KeepBest()
    losses = [3.0, 1.0, 2.0, 1.0, 0.5, 4.0]
    for i, loss in enumerate(losses):
        x = torch.full((2, 3), float(i))
        best.update({"loss": torch.tensor(loss), "bn": torch.tensor(10.0 + i)}, x, -x)
        if i == 3:  # a tie with step 1 keeps step 1
            assert torch.equal(best.tensors[0], torch.full((2, 3), 1.0))
    assert best.logs() == {"loss": 0.5, "bn": 14.0}
    assert torch.equal(best.tensors[0], torch.full((2, 3), 4.0)) and torch.equal(best.tensors[1], torch.full((2, 3), -4.0))


def test_generator_init_fresh_starts_every_round_from_a_new_initialisation():
    """Issue 12, SSD-KD's Algorithm 1 line 4: ``fresh`` re-initialises the round's
    generator (a new draw each round, not the meta generator) and never meta-updates;
    ``meta`` starts from the meta generator."""
    method = fast(generator_init="fresh")
    meta_before = params_and_buffers(method.generator)
    starts = []
    for _ in range(2):
        method.start_round()
        starts.append(params_and_buffers(method.fast_generator))
    assert not all(torch.equal(starts[0][k], starts[1][k]) for k in starts[0])  # a new draw each round
    assert not all(torch.equal(starts[0][k], meta_before[k]) for k in starts[0])
    method.synthesize(0)
    assert all(torch.equal(v, meta_before[k]) for k, v in params_and_buffers(method.generator).items())
    meta = fast()
    meta.start_round()
    assert all(torch.equal(v, params_and_buffers(meta.generator)[k])
               for k, v in params_and_buffers(meta.fast_generator).items())


def test_kd_loss_gradient_is_finite_where_a_teacher_probability_underflows():
    """Issue 30: a generator step takes the KL's gradient through the teacher's logits;
    with probabilities as kl_div's target it was log(0) * 0 = NaN wherever a teacher
    probability underflowed (logits 200 apart), which NaN'ed SSD-KD's generator on
    resnet34 -> resnet18 (digits)."""
    import math

    from dfkd_bench.inversion import kd_loss

    t = torch.tensor([[0.0, 200.0, -5.0], [0.0, math.log(3.0), -1e4]], requires_grad=True)
    loss = kd_loss(torch.zeros(2, 3), t, 1.0, reduction="none")
    # row 2: p_t = (1/4, 3/4, 0) against uniform thirds
    assert loss[1].item() == pytest.approx(0.25 * math.log(0.75) + 0.75 * math.log(2.25), abs=1e-6)
    loss.sum().backward()
    assert torch.isfinite(t.grad).all() and t.grad[0].tolist() == [0.0, 0.0, 0.0]  # a saturated softmax
