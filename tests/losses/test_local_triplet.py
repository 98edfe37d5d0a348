import math

import pytest
import torch

from cfcd.losses import LocalTripletLoss, StepOutputs, local_triplet_loss
from cfcd.losses.local_triplet import match_pairs, split_tuples
from cfcd.model.net import LocalFeatures, local_features

DIM = 16


def unit(**coefs):
    """Unit vector from coefficients on the basis, e.g. unit(e0=1, e13=0.2)."""
    v = torch.zeros(DIM)
    for name, c in coefs.items():
        v[int(name[1:])] = c
    return v / v.norm()


def sq(cos):
    """|a - b|^2 of two unit vectors with cosine ``cos``."""
    return 2.0 - 2.0 * cos


# One tuple [anchor, positive, negative 1, negative 2] of 8 positions each.
ANCHOR = [unit(e0=1), unit(e1=1), unit(e2=1, e8=0.30), unit(e2=1, e9=0.32),
          unit(e3=1), unit(e10=1), unit(e11=1), unit(e12=1)]  # fmt: skip
POSITIVE = [
    unit(e0=1, e13=0.2),  # p0 <-> q0: kept
    unit(e1=1, e14=0.3),  # p1 <-> q1: kept
    unit(e2=1),  # q2 and q3 almost equally near: ratio 0.94 > 0.9, rejected
    unit(e3=1),  # p3 <-> q4 exact, but p3 has low attention: rejected
    unit(e0=1, e4=0.6),  # nearest anchor q0 prefers p0: not mutual, rejected
    unit(e5=1), unit(e6=1), unit(e7=1),
]  # fmt: skip
POSITIVE_ATTENTION = [8.0, 7.0, 6.0, 1.0, 5.0, 0.0, 0.0, 0.0]  # prominent: p0, p1, p2, p4
NEGATIVE_1 = [unit(e0=1, e15=0.25),  # hardest for q0
              unit(e0=1, e15=0.5),  # a farther decoy for q0
              unit(e1=1, e15=0.1),  # hardest for q1
              unit(e5=1), unit(e6=1), unit(e7=1), unit(e8=1), unit(e9=1)]  # fmt: skip
NEGATIVE_2 = [unit(e1=1, e15=2.0), unit(e4=1), unit(e5=1), unit(e0=1, e15=3.0),
              unit(e6=1), unit(e7=1), unit(e8=1), unit(e9=1)]  # fmt: skip

# Per kept pair and negative: |q-p|^2 - |q-n|^2 + 0.1; the q0/N2 and q1/N2 terms are negative.
EXPECTED = (
    sq(1 / math.sqrt(1.04)) - sq(1 / math.sqrt(1.0625)) + 0.1  # q0, p0, N1[0]
    + sq(1 / math.sqrt(1.09)) - sq(1 / math.sqrt(1.01)) + 0.1  # q1, p1, N1[2]
)


def hand_tuple():
    desc = torch.stack([torch.stack(image) for image in (ANCHOR, POSITIVE, NEGATIVE_1, NEGATIVE_2)])
    attention = torch.ones(4, 8)
    attention[1] = torch.tensor(POSITIVE_ATTENTION)
    return desc, attention


def unmatched_tuple():
    """Anchor and positive on orthogonal directions: every ratio is 1, nothing is kept."""
    eye = torch.eye(DIM)
    desc = torch.stack([eye[:8], eye[8:], eye[:8], eye[8:]])
    return desc, torch.rand(4, 8, generator=torch.Generator().manual_seed(0))


def pairs(desc, attention, ratio=0.9, tuple_size=4):
    tuples, att = split_tuples(desc, attention, tuple_size)
    return [tuple(int(v) for v in pair) for pair in zip(*match_pairs(tuples[:, 0], tuples[:, 1], att[:, 1], ratio))]


def triplet(desc, attention, **kwargs):
    return local_triplet_loss(desc, attention, **{"tuple_size": 4, **kwargs})


def test_kept_pairs_pass_mutual_ratio_and_attention():
    desc, attention = hand_tuple()
    assert pairs(desc, attention) == [(0, 0, 0), (0, 1, 1)]
    # Each rejection has the stated cause: relaxing it alone admits the pair.
    assert (0, 2, 2) in pairs(desc, attention, ratio=0.95)
    attention[1, 3] = 10.0
    assert (0, 4, 3) in pairs(desc, attention)


