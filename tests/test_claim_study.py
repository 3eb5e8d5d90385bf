"""Issue 31: the step-faithful claim study's grid keeps the SSD-KD paper's ratios (what the
CPU study's budgets did not), checked on the plan itself: student steps, buffer turnover,
draws per buffer sample, the generator's reset at the paper's share of the distillation epochs."""
from __future__ import annotations

from dfkd_bench import sweep
from tests.conftest import ROOT


def arms() -> dict[str, object]:
    specs = sweep.expand(sweep.load_grid(ROOT / "grids" / "claim-study.yaml"))
    named = {}
    for s in specs:
        m = s.method_config
        key = {("fast", 2): "F", ("fast", 10): "F10"}.get((s.method, getattr(m, "steps", 0)))
        if s.method == "kd":
            key = "R"
        elif s.method == "ssdkd":
            key = {"none": "N", "no-ps": "P", "no-balance": "B"}.get(s.preset) or (
                "S2" if s.run.kd_passes == 2 else "S" if m.task_target == "teacher" else "S'")
        named[key] = s
    return named


def total_steps(spec) -> int:
    return (spec.run.epochs - spec.run.warmup_epochs) * spec.run.steps_per_epoch()


def test_the_arms_keep_the_papers_step_ratios():
    a = arms()
    assert sorted(a) == ["B", "F", "F10", "N", "P", "R", "S", "S'", "S2"]
    assert {s.run.precision for s in a.values()} == {"fp32"} and {s.run.num_threads for s in a.values()} == {1}
    assert {s.run.batch_size for s in a.values()} == {64}
    f, s = a["F"], a["S"]
    # Fast2: 400 KD steps an epoch (the paper's), 100 distillation epochs after 100 synthesis-only rounds
    assert (f.run.warmup_epochs, f.run.epochs, f.run.steps_per_epoch(), total_steps(f)) == (100, 200, 400, 40000)
    assert total_steps(a["F10"]) == 40000 and a["F10"].method_config.steps == 10
    # SSD-KD: a buffer of one twentieth of Fast2's draws an epoch, one pass: 20 steps an epoch
    assert s.run.data_scale * 20 == f.run.steps_per_epoch() * f.run.batch_size
    assert (s.run.steps_per_epoch(), total_steps(s), total_steps(a["S2"])) == (20, 2000, 4000)
    synth = s.method_config.synth_batch
    assert s.run.warmup_epochs * synth >= s.run.data_scale  # full before the first KD step
    assert synth / s.run.data_scale == 0.05  # 5 % of the buffer is new each round
    # each sample lives data_scale / synth rounds and is drawn batch x steps / data_scale times a round
    draws = (s.run.data_scale / synth) * s.run.steps_per_epoch() * s.run.batch_size / s.run.data_scale
    assert draws == 20
    assert (s.method_config.task_target, a["S'"].method_config.task_target) == ("teacher", "random")
    n = a["N"].method_config
    assert not (n.priority_sampling or n.difficulty or n.diversity) and total_steps(a["N"]) == 2000
    p, b = a["P"].method_config, a["B"].method_config  # one part off each, the rest as S
    assert (p.priority_sampling, p.difficulty, p.diversity, b.priority_sampling, b.difficulty, b.diversity) == \
        (False, True, True, True, False, False)
    assert {total_steps(a[k]) for k in "PB"} == {2000} and {a[k].method_config.task_target for k in "PB"} == {"teacher"}
    assert a["R"].run.data_scale == 1280 and total_steps(a["R"]) == 2000  # real data, S's steps


def test_the_generator_resets_at_the_papers_share_of_the_distillation_epochs():
    for spec in arms().values():
        if spec.method == "kd":
            continue
        m, r = spec.method_config, spec.run
        assert m.reset_round / (r.epochs - r.warmup_epochs) == 120 / 200  # the paper: 120 of its 200
        assert (m.steps, m.lr_g, m.lr_z) in ((2, 5e-3, 0.015), (10, 2e-3, 0.01))
        assert (m.bn, m.oh, m.adv, m.bn_mmt, m.synth_batch) == (10.0, 0.5, 1.33, 0.9, 64)
