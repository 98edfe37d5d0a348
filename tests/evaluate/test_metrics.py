import math

import numpy as np
import pytest

from cfcd.evaluate import compute_ap, compute_map, evaluate_revisitop, format_report, protocol_gnd, rank

N_DB = 12
REST = [i for i in range(N_DB)]


def column(*head):
    """A full ranking of N_DB images that starts with ``head``."""
    return list(head) + [i for i in REST if i not in head]


# Hand-computed queries: (ranking, ok, junk, AP, (P@1, P@5, P@10)).
HAND = [
    # all positives on top
    (column(0, 1, 2), [0, 1], [], 1.0, (1.0, 1.0, 1.0)),
    # junk above and between the positives: junk-free positive ranks 0 and 3
    # AP = (1 + (1/3 + 2/4) / 2) / 2 = 17/24; pos = [1, 4], k' = min(4, k)
    (column(5, 3, 7, 2, 9, 1), [3, 1], [5, 2], 17 / 24, (1.0, 2 / 4, 2 / 4)),
    # the mP@k quirk: the only positive at 1-based rank 3, so k' = 3 for k = 5, 10
    # AP = (0/2 + 1/3) / 2 = 1/6
    (column(4, 6, 8), [8], [], 1 / 6, (0.0, 1 / 3, 1 / 3)),
    # no positives: NaN, left out of the means
    (column(0), [], [1], math.nan, (math.nan,) * 3),
]


def hand_case():
    ranks = np.array([c[0] for c in HAND]).T
    gnd = [{"ok": np.array(c[1], dtype=np.int64), "junk": np.array(c[2], dtype=np.int64)} for c in HAND]
    return ranks, gnd


def test_compute_ap_trapezoid():
    assert compute_ap([0, 1, 2], 3) == 1.0
    assert compute_ap([0, 3], 2) == pytest.approx(17 / 24)
    assert compute_ap([2], 1) == pytest.approx(1 / 6)
    assert compute_ap([0], 2) == pytest.approx(0.5)  # a positive never retrieved adds nothing


def test_compute_map_hand_computed():
    ranks, gnd = hand_case()
    mAP, aps, pr, prs = compute_map(ranks, gnd, kappas=(1, 5, 10))
    np.testing.assert_allclose(aps, [c[3] for c in HAND], equal_nan=True)
    np.testing.assert_allclose(prs, [c[4] for c in HAND], equal_nan=True)
    assert mAP == pytest.approx((1 + 17 / 24 + 1 / 6) / 3)
    np.testing.assert_allclose(pr, [(1 + 1 + 0) / 3, (1 + 0.5 + 1 / 3) / 3, (1 + 0.5 + 1 / 3) / 3])


def test_compute_map_accepts_lists_and_missing_junk_key():
    mAP, aps, pr, prs = compute_map(np.array([column(2, 0)]).T, [{"ok": [0]}], kappas=[1])
    assert mAP == pytest.approx((0 + 1 / 2) / 2)
    assert prs.tolist() == [[0.0]]


def test_compute_map_without_positives_is_nan():
    mAP, aps, pr, prs = compute_map(np.array([column()]).T, [{"ok": [], "junk": []}])
    assert math.isnan(mAP) and np.isnan(aps).all() and np.isnan(pr).all() and np.isnan(prs).all()


def test_compute_map_rejects_mismatched_shapes():
    with pytest.raises(ValueError, match="one column per gnd entry"):
        compute_map(np.zeros((5, 2), dtype=int), [{"ok": [1]}])


def brute_force(ranking, ok, junk, kappas):
    """AP as the area under the junk-free precision-recall curve (trapezoids), and mP@k."""
    ok, junk = set(ok), set(junk)
    kept = [x for x in ranking if x not in junk]
    recall, precision, hits, area = 0.0, 1.0, 0, 0.0
    pos = []
    for t, x in enumerate(kept, start=1):
        if x in ok:
            hits += 1
            pos.append(t)
            new_recall, new_precision = hits / len(ok), hits / t
            area += (new_recall - recall) * (precision + new_precision) / 2
            recall = new_recall
        precision = hits / t
    mp = [sum(p <= min(max(pos), k) for p in pos) / min(max(pos), k) for k in kappas]
    return area, mp


def test_compute_map_matches_brute_force():
    rng = np.random.default_rng(0)
    n_db, n_q, kappas = 60, 25, (1, 3, 5, 10, 20)
    ranks = np.stack([rng.permutation(n_db) for _ in range(n_q)], axis=1)
    gnd = []
    for _ in range(n_q):
        labels = rng.choice(3, size=n_db, p=[0.75, 0.15, 0.10])  # 0 other, 1 positive, 2 junk
        labels[rng.integers(n_db)] = 1
        gnd.append({"ok": np.flatnonzero(labels == 1), "junk": np.flatnonzero(labels == 2)})
    mAP, aps, pr, prs = compute_map(ranks, gnd, kappas)
    expected = [brute_force(ranks[:, i], g["ok"], g["junk"], kappas) for i, g in enumerate(gnd)]
    np.testing.assert_allclose(aps, [e[0] for e in expected])
    np.testing.assert_allclose(prs, [e[1] for e in expected])
    assert mAP == pytest.approx(np.mean([e[0] for e in expected]))
    np.testing.assert_allclose(pr, np.mean([e[1] for e in expected], axis=0))


