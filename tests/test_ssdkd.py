"""SSD-KD: phi(x) against hand-computed values, the ablation switches, IS-weighted KD
and priority refresh."""
from __future__ import annotations

import math

import pytest
import torch

from dfkd_bench.method import Batch
from dfkd_bench.registry import METHODS
from tests.helpers import method_context

SSDKD = METHODS.get("ssdkd")


def make(**changes):
    ctx = method_context(mean=(0.5,), std=(0.25,), crop_padding=1, student_mode="train", epochs=5, batch_size=4, T=4.0)
    cfg = SSDKD.config_cls(synth_batch=6, nz=8, **changes)
    method = SSDKD(cfg, ctx)
    method.make_pool(8)
    return method


def fill(method, classes):
    n = len(classes)
    method.buffer.add(torch.zeros(n, 1, 8, 8), None,
                      {"priority": torch.ones(n), "teacher_class": torch.tensor(classes)})


def logits_for(probs):
    return torch.tensor(probs).log()


def test_phi_matches_hand_computation():
    method = make(gamma=2.0)
    fill(method, [0, 0, 0, 1])  # class 0 holds 3/4 of the buffer, class 1 1/4, class 2 none
    t_out = logits_for([[0.7, 0.1, 0.1, 0.1], [0.2, 0.5, 0.2, 0.1], [0.1, 0.1, 0.4, 0.4]])
    # argmax of the third row: first maximum, class 2
    expected = [(1 - 3 / 4) * (1 - 0.7) ** 2, (1 - 1 / 4) * (1 - 0.5) ** 2, (1 - 0) * (1 - 0.4) ** 2]
    assert torch.allclose(method.phi(t_out), torch.tensor(expected), atol=1e-6)


@pytest.mark.parametrize("changes, expected", [
    ({"difficulty": False}, [1 - 3 / 4, 1 - 1 / 4]),
    ({"diversity": False}, [(1 - 0.7) ** 2, (1 - 0.5) ** 2]),
    ({"difficulty": False, "diversity": False}, [1.0, 1.0]),
])
def test_each_balancing_switch_removes_its_factor(changes, expected):
    method = make(**changes)
    fill(method, [0, 0, 0, 1])
    t_out = logits_for([[0.7, 0.1, 0.1, 0.1], [0.2, 0.5, 0.2, 0.1]])
    assert torch.allclose(method.phi(t_out), torch.tensor(expected), atol=1e-6)


def test_task_loss_is_phi_weighted_ce_against_teacher_prediction():
    method = make(task_target="teacher")
    fill(method, [1, 1, 2, 3])
    t_out = logits_for([[0.6, 0.2, 0.1, 0.1], [0.1, 0.7, 0.1, 0.1]])
    ce = [-math.log(0.6), -math.log(0.7)]
    phi = method.phi(t_out)
    expected = (phi[0] * ce[0] + phi[1] * ce[1]) / 2
    assert torch.allclose(method.task_loss(None, t_out, torch.tensor([3, 3])), expected, atol=1e-6)


@pytest.mark.parametrize("task_target, phi_rows", [
    # the mix (default): CE to the random target, phi of the teacher's argmax (0 of 3/4, 1 of 1/4)
    ("random", [(1 - 3 / 4) * (1 - 0.7) ** 2, (1 - 1 / 4) * (1 - 0.5) ** 2]),
    # random target with its own phi: target class 1 holds 1/4 of the buffer, p_T(1) = 0.1 and 0.5
    ("random-focal", [(1 - 1 / 4) * (1 - 0.1) ** 2, (1 - 1 / 4) * (1 - 0.5) ** 2]),
])
def test_random_target_task_terms_weight_ce_to_the_target_by_their_phi(task_target, phi_rows):
    """Issue 30: the two random-target forms differ only in whose class and probability phi
    is taken for; both take CE against the target."""
    method = make(task_target=task_target)
    fill(method, [0, 0, 0, 1])
    t_out = logits_for([[0.7, 0.1, 0.1, 0.1], [0.2, 0.5, 0.2, 0.1]])
    targets = torch.tensor([1, 1])
    labels, phi = method.task_phi(t_out, targets)
    assert torch.equal(labels, targets) and torch.allclose(phi, torch.tensor(phi_rows), atol=1e-6)
    expected = (phi_rows[0] * -math.log(0.1) + phi_rows[1] * -math.log(0.5)) / 2
    assert method.task_loss(None, t_out, targets).item() == pytest.approx(expected, abs=1e-6)


