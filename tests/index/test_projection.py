"""The projection an index learns from its own descriptors (``cfcd.index.projection``):
checked against PCA-whitening computed here with NumPy on the same descriptors, on every
engine, through saves, growth, re-learning and switching it off."""

from __future__ import annotations

import sqlite3

import numpy as np
import pytest

from cfcd.index import Index
from cfcd.index import projection as learning

DIM = 48
MODEL = {"name": "test-model", "config": {"backbone": "x"}, "dim": DIM}
SETTINGS = {"scales": [1.0], "max_side": None}


def rows(n: int, seed: int = 0) -> np.ndarray:
    """Unit rows with a few strong directions, like real descriptors (whitening changes the ranking)."""
    rng = np.random.default_rng(seed)
    x = rng.standard_normal((n, DIM)) * np.linspace(3, 0.2, DIM) + 2.0 * rng.standard_normal(DIM)
    x = x.astype(np.float32)
    return x / np.linalg.norm(x, axis=1, keepdims=True)


def names(n: int, prefix: str = "img") -> list[str]:
    return [f"{prefix}{i:05d}.jpg" for i in range(n)]


def reference(x: np.ndarray, dim: int, shrinkage: float):
    """PCA-whitening with shrinkage, written out in NumPy (float64): the map the index must apply."""
    x = x.astype(np.float64)
    mu = x.mean(axis=0)
    values, vectors = np.linalg.eigh(np.cov(x, rowvar=False))
    top = np.argsort(values)[::-1][:dim]
    lam = values[top]
    w = vectors[:, top].T / np.sqrt(lam + shrinkage * lam.mean())[:, None]

    def project(q):
        y = (np.asarray(q, np.float64) - mu) @ w.T
        return y / np.linalg.norm(y, axis=1, keepdims=True)

    return project


def test_learned_projection_equals_numpy_and_maps_queries_and_database(location):
    n = learning.MIN_IMAGES + 100
    x, q = rows(n), rows(30, seed=1)
    index = Index.build(x, names(n), model=MODEL, settings=SETTINGS, learn=True, location=location)
    index.save(location)
    dim, shrinkage = learning.choose(n)
    dim = min(dim, DIM)
    assert index.projection is not None and (index.projection.dim, index.projection.learned_from) == (dim, n)
    index.close()
    loaded = Index.load(location)  # what was published, read back
    project = reference(x, dim, shrinkage)
    sims = project(q) @ project(x).T  # sign-free: each direction's sign cancels in a dot product
    result = loaded.search(q, k=10)
    np.testing.assert_array_equal(result.ids, np.argsort(-sims, axis=1, kind="stable")[:, :10])
    np.testing.assert_allclose(result.scores, np.sort(sims, axis=1)[:, ::-1][:, :10], atol=2e-5)
    # the database went through the same map as the queries: each image finds itself at 1.0
    self_hits = loaded.search(loaded.descriptors([0, 7, n - 1]), k=1)
    assert self_hits.ids[:, 0].tolist() == [0, 7, n - 1]
    np.testing.assert_allclose(self_hits.scores[:, 0], 1.0, atol=1e-5)
    info = loaded.info()
    assert info["projection"]["dim"] == dim and info["projection"]["learned_from"] == n and info["dim"] == DIM
    # relearn with a chosen dimension: still the NumPy map, truncated
    with Index.edit(location) as index:
        learning.relearn(index, dim=12, shrinkage=0.5)
    index.close()
    loaded = Index.load(location)
    project = reference(x, 12, 0.5)
    sims = project(q) @ project(x).T
    result = loaded.search(q, k=5)
    np.testing.assert_array_equal(result.ids, np.argsort(-sims, axis=1, kind="stable")[:, :5])
    np.testing.assert_allclose(result.scores, np.sort(sims, axis=1)[:, ::-1][:, :5], atol=2e-5)
    loaded.close()


def test_below_the_threshold_nothing_changes_until_it_is_reached(tmp_path):
    n = learning.MIN_IMAGES - 1
    x = rows(n + 1)
    root = tmp_path / "idx"
    Index.build(x[:n], names(n), model=MODEL, settings=SETTINGS, learn=True).save(root)
    index = Index.load(root)
    assert index.projection is None and index.layers.vectors.dim == DIM
    q = rows(10, seed=2)
    exact = np.argsort(-(q @ x[:n].T), axis=1, kind="stable")[:, :5]
    np.testing.assert_array_equal(index.search(q, k=5).ids, exact)
    with Index.edit(root) as index:
        index.add(x[n:], ["last.jpg"])
    assert Index.load(root).projection.learned_from == n + 1


def test_relearns_when_the_collection_has_grown_enough(tmp_path):
    root = tmp_path / "idx"
    n = learning.MIN_IMAGES
    grown = int(np.ceil(learning.RELEARN_GROWTH * n))
    x = rows(grown)
    Index.build(x[:n], names(n), model=MODEL, settings=SETTINGS, learn=True).save(root)
    with Index.edit(root) as index:
        index.add(x[n:grown - 1], names(grown - 1 - n, "b"))
    assert Index.load(root).projection.learned_from == n  # not grown enough yet
    with Index.edit(root) as index:
        index.add(x[grown - 1:], ["c.jpg"])
    loaded = Index.load(root)
    assert loaded.projection.learned_from == grown
    assert loaded.search(x[[3]], k=1).ids[0, 0] == 3