def test_truncated_ranks_bound_ap_and_keep_mp():
    rng = np.random.default_rng(1)
    n_db, n_q, depth = 200, 20, 40
    ranks = np.stack([rng.permutation(n_db) for _ in range(n_q)], axis=1)
    gnd = [{"ok": rng.choice(n_db, 15, replace=False), "junk": np.array([], dtype=int)} for _ in range(n_q)]
    _, aps_full, _, prs_full = compute_map(ranks, gnd)
    _, aps_top, _, prs_top = compute_map(ranks[:depth], gnd)
    missing = np.array([np.setdiff1d(g["ok"], ranks[:depth, i]).size for i, g in enumerate(gnd)])
    assert (missing > 0).any()
    assert (aps_top <= aps_full + 1e-12).all()
    assert (aps_full - aps_top <= missing / depth + 1e-12).all()
    np.testing.assert_allclose(prs_top, prs_full)


def test_evaluate_revisitop_protocols():
    # image 0 other, 1 easy, 2 hard, 3 junk
    ranks = np.array([[0, 1, 2, 3, 4, 5]]).T
    gnd_full = [{"bbx": [0, 0, 1, 1], "easy": np.array([1]), "hard": np.array([2]), "junk": np.array([3])}]
    result = evaluate_revisitop(ranks, gnd_full, kappas=(1, 5))
    assert list(result.protocols) == ["easy", "medium", "hard"]
    # easy: hard is junk, the easy image is at junk-free rank 1; hard: the same for the hard one
    assert result.protocols["easy"].map == pytest.approx(1 / 4)
    assert result.protocols["hard"].map == pytest.approx(1 / 4)
    # medium: ranks 1 and 2 -> ((0 + 1/2)/2 + (1/2 + 2/3)/2) / 2
    assert result.protocols["medium"].map == pytest.approx(5 / 12)
    assert protocol_gnd(gnd_full, "easy")[0]["junk"].tolist() == [3, 2]
    summary = result.to_dict()
    assert summary["medium"]["mP@5"] == pytest.approx(2 / 3) and summary["hard"]["queries"] == 1


def test_format_report():
    ranks, gnd = hand_case()
    gnd_full = [{"easy": g["ok"], "hard": [], "junk": g["junk"]} for g in gnd]
    result = evaluate_revisitop(ranks, gnd_full)
    text = format_report(result, "toy (4 queries)", {"crop": "queries cropped", "scales": (0.7071, 1.0, 1.4142), "model": "m"})
    lines = text.splitlines()
    assert lines[0] == "toy (4 queries)"
    assert lines[1].split() == ["mAP", "mP@1", "mP@5", "mP@10", "queries"]
    assert lines[2].split() == ["Easy", f"{100 * (1 + 17 / 24 + 1 / 6) / 3:.2f}", "66.67", "61.11", "61.11", "3"]
    assert lines[3].split()[0] == "Medium" and lines[4].split()[:2] == ["Hard", "nan"]
    assert lines[-3:] == ["crop: queries cropped", "scales: 0.7071, 1.0, 1.4142", "model: m"]


def integer_descriptors(rng, n, d=4):
    # small integers: exact dot products, many ties
    return rng.integers(-2, 3, size=(n, d)).astype(np.float32)


@pytest.mark.parametrize("topk,chunk", [(1, 5), (7, 5), (7, 64), (30, 3), (49, 10)])
def test_chunked_topk_equals_full_sort(topk, chunk):
    rng = np.random.default_rng(topk * 100 + chunk)
    q, db = integer_descriptors(rng, 6), integer_descriptors(rng, 50)
    full = np.argsort(-(db @ q.T), axis=0, kind="stable")
    np.testing.assert_array_equal(rank(q, db, topk=topk, chunk=chunk), full[:topk])
    np.testing.assert_array_equal(rank(q, db), full)
    np.testing.assert_array_equal(rank(q, db, topk=500, chunk=chunk), full)


def test_rank_errors():
    with pytest.raises(ValueError, match="same d"):
        rank(np.zeros((2, 3)), np.zeros((5, 4)))
    with pytest.raises(ValueError, match="topk"):
        rank(np.zeros((2, 3)), np.zeros((5, 3)), topk=0)
    db = np.ones((5, 3))
    db[3, 1] = np.nan
    with pytest.raises(ValueError, match="database descriptor 3"):
        rank(np.ones((2, 3)), db, topk=2, chunk=2)