def test_teacher_task_term_is_the_focal_term_on_the_teachers_own_label():
    """The printed reading: its labels are the argmax, and phi for the argmax is phi for
    that label, so the random-focal rule applied to the argmax gives the same weights."""
    method = make(task_target="teacher")
    fill(method, [0, 0, 0, 1])
    t_out = logits_for([[0.7, 0.1, 0.1, 0.1], [0.2, 0.5, 0.2, 0.1]])
    labels, phi = method.task_phi(t_out, torch.tensor([3, 3]))
    assert labels.tolist() == [0, 1]
    assert torch.allclose(phi, method.phi(t_out, labels), atol=0) and torch.allclose(phi, method.phi(t_out))


def test_refresh_form_scores_new_items_like_a_refresh_without_touching_bn_statistics():
    """Issue 30, new_priority="refresh": KL at T 1 on the augmented view (the identity
    here) with the student in train mode, as after_distill_step scores a refresh (w = 1);
    the student's BN running statistics and its eval mode are as before."""
    method = make(new_priority="refresh")
    method.ctx.augment = lambda x: x
    student = method.ctx.student.eval()
    before = {k: v.clone() for k, v in student.state_dict().items()}
    torch.manual_seed(3)
    batch, logs = method.synthesize(0)
    assert not student.training
    assert all(torch.equal(before[k], v) for k, v in student.state_dict().items())
    from dfkd_bench.inversion import kd_loss
    with torch.no_grad():
        t = method.ctx.teacher(batch.images)
        student.train()
        expected = kd_loss(student(batch.images), t, 1.0, reduction="none")
    assert torch.allclose(batch.meta["priority"], expected, atol=1e-6)
    assert logs["priority_new"] == pytest.approx(expected.mean().item(), abs=1e-6)
    stored = make().synthesize(0)[0].meta["priority"]  # the default: eval mode, other numbers
    assert not torch.allclose(stored, expected[: len(stored)])


def test_priority_sampling_off_is_uniform_with_unit_weights():
    method = make(priority_sampling=False)
    fill(method, [0, 1, 2, 3])
    method.buffer.update_priorities(torch.arange(4), torch.tensor([0.0, 1.0, 10.0, 100.0]))
    assert torch.allclose(method.buffer.probabilities(), torch.full((4,), 0.25))
    _, _, meta = method.buffer.sample(5, **method.sample_options(epoch=0))
    assert torch.equal(meta["is_weight"], torch.ones(5))


def test_beta_anneals_to_one():
    method = make(beta=0.4)
    assert method.sample_options(0)["beta"] == pytest.approx(0.4)
    assert method.sample_options(4)["beta"] == pytest.approx(1.0)  # last of 5 epochs
    fixed = make(beta=0.0, beta_final=0.0)  # priority sampling without IS correction
    assert [fixed.sample_options(e)["beta"] for e in range(5)] == [0.0] * 5
    assert make(beta=0.2, beta_final=0.6).sample_options(2)["beta"] == pytest.approx(0.4)


def test_beta_anneals_over_the_distillation_epochs_only():
    """Issue 30: with 2 warm-up rounds of 5, beta is 0.4 at the first KD epoch (2), 0.7 at
    the next and 1 at the last; counting the warm-up started it at 0.4 + 0.6 * 2/4 = 0.7."""
    method = make(beta=0.4)
    method.ctx.run.warmup_epochs = 2
    assert [method.sample_options(e)["beta"] for e in (2, 3, 4)] == pytest.approx([0.4, 0.7, 1.0])


def test_synthesized_batch_carries_priorities_and_enters_the_buffer():
    method = make()
    batch, logs = method.synthesize(0)
    assert batch.images.shape == (6, 1, 8, 8)
    lo, hi = method.ctx.normalizer.clamp(torch.full((1, 1, 1, 1), -1e9)), method.ctx.normalizer.clamp(torch.full((1, 1, 1, 1), 1e9))
    assert batch.images.min() >= lo.min() - 1e-6 and batch.images.max() <= hi.max() + 1e-6
    assert batch.meta["priority"].shape == (6,) and (batch.meta["priority"] >= 0).all()
    method.buffer.add(batch.images, batch.labels, batch.meta)
    assert torch.equal(method.buffer.priorities, batch.meta["priority"].float())
    assert 0.0 <= logs["phi_mean"] <= 1.0