def test_loss_value_with_hard_negatives():
    desc, attention = hand_tuple()
    assert EXPECTED > 0.2  # both pairs contribute
    loss = triplet(desc, attention)
    assert loss.item() == pytest.approx(EXPECTED, rel=1e-5)
    weighted = triplet(desc, attention, weight=0.05)
    assert weighted.item() == pytest.approx(0.05 * EXPECTED, rel=1e-5)
    smaller_margin = triplet(desc, attention, margin=0.05)
    assert smaller_margin.item() == pytest.approx(EXPECTED - 2 * 0.05, rel=1e-5)


def test_tuple_without_kept_pair_contributes_zero():
    empty_desc, empty_att = unmatched_tuple()
    empty_desc.requires_grad_()
    loss = triplet(empty_desc, empty_att)
    loss.backward()
    assert loss.item() == 0.0 and not empty_desc.grad.any()

    desc, attention = hand_tuple()
    batch = torch.cat([desc, empty_desc.detach(), desc]), torch.cat([attention, empty_att, attention])
    assert pairs(*batch) == [(0, 0, 0), (0, 1, 1), (2, 0, 0), (2, 1, 1)]
    assert triplet(*batch).item() == pytest.approx(2 * EXPECTED, rel=1e-5)


def test_gradients_reach_the_kept_descriptors_only():
    desc, attention = hand_tuple()
    desc.requires_grad_()
    triplet(desc, attention).backward()
    q0, p0, n = desc.detach()[0, 0], desc.detach()[1, 0], desc.detach()[2, 0]
    # d/dq (|q-p|^2 - |q-n|^2) = 2 (n - p); only the N1 term of q0 is active.
    torch.testing.assert_close(desc.grad[0, 0], 2 * (n - p0))
    torch.testing.assert_close(desc.grad[1, 0], -2 * (q0 - p0))
    torch.testing.assert_close(desc.grad[2, 0], 2 * (q0 - n))
    assert not desc.grad[2, 1].any()  # the decoy is not the nearest negative
    assert not desc.grad[3].any()  # all N2 terms are inactive
    assert not desc.grad[1, 2:].any()  # rejected positives


def test_runs_on_local_features_and_backpropagates():
    g = torch.Generator().manual_seed(5)
    f4 = torch.randn(8, 32, 4, 4, generator=g)
    f4[1] = f4[0] + 0.05 * torch.randn(32, 4, 4, generator=g)  # a true positive
    f4[2] = f4[0] + 0.05 * torch.randn(32, 4, 4, generator=g)  # a negative as hard as the positive
    f4.requires_grad_()
    local = local_features(f4)
    assert pairs(local.descriptors, local.attention)
    loss = triplet(local.descriptors, local.attention)
    loss.backward()
    assert torch.isfinite(loss) and loss.item() > 0
    assert torch.isfinite(f4.grad).all()
    assert all(f4.grad[b].abs().sum() > 0 for b in range(3))  # anchor, positive, hard negative


def test_batch_must_hold_whole_tuples():
    desc, attention = hand_tuple()
    with pytest.raises(ValueError, match="multiple of the tuple size"):
        triplet(desc, attention, tuple_size=3)


def test_term_normalises_the_sum_by_the_process_batch():
    # the term's contract: mean over processes = sum over the global batch * norm_images / B_global
    desc, attention = hand_tuple()
    desc = torch.cat([desc, desc])  # 2 tuples, B = 8 images
    attention = torch.cat([attention, attention])
    outputs = StepOutputs(torch.zeros(8, 2), torch.zeros(8, 3), LocalFeatures(desc, attention), tuple_size=4)
    term = LocalTripletLoss(norm_images=16)
    assert term(outputs, torch.zeros(8)).item() == pytest.approx(2 * EXPECTED * 16 / 8, rel=1e-5)
    assert term.logs() == {"local_triplet": pytest.approx(2 * EXPECTED * 2, rel=1e-5)}
    with pytest.raises(ValueError, match="sampler = tuples"):
        term(StepOutputs(torch.zeros(8, 2), torch.zeros(8, 3), LocalFeatures(desc, attention)), torch.zeros(8))
