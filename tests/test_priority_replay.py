"""SSD-KD's replay buffer: priority sampling (Eq. 6), importance weights (Eq. 5),
constant size with oldest-first eviction, class shares for the diversity term."""
from __future__ import annotations

import math

import pytest
import torch

from dfkd_bench.pool import PriorityReplay


def filled(priorities, classes=None, alpha=0.6, eps=1e-6):
    buf = PriorityReplay(capacity=len(priorities), alpha=alpha, eps=eps)
    n = len(priorities)
    meta = {"priority": torch.tensor(priorities, dtype=torch.float)}
    if classes is not None:
        meta["teacher_class"] = torch.tensor(classes)
    buf.add(torch.arange(n).float().view(n, 1, 1, 1), torch.arange(n), meta)
    return buf


def test_probabilities_follow_eq6():
    prios = [0.0, 1.0, 2.0, 4.0]
    buf = filled(prios, alpha=0.6, eps=0.01)
    scaled = [(abs(d) + 0.01) ** 0.6 for d in prios]
    expected = [s / sum(scaled) for s in scaled]
    assert torch.allclose(buf.probabilities(), torch.tensor(expected), atol=1e-7)


def test_sampling_frequencies_converge_to_p():
    buf = filled([0.1, 1.0, 3.0, 6.0, 0.5], alpha=0.8)
    g = torch.Generator().manual_seed(0)
    counts = torch.zeros(5)
    draws = 200_000
    for _ in range(draws // 1000):
        _, labels, _ = buf.sample(1000, generator=g)
        counts += torch.bincount(labels, minlength=5).float()
    # 200k multinomial draws: standard error below 0.0012 for every p; 0.005 is > 4 sigma.
    assert torch.allclose(counts / draws, buf.probabilities(), atol=0.005)


def test_alpha_zero_is_uniform():
    buf = filled([0.0, 10.0, 100.0], alpha=0.0)
    assert torch.allclose(buf.probabilities(), torch.full((3,), 1 / 3))


def test_importance_weights_follow_eq5_as_printed_by_default():
    prios = [0.5, 1.0, 2.0, 8.0]
    buf = filled(prios, alpha=0.6, eps=1e-6)
    p = buf.probabilities()
    beta = 0.4
    raw = [(4 * float(pi)) ** (-beta) for pi in p]
    idx = torch.tensor([0, 1, 2, 3, 3])
    assert torch.allclose(buf.importance_weights(idx, beta), torch.tensor([raw[i] for i in idx.tolist()]), atol=1e-6)
    w = buf.importance_weights(idx, beta, "buffer")
    expected = torch.tensor([raw[i] / max(raw) for i in idx.tolist()])
    assert torch.allclose(w, expected, atol=1e-6)
    assert math.isclose(float(w[0]), 1.0, rel_tol=1e-6)  # the least likely sample has the largest weight
    _, _, meta = buf.sample(6, beta=beta)
    assert torch.allclose(meta["is_weight"], buf.importance_weights(meta["index"], beta))
    assert torch.equal(buf.importance_weights(idx, 0.0), torch.ones(5))  # beta 0: no correction


def test_printed_eq5_weights_average_one_and_stay_near_it_under_refresh():
    """Issue 12: at beta 1 a sampled item's expected weight is sum_i P_i / (N P_i) = 1;
    after 1,000 sample-and-refresh steps (priority = weight x a fixed per-item KL, as
    SSD-KD's Eq. 4) the mean weight stays above 0.5. Dividing by the buffer's maximum
    (the old default) ends far below it."""
    g = torch.Generator().manual_seed(0)
    n = 1000
    kl = torch.rand(n, generator=g) * 2

    def run(norm):
        buf = PriorityReplay(capacity=n, alpha=0.6)
        buf.add(torch.zeros(n, 1, 1, 1), None, {"priority": torch.rand(n, generator=g)})
        _, _, meta = buf.sample(200_000, generator=g, beta=1.0, is_norm=norm)
        first = float(meta["is_weight"].mean())
        means = []
        for _ in range(1000):
            _, _, meta = buf.sample(64, generator=g, beta=1.0, is_norm=norm)
            buf.update_priorities(meta["index"], meta["is_weight"] * kl[meta["index"].cpu()])
            means.append(float(meta["is_weight"].mean()))
        return first, sum(means[-100:]) / 100

    first, late = run("none")
    assert first == pytest.approx(1.0, rel=0.05) and late > 0.5
    assert run("buffer")[1] < 0.5


def test_importance_weight_normalisations_batch_and_mean():
    buf = filled([0.5, 1.0, 2.0, 8.0], alpha=0.6, eps=1e-6)
    p = buf.probabilities()
    beta = 0.7
    idx = torch.tensor([1, 2, 3, 3])  # item 0 (the buffer-wide max weight) not drawn
    raw = torch.tensor([(4 * float(p[i])) ** (-beta) for i in idx.tolist()])
    assert torch.allclose(buf.importance_weights(idx, beta, "batch"), raw / raw.max(), atol=1e-6)
    assert torch.allclose(buf.importance_weights(idx, beta, "mean"), raw / raw.mean(), atol=1e-6)
    # by the batch max the largest weight is exactly 1; by the buffer max it is below 1 here
    assert math.isclose(float(buf.importance_weights(idx, beta, "batch").max()), 1.0, rel_tol=1e-6)
    assert float(buf.importance_weights(idx, beta, "buffer").max()) < 0.99
    _, _, meta = buf.sample(6, beta=beta, is_norm="mean")
    assert math.isclose(float(meta["is_weight"].mean()), 1.0, rel_tol=1e-5)
    with pytest.raises(ValueError, match="accepted: none, buffer, batch, mean"):
        buf.importance_weights(idx, beta, "median")


def test_buffer_keeps_constant_size_and_evicts_oldest():
    buf = PriorityReplay(capacity=6)
    for start in range(0, 20, 4):
        ids = torch.arange(start, start + 4)
        buf.add(ids.float().view(4, 1, 1, 1), ids, {"priority": ids.float(), "teacher_class": ids % 3})
        assert len(buf) <= 6 and buf.priorities.shape[0] == len(buf) == buf.teacher_classes.shape[0]
    assert buf.labels.tolist() == [14, 15, 16, 17, 18, 19]
    assert buf.priorities.tolist() == [14, 15, 16, 17, 18, 19]
    assert buf.teacher_classes.tolist() == [2, 0, 1, 2, 0, 1]


def test_update_priorities_and_class_share():
    buf = filled([1.0, 1.0, 1.0, 1.0], classes=[0, 0, 1, 2])
    buf.update_priorities(torch.tensor([2]), torch.tensor([5.0]))
    assert buf.priorities.tolist() == [1.0, 1.0, 5.0, 1.0]
    assert buf.class_share(torch.tensor([0, 1, 3])).tolist() == [0.5, 0.25, 0.0]


def test_an_item_drawn_twice_in_a_batch_gets_the_mean_of_its_priorities():
    """Issue 30: sampling with replacement draws duplicates; indexed assignment kept an
    unspecified one of their values."""
    buf = filled([1.0, 2.0, 3.0, 4.0], classes=[0, 0, 1, 2])
    buf.update_priorities(torch.tensor([1, 3, 1, 1]), torch.tensor([10.0, 20.0, 30.0, 50.0]))
    assert buf.priorities.tolist() == [1.0, 30.0, 3.0, 20.0]  # item 1: (10 + 30 + 50) / 3


def test_state_round_trip_through_shards_and_state():
    """What a checkpoint keeps: the fixed fields once (``take_unsaved``, oldest first,
    possibly more than the pool still holds) and the mutable ones in ``state_dict``."""
    buf = PriorityReplay(capacity=3)
    ids = torch.arange(4)
    buf.add(ids.float().view(4, 1, 1, 1), ids, {"priority": ids.float(), "teacher_class": ids % 2})
    first = buf.take_unsaved()
    assert first["images"].flatten().tolist() == [1, 2, 3] and buf.take_unsaved() is None
    buf.add(torch.full((1, 1, 1, 1), 9.0), torch.tensor([9]), {"priority": torch.tensor([5.0])})
    buf.update_priorities(torch.tensor([0]), torch.tensor([7.0]))
    second = buf.take_unsaved()
    fixed = {k: torch.cat([first[k], second[k]]) for k in first}
    other = PriorityReplay()
    other.restore(fixed, buf.state_dict())
    assert other.images.flatten().tolist() == [2, 3, 9] and other.labels.tolist() == [2, 3, 9]
    assert other.priorities.tolist() == [7.0, 3.0, 5.0] and other.teacher_classes.tolist() == [0, 1, -1]
    assert other.capacity == 3 and other.unsaved == 0


def test_empty_buffer_cannot_be_sampled():
    with pytest.raises(RuntimeError, match="empty"):
        PriorityReplay(4).sample(2)