def test_distill_loss_is_is_weighted_and_priorities_refresh():
    method = make()
    batch, _ = method.synthesize(0)
    method.buffer.add(batch.images, batch.labels, batch.meta)
    images, labels, meta = method.buffer.sample(4, beta=0.5)
    sampled = Batch(images, labels, meta)
    losses = method.distill_loss(sampled)
    from dfkd_bench.inversion import kd_loss
    with torch.no_grad():
        t = method.ctx.teacher(images)
    s = method.ctx.student(images)
    expected = (meta["is_weight"] * kd_loss(s, t, 4.0, reduction="none")).mean()
    assert torch.allclose(losses["loss"], expected, atol=1e-6)
    method.after_distill_step(sampled, losses)
    refreshed = method.buffer.priorities[meta["index"]]
    expected_prio = meta["is_weight"] * kd_loss(s.detach(), t, 1.0, reduction="none")
    # an item drawn more than once gets the mean of its values (pool.update_priorities)
    seen: dict[int, list[float]] = {}
    for i, p in zip(meta["index"].tolist(), expected_prio.tolist()):
        seen.setdefault(i, []).append(p)
    assert torch.allclose(refreshed, torch.tensor([sum(seen[i]) / len(seen[i]) for i in meta["index"].tolist()]),
                          atol=1e-6)


def test_is_norm_reaches_the_sampler_and_bad_values_are_refused():
    from dfkd_bench.config import check_fields
    from dfkd_bench.errors import UserError
    from dfkd_bench.plan import configure
    method = make(is_norm="mean")
    fill(method, [0, 1, 2, 3])
    method.buffer.update_priorities(torch.arange(4), torch.tensor([0.1, 1.0, 10.0, 100.0]))
    _, _, meta = method.buffer.sample(16, **method.sample_options(epoch=4))
    assert meta["is_weight"].mean().item() == pytest.approx(1.0, rel=1e-5)
    with pytest.raises(UserError, match="is_norm='max'; accepted: none, buffer, batch, mean"):
        configure(SSDKD, sets={"is_norm": "max"})
    assert configure(SSDKD)[1].is_norm == "none"  # Eq. 5 as printed
    assert configure(SSDKD)[1].task_target == "random"  # measured in reports/cpu-structure.md
    with pytest.raises(UserError, match="ssdkd: is_norm='max'; accepted: none, buffer, batch, mean"):
        check_fields(SSDKD.config_cls(is_norm="max"), "ssdkd")


def test_the_ablation_presets_cover_table_4s_rows():
    """Table 4's six rows as (priority sampling, difficulty, diversity), each a preset at
    both scales, and the two single-term removals beside them."""
    from dfkd_bench.plan import configure
    rows = {"none": (False, False, False), "no-balance": (True, False, False),
            "only-difficulty": (False, True, False), "only-diversity": (False, False, True),
            "no-ps": (False, True, True), "paper": (True, True, True),
            "no-difficulty": (True, False, True), "no-diversity": (True, True, False)}
    for preset, flags in rows.items():
        for name in (preset, "cpu" if preset == "paper" else f"{preset}-cpu"):
            cfg = configure(SSDKD, name)[1]
            assert (cfg.priority_sampling, cfg.difficulty, cfg.diversity) == flags, name


def test_relaxed_preset_has_fast5s_rounds_and_a_buffer_they_fill():
    """Issue 30: Table 2's relaxed scale keeps Fast5's 220 rounds (20 synthesis-only) of 256
    images; its 50,000 buffer fills at round 196 and is evicted from in the last 24."""
    from dfkd_bench.config import RunConfig, apply_changes
    from dfkd_bench.plan import preset_changes

    run, cfg = apply_changes(RunConfig(), SSDKD.config_cls(), preset_changes(SSDKD, "relaxed"), "relaxed")
    fast5, _ = apply_changes(RunConfig(), METHODS.get("fast").config_cls(), METHODS.get("fast").presets["fast5"], "fast5")
    assert (run.epochs, run.warmup_epochs, cfg.synth_batch) == (fast5.epochs, fast5.warmup_epochs, 256) == (220, 20, 256)
    assert run.data_scale == 50000 and -(-run.data_scale // cfg.synth_batch) == 196 <= run.epochs
    assert run.steps_per_epoch() == 196