def test_large_collections_learn_from_a_sample(tmp_path, monkeypatch):
    monkeypatch.setattr(learning, "SAMPLE", 250)
    x = rows(400)
    index = Index.build(x, names(400), model=MODEL, settings=SETTINGS, learn=True)
    index.save(tmp_path / "idx")
    assert index.projection.learned_from == 250 and len(index.layers.vectors) == 400


def test_switched_off_it_searches_raw_descriptors_and_stays_off(tmp_path):
    root = tmp_path / "idx"
    n = learning.MIN_IMAGES + 50
    x = rows(3 * n)
    Index.build(x[:n], names(n), model=MODEL, settings=SETTINGS, learn=True).save(root)
    with Index.edit(root) as index:
        learning.unlearn(index)
    with Index.edit(root) as index:
        index.add(x[n:], names(2 * n, "more"))  # grown 3x: would re-learn if learning were on
    loaded = Index.load(root)
    assert loaded.projection is None and loaded.learn is False and loaded.layers.vectors.dim == DIM
    q = rows(10, seed=3)
    np.testing.assert_array_equal(loaded.search(q, k=5).ids, np.argsort(-(q @ x.T), axis=1, kind="stable")[:, :5])


def test_an_index_from_before_raw_descriptors_were_kept(tmp_path):
    root = tmp_path / "idx"
    n = learning.MIN_IMAGES + 10
    x = rows(n)
    index = Index.build(x, names(n), model=MODEL, settings=SETTINGS, learn=False)
    index.save(root)
    meta = next(root.glob("v*/meta.sqlite"))  # make it an older index's file: no raw segments listed
    with sqlite3.connect(meta) as conn:
        conn.execute("DELETE FROM info WHERE key IN ('raw', 'learn')")
    old = Index.load(root)
    assert old.layers.raw is None and old.search(x[[4]], k=1).ids[0, 0] == 4
    with pytest.raises(ValueError, match="before cfcd kept raw descriptors.*build it again"):
        learning.relearn(old)
    with Index.edit(root) as index:  # still grows, without learning (nothing to learn from)
        index.add(rows(n, seed=9), names(n, "new"))
    assert Index.load(root).projection is None


def test_engines_rank_alike_with_a_projection(tmp_path):
    pytest.importorskip("pymilvus", reason="the Milvus engine needs pymilvus: pip install 'cfcd[milvus]'")
    pytest.importorskip("milvus_lite", reason="Milvus Lite needs milvus-lite: pip install 'cfcd[milvus]'")
    n = learning.MIN_IMAGES + 40
    x, q = rows(n), rows(20, seed=4)
    results = []
    for location in (tmp_path / "a.idx", tmp_path / "a.db"):
        index = Index.build(x, names(n), model=MODEL, settings=SETTINGS, learn=True, location=location)
        index.save(location)
        with_default = index.search(q, k=10)
        with Index.edit(location) as edited:
            learning.relearn(edited, dim=10)
            edited.remove(ids=[0, 1])
        edited.close()
        index.close()
        loaded = Index.load(location)
        results.append((with_default, loaded.search(q, k=10), loaded.info()["projection"]))
        loaded.close()
    (fa, fb, fp), (ma, mb, mp) = results
    for f, m in ((fa, ma), (fb, mb)):
        np.testing.assert_array_equal(f.ids, m.ids)
        np.testing.assert_allclose(f.scores, m.scores, atol=1e-5)
    assert fp == {k: v for k, v in mp.items() if k != "version"} and fp["dim"] == 10
    assert not np.isin(fb.ids, [0, 1]).any()


def test_relearn_command_refuses_bad_requests_clearly(tmp_path, capsys):
    from cfcd.cli import main

    root = tmp_path / "small.idx"
    Index.build(rows(20), names(20), model=MODEL, settings=SETTINGS, learn=True).save(root)
    for argv, message in (
        ([str(root)], f"20 images: below the {learning.MIN_IMAGES} from which a learned projection helps; give a dimension (--dim)"),
        ([str(root), "--off", "--dim", "4"], "--off drops the projection; it takes no --dim or --shrinkage"),
        ([str(root), "--dim", "0"], "--dim 0: expected a positive dimension"),
        ([str(tmp_path / "missing.idx")], "not a cfcd index; create one with `cfcd index build`"),
    ):
        assert main(["index", "relearn", *argv]) == 2
        assert message in capsys.readouterr().err
    assert Index.load(root).generation == 1  # nothing was written
    assert main(["index", "relearn", str(root), "--dim", "4"]) == 0
    assert "48 -> 4-d" in capsys.readouterr().out and Index.load(root).projection.dim == 4
    assert main(["index", "relearn", str(root), "--off"]) == 0
    assert "no projection (learning off)" in capsys.readouterr().out and Index.load(root).projection is None


def test_an_index_saved_empty_keeps_raw_descriptors_and_learns_later(tmp_path):
    root = tmp_path / "idx"
    Index(DIM, model=MODEL, settings=SETTINGS, learn=True).save(root)
    assert Index.load(root).layers.raw is not None
    n = learning.MIN_IMAGES
    with Index.edit(root) as index:
        index.add(rows(n), names(n))
    assert Index.load(root).projection.learned_from == n
