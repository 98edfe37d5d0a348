"""The selection protocol over labelled sets and collection shapes (cfcd.evaluate.shapes):
collections draw whole identities with the asked share of distractors, distractors are never
queries nor positives, and the no-loss rule rejects a candidate that loses in one cell."""

from __future__ import annotations

import csv

import numpy as np
import pytest

from cfcd.evaluate import shapes
from cfcd.evaluate.benchmarks import folder
from samples import make_image


def write_set(root, identities: dict[str, tuple[str, int]], distractors: int = 0, hard=()):
    """A labelled set on disk: identity -> (source, photos), plus distractors; identities.csv
    marks ``hard`` when given."""
    rows = []
    for k, (identity, (source, n)) in enumerate(identities.items()):
        for j in range(n):
            path = root / "images" / identity / f"{j}.jpg"
            make_image(path, size=(32, 24), seed=100 * k + j)
            rows.append((f"images/{identity}/{j}.jpg", identity, source))
    for j in range(distractors):
        make_image(root / "images" / "_distractors" / f"{j}.jpg", size=(32, 24), seed=9000 + j)
        rows.append((f"images/_distractors/{j}.jpg", "", "noise"))
    with open(root / "manifest.csv", "w", newline="") as f:
        csv.writer(f).writerows([("path", "identity", "source"), *rows])
    if hard:
        with open(root / "identities.csv", "w", newline="") as f:
            csv.writer(f).writerows([("identity", "hard"), *((i, int(i in hard)) for i in identities)])
    return root


@pytest.fixture
def pool(tmp_path):
    a = write_set(tmp_path / "a", {f"a{i}": ("evd" if i < 3 else "strecha", 2 + i % 3) for i in range(12)})
    b = write_set(tmp_path / "b", {f"b{i}": (f"src{i % 2}", 2 + i % 4) for i in range(10)}, distractors=20,
                  hard={"b0", "b1", "b2"})
    return shapes.load_pool([a, b])


def test_a_distractor_is_in_the_database_only():
    gnd = folder.leave_one_out_gnd(["x", "", "x", ""])
    assert list(gnd[0]["ok"]) == [2] and list(gnd[2]["ok"]) == [0]  # distractors are nobody's positive
    assert len(gnd[1]["ok"]) == 0 and len(gnd[3]["ok"]) == 0  # nor queries: no positives, AP NaN
    x = np.eye(4)
    aps = shapes.query_aps(x, np.array(["x", "", "x", ""]))
    assert np.isnan(aps[1]) and np.isnan(aps[3]) and not np.isnan(aps[0])


def test_the_pool_reads_hard_identities_and_keeps_sets_apart(pool):
    assert pool.set_names == ["a", "b"]
    assert len(pool.distractors) == 20 and set(pool.sets[pool.distractors]) == {"b"}
    # a set without identities.csv: its hard source groups' identities are hard
    assert set(pool.identities[pool.hard & (pool.sets == "a")]) == {"a/a0", "a/a1", "a/a2"}
    assert set(pool.identities[pool.hard & (pool.sets == "b")]) == {"b/b0", "b/b1", "b/b2"}
    # cells: a set without identities.csv by source group, one with it by kind of change
    assert set(pool.groups[pool.sets == "a"]) == {"evd", "strecha"}
    assert set(pool.groups[pool.sets == "b"]) == {"hard, other", "moderate", "distractors"}
    cells = shapes.cells_of(pool, np.arange(len(pool)))
    assert {"a", "a: hard", "a: moderate", "a: evd", "b", "b: hard", "b: hard, other"} <= set(cells)
    assert (cells["b: hard"] == (pool.hard & (pool.sets == "b"))).all()


