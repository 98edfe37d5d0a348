"""The hard-negative tuple sampler against spec section 4, on a hand-made prediction table."""

from __future__ import annotations

import pytest

from cfcd.train.samplers import ShuffleBatchSampler, TupleBatchSampler, hard_negative_tuples

# class: list of (predicted class) per image, in image order.
TABLE = {
    0: [0, 0, 0, 0, 1, 1],  # two images of 0 misclassified as 1 -> misclassified-anchor branch
    1: [1, 1, 1, 1, 1, 0],  # one image of 1 predicted 0: in FP_0
    2: [0, 0, 0, 2],  # three images of 2 predicted 0: in FP_0
    3: [3, 3, 3, 3],  # FP_3 is empty: negatives of a class-3 anchor come from random classes
    4: [4],  # a single image: never an anchor
    5: [5, 5, 2],
    6: [6, 6],
    7: [7, 7],
}
LABELS = [c for c, preds in TABLE.items() for _ in preds]
PREDS = [p for preds in TABLE.values() for p in preds]
FP = {c: {i for i, (y, p) in enumerate(zip(LABELS, PREDS)) if p == c and y != c} for c in TABLE}
TP = {c: {i for i, (y, p) in enumerate(zip(LABELS, PREDS)) if p == c and y == c} for c in TABLE}
T = 5


def check_tuple(t, preds=PREDS, fresh=True):
    """``fresh``: nothing used yet, so TP_c still holds all its images."""
    a, p, *negs = t
    c = LABELS[a]
    assert len(t) == T
    assert LABELS.count(c) >= 2, "anchor class needs >= 2 images"
    assert p != a and LABELS[p] == c, "positive is another image of the anchor class"
    assert all(LABELS[n] != c for n in negs), "negatives come from other classes"
    if fresh and preds is not None and preds[a] != c:
        assert p in TP[c], "misclassified anchor: positive is a correctly classified image of c"


def first_tuples(preds, seeds=range(300)):
    return [hard_negative_tuples(LABELS, preds, T, 1, seed)[0] for seed in seeds]


def test_every_tuple_obeys_the_rules_and_images_are_not_reused_within_a_pass():
    tuples = hard_negative_tuples(LABELS, PREDS, T, 40, seed=3)
    check_tuple(tuples[0])
    for t in tuples[1:]:
        check_tuple(t, fresh=False)
    first = tuples[0] + tuples[1]
    assert len(set(first)) == len(first), "sampling without replacement"


def test_correct_anchor_draws_confused_negatives_from_fp_c():
    def mean_fp(preds):
        hits = [sum(n in FP[0] for n in t[2:]) for t in first_tuples(preds) if LABELS[t[0]] == 0 and PREDS[t[0]] == 0]
        return sum(hits) / len(hits)

    # with the table: each of 3 slots takes FP_0 with p=0.5 (4 images available); random: ~ 4/25 per slot
    assert mean_fp(PREDS) > 1.2
    assert mean_fp(None) < 0.8


def test_misclassified_anchor_branch_uses_tp_positive_fp_and_predicted_class():
    tuples = [t for t in first_tuples(PREDS, range(600)) if LABELS[t[0]] == 0 and PREDS[t[0]] == 1]
    assert tuples, "the misclassified branch was exercised"
    fp_or_predicted = 0
    for t in tuples:
        check_tuple(t)
        fp_or_predicted += sum(n in FP[0] or LABELS[n] == 1 for n in t[2:])
    # 0.33 FP_0 + 0.67 * 0.5 class 1 per slot (~0.67) against ~0.36 for random classes
    assert fp_or_predicted / (3 * len(tuples)) > 0.55


def test_unfilled_slots_take_distinct_random_other_classes():
    for t in first_tuples(PREDS):
        if LABELS[t[0]] == 3:  # FP_3 is empty: every slot is filled from random classes
            classes = [LABELS[n] for n in t[2:]]
            assert len(set(classes)) == len(classes) and 3 not in classes


def test_random_tuples_without_table():
    for t in hard_negative_tuples(LABELS, None, T, 30, seed=1):
        check_tuple(t, preds=None, fresh=False)


def test_deterministic_per_epoch_and_different_across_epochs():
    def order(epoch):
        s = TupleBatchSampler(LABELS, PREDS, T, global_batch=10, rank=0, world_size=1, seed=7)
        s.set_epoch(epoch)
        return list(s)

    assert order(0) == order(0)
    assert order(0) != order(1)


@pytest.mark.parametrize("world", [2, 5])
def test_ranks_take_contiguous_whole_tuples_of_the_same_global_batch(world):
    g = world * T * (2 if world == 2 else 1)
    single = TupleBatchSampler(LABELS, PREDS, T, global_batch=g, rank=0, world_size=1, seed=2)
    ranks = [TupleBatchSampler(LABELS, PREDS, T, global_batch=g, rank=r, world_size=world, seed=2) for r in range(world)]
    for s in (single, *ranks):
        s.set_epoch(4)
    per_rank = [list(s) for s in ranks]
    for step, batch in enumerate(single):
        joined = [item for r in range(world) for item in per_rank[r][step]]
        assert joined == batch, "the ranks' slices make up the single-process global batch"
        for r in range(world):
            idx = [i for i, _ in per_rank[r][step]]
            for k in range(0, len(idx), T):
                check_tuple(idx[k:k + T], fresh=False)


def test_batch_must_split_into_whole_tuples_per_rank():
    with pytest.raises(ValueError, match="divisible by 10"):
        TupleBatchSampler(LABELS, PREDS, T, global_batch=15, rank=0, world_size=2)


def test_shuffle_sampler_resumes_mid_epoch_and_slices_global_batch():
    full = ShuffleBatchSampler(20, global_batch=4, rank=0, world_size=1, seed=1)
    full.set_epoch(3)
    batches = list(full)
    assert len(batches) == 5 and sorted(i for b in batches for i, _ in b) == list(range(20))
    resumed = ShuffleBatchSampler(20, global_batch=4, rank=0, world_size=1, seed=1)
    resumed.set_epoch(3, start_step=2)
    assert list(resumed) == batches[2:]
    halves = [ShuffleBatchSampler(20, global_batch=4, rank=r, world_size=2, seed=1) for r in range(2)]
    for h in halves:
        h.set_epoch(3)
    assert [a + b for a, b in zip(*map(list, halves))] == batches


def test_balanced_batches_hold_whole_groups_of_one_class_and_every_rank_its_share():
    from cfcd.train.registry import SAMPLERS, SamplerInputs

    labels = [i // 5 for i in range(30)] + [6, 6, 7]  # class 7 has one image: its group repeats it

    def batches(rank, world):
        s = SAMPLERS.build("balanced", SamplerInputs(labels, None, 8, rank, world, 3), params={"per_class": 2})
        s.set_epoch(1)
        return [[i for i, _ in b] for b in s]

    single = batches(0, 1)
    assert len(single) == 3  # 16 groups of 2 (33 images), cut to whole global batches of 8
    for batch in single:
        assert all(labels[a] == labels[b] for a, b in zip(batch[::2], batch[1::2])), batch
    two = [batches(r, 2) for r in range(2)]
    assert [a + b for a, b in zip(*two)] == single  # each rank a contiguous half: whole groups
    with pytest.raises(ValueError, match="per_class = 1"):
        SAMPLERS.build("balanced", SamplerInputs(labels, None, 8, 0, 1, 3), params={"per_class": 1})
