"""The same behaviour on every vector engine: FAISS in a directory, Milvus Lite in a .db.

Results are compared with exact search done here in numpy on the same descriptors.
"""

from __future__ import annotations

import json
import subprocess
import sys
import threading

import numpy as np
import pytest

from cfcd.index import Index, IndexMismatchError
from cfcd.settings import ExtractionSettings

DIM = 16
MODEL = {"name": "test-model", "config": {"backbone": "x"}, "dim": DIM}
SETTINGS = {"scales": [1.0], "max_side": None}
# What an index stores for SETTINGS: the keys an older file lacks filled in (preparation, cap).
STORED_SETTINGS = ExtractionSettings.from_dict(SETTINGS).to_dict()


def unit_rows(n: int, seed: int = 0) -> np.ndarray:
    x = np.random.default_rng(seed).standard_normal((n, DIM)).astype(np.float32)
    return x / np.linalg.norm(x, axis=1, keepdims=True)


def names(n: int, prefix: str = "img") -> list[str]:
    return [f"{prefix}{i:05d}.jpg" for i in range(n)]


def exact(db: np.ndarray, db_ids: np.ndarray, queries: np.ndarray, k: int) -> np.ndarray:
    order = np.argsort(-(queries @ db.T), axis=1, kind="stable")[:, :k]
    return db_ids[order]


def create(location: str, x: np.ndarray, paths) -> Index:
    index = Index(DIM, model=MODEL, settings=SETTINGS, location=location, learn=False)  # compared with exact search on the raw rows
    index.add(x, paths)
    index.save(location)
    return index


def test_add_remove_search_equal_exact_search(location):
    x = unit_rows(300)
    create(location, x[:200], names(200))
    with Index.edit(location) as index:
        assert index.add(x[200:], names(100, "more")).added == list(range(200, 300))
        assert index.remove(ids=[3, 250, 999]) == [3, 250]
        assert index.remove(paths=["img00007.jpg"]) == [7]
    loaded = Index.load(location)
    assert loaded.generation == 2 and len(loaded) == 297 and len(loaded.layers.vectors) == 297
    keep = np.setdiff1d(np.arange(300), [3, 7, 250])
    q = unit_rows(25, seed=1)
    res = loaded.search(q, k=10)
    assert (res.ids == exact(x[keep], keep, q, 10)).all()
    np.testing.assert_allclose(res.scores, np.take_along_axis(q @ x.T, res.ids, 1), atol=1e-5)
    assert res.hits(0)[0]["path"] == (f"img{res.ids[0, 0]:05d}.jpg" if res.ids[0, 0] < 200 else f"more{res.ids[0, 0] - 200:05d}.jpg")
    assert loaded.search(x[250:251], k=1).ids[0, 0] != 250
    np.testing.assert_allclose(loaded.descriptors([5, 260]), x[[5, 260]], atol=1e-6)
    assert loaded.search(q[:2], k=5, qe=2).ids.shape == (2, 5)
    assert sorted(loaded.ids()) == keep.tolist()


def test_same_content_is_indexed_once(location, tmp_path):
    a, b, c = tmp_path / "a.jpg", tmp_path / "copy-of-a.jpg", tmp_path / "c.jpg"
    a.write_bytes(b"same bytes")
    b.write_bytes(b"same bytes")
    c.write_bytes(b"other bytes")
    x = unit_rows(3)
    index = Index(DIM, location=location)
    report = index.add(x, [a, b, c])
    assert report.added == [0, 1] and report.repeated == {1: 0}
    index.save(location)
    with Index.edit(location) as index:
        again = index.add(x, [b, c, a])
    assert again.added == [] and again.duplicates == {0: 0, 1: 1, 2: 0}
    loaded = Index.load(location)
    assert len(loaded) == 2 and loaded.generation == 1  # nothing new: nothing published
    rec = loaded.records([0])[0]
    assert rec.sha256 and rec.size == 10 and rec.path == str(a.resolve())


def test_other_models_descriptors_are_refused(location):
    create(location, unit_rows(5), names(5))
    index = Index.load(location)
    q = unit_rows(1, seed=2)
    with pytest.raises(IndexMismatchError, match="differs from the index's model"):
        index.search(q, model={**MODEL, "name": "other"})
    with pytest.raises(IndexMismatchError, match="extraction settings"):
        index.search(q, settings={"scales": [0.5, 1.0], "max_side": None})
    with pytest.raises(IndexMismatchError, match="32-d"):
        index.search(np.ones((1, 32), np.float32))
    with pytest.raises(IndexMismatchError):
        with Index.edit(location) as index:
            index.add(unit_rows(1, seed=3), ["x.jpg"], model={**MODEL, "config": {"backbone": "y"}})
    assert len(Index.load(location)) == 5


RELOAD = """
import json, sys
import numpy as np
from cfcd.index import Index
index = Index.load(sys.argv[1])
q = np.load(sys.argv[2])
res = index.search(q, k=5)
print(json.dumps({"ids": res.ids.tolist(), "n": len(index), "model": index.model, "settings": index.settings,
                  "version": index.generation, "paths": [h["path"] for h in res.hits(0)]}))
"""


def test_restart_and_reload(location, tmp_path):
    # Built and closed here; loaded and searched by a new process, which sees the same index.
    x = unit_rows(120, seed=4)
    index = create(location, x, names(120))
    q = unit_rows(4, seed=5)
    np.save(tmp_path / "q.npy", q)
    expected = index.search(q, k=5).ids.tolist()
    index.close()
    out = subprocess.run([sys.executable, "-c", RELOAD, location, str(tmp_path / "q.npy")], capture_output=True,
                         text=True, check=True).stdout
    got = json.loads(out.strip().splitlines()[-1])
    assert got["ids"] == expected == exact(x, np.arange(120), q, 5).tolist()
    assert (got["n"], got["model"], got["settings"], got["version"]) == (120, MODEL, STORED_SETTINGS, 1)
    assert got["paths"][0] == f"img{expected[0][0]:05d}.jpg"


def test_readers_never_see_part_of_a_write(location):
    x = unit_rows(300, seed=5)
    create(location, x[:100], names(100))
    errors, sizes = [], []
    done = threading.Event()

    def reader():
        while not done.is_set():
            try:
                index = Index.load(location)
                n = len(index)
                assert len(index.layers.vectors) == n and n % 20 == 0, (len(index.layers.vectors), n)
                hit = index.search(x[n - 1:n], k=1).hits(0)[0]
                assert hit["id"] == n - 1 and hit["path"] is not None
                sizes.append(n)
            except Exception as err:  # noqa: BLE001 - collected and reported below
                errors.append(repr(err))

    threads = [threading.Thread(target=reader) for _ in range(2)]
    for t in threads:
        t.start()
    for step in range(10):
        with Index.edit(location) as index:
            start = 100 + 20 * step
            index.add(x[start:start + 20], names(20, prefix=f"s{step}-"))
    done.set()
    for t in threads:
        t.join()
    assert not errors, errors[:3]
    assert len(set(sizes)) > 2  # the readers saw several versions
    assert len(Index.load(location)) == 300