def test_collections_draw_whole_identities_with_the_asked_share_of_distractors(pool):
    shape = shapes.Shape("t", photos=10, per_identity=2, distractors=0.5, seeds=3)
    for seed in range(3):
        index = shapes.draw(pool, shape, "a", seed)
        people = index[pool.identities[index] != ""]
        assert set(pool.sets[people]) == {"a"} and len(people) >= 10
        counts = np.unique(pool.identities[people], return_counts=True)[1]
        assert (counts == 2).all()  # at most two photos each, never fewer than two
        assert (pool.identities[index] == "").sum() == len(people)  # half of the collection
    assert not np.array_equal(shapes.draw(pool, shape, "a", 0), shapes.draw(pool, shape, "a", 1))
    whole = shapes.draw(pool, shapes.Shape("whole"), "b", 0)
    assert np.array_equal(whole, np.flatnonzero(pool.sets == "b"))  # its own distractors, all of them
    hard = shapes.draw(pool, shapes.Shape("h", hard_only=True, distractors=0.3), "b", 0)
    assert set(pool.identities[hard]) - {""} == {"b/b0", "b/b1", "b/b2"}


def test_the_rule_rejects_a_loss_in_one_cell_despite_a_pooled_gain(pool):
    rng = np.random.default_rng(0)
    ids = pool.identities
    centres = {i: rng.normal(size=16) for i in set(ids)}
    noise = rng.normal(size=(len(pool), 16))
    x = np.stack([centres[i] if i else rng.normal(size=16) for i in ids]) + 1.2 * noise
    better = np.stack([centres[i] if i else rng.normal(size=16) for i in ids]) + 0.6 * noise
    moderate_b = (pool.sets == "b") & ~pool.hard & (ids != "")
    worse_in_b = np.where(moderate_b[:, None], x + 3 * rng.normal(size=x.shape), better)
    unit = lambda m: m / np.linalg.norm(m, axis=1, keepdims=True)  # noqa: E731
    candidates = {name: (lambda index, m=unit(m): m[index]) for name, m in
                  (("base", x), ("better", better), ("worse in b", worse_in_b))}
    scores = shapes.score(pool, candidates, shapes.SHAPES[:2])
    verdicts = {v.candidate: v for v in shapes.judge(scores, "base", min_queries=1)}
    assert verdicts["better"].accepted and verdicts["better"].gain > 0
    bad = verdicts["worse in b"]
    assert not bad.accepted and bad.worst < -shapes.TOLERANCE and "b: " in bad.worst_cell
    assert shapes.choose(list(verdicts.values()), "base") == "better"
    held = shapes.leave_one_set_out(scores, "base", ["a", "b"])
    assert held["a"]["chosen"] == "better"  # chosen on b's cells, where "worse in b" is rejected
    assert held["b"]["chosen"] == "better"  # on a's cells the two tie: the first listed wins
    only_bad = [verdicts["base"], verdicts["worse in b"]]
    assert shapes.choose(only_bad, "base") == "base"  # nothing passes: the safe setting stays


def test_a_bad_identities_file_is_a_clear_error(tmp_path):
    from cfcd.errors import InputError

    root = write_set(tmp_path / "s", {"x": ("src", 2)})
    (root / "identities.csv").write_text("identity,difficult\nx,1\n")
    with pytest.raises(InputError, match=r"identities\.csv: expected the columns identity, hard"):
        shapes.load_pool([root])


def test_a_reranking_candidate_is_scored_from_its_similarities():
    rng = np.random.default_rng(1)
    x = rng.normal(size=(24, 8)).astype(np.float32)
    x /= np.linalg.norm(x, axis=1, keepdims=True)
    identities = np.array([f"id{i // 3}" for i in range(21)] + ["", "", ""])
    plain = shapes.query_aps(x, identities)
    assert np.allclose(shapes.query_aps(shapes.Similarities(x @ x.T), identities), plain, equal_nan=True)
    # a re-ranking that puts each query's true matches first scores 1 on every query
    truth = (identities[:, None] == identities[None, :]) & (identities[:, None] != "")
    perfect = shapes.query_aps(shapes.Similarities(x @ x.T + 10 * truth), identities)
    assert np.nanmin(perfect) == 1.0 and np.nanmin(plain) < 1.0
    one = x @ x.T
    one[0] += 10 * truth[0]  # row q holds the scores of query q only
    aps = shapes.query_aps(shapes.Similarities(one), identities)
    assert aps[0] == 1.0 and np.allclose(aps[1:], plain[1:], equal_nan=True)
