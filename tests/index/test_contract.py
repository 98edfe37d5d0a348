"""Every registered vector engine keeps the engine contract (``cfcd.index.contract``): FAISS in a
directory, Milvus Lite, and the in-memory NumPy engine of ``memory_engine.py``, which is
registered here from outside the package (one file plus one registration)."""

from __future__ import annotations

import threading
import uuid

import numpy as np
import pytest

from cfcd.errors import Conflict
from cfcd.index import Index, engines
from cfcd.index.contract import CatalogueLayer, RawLayer, Store, VectorLayer
from cfcd.index.records import ImageRecord

import memory_engine

DIM = 8
MODEL = {"name": "test-model", "config": {"backbone": "x"}, "dim": DIM}


@pytest.fixture(params=["faiss", "milvus", "memory"])
def where(request, tmp_path) -> str:
    """A new location for each engine."""
    if request.param == "milvus":
        pytest.importorskip("pymilvus", reason="the Milvus engine needs pymilvus: pip install 'cfcd[milvus]'")
        pytest.importorskip("milvus_lite", reason="Milvus Lite needs milvus-lite: pip install 'cfcd[milvus]'")
        return str(tmp_path / "c.db")
    if request.param == "memory":
        memory_engine.register()
        return f"{memory_engine.PREFIX}{uuid.uuid4().hex}"
    return str(tmp_path / "c.idx")


def rows(n: int, seed: int = 0) -> np.ndarray:
    x = np.random.default_rng(seed).standard_normal((n, DIM)).astype(np.float32)
    return x / np.linalg.norm(x, axis=1, keepdims=True)


def fill(layers, x: np.ndarray, first: int = 0) -> np.ndarray:
    ids = np.arange(first, first + len(x), dtype=np.int64)
    layers.catalogue.insert([ImageRecord(f"img{i}.jpg", sha256=f"{i:064x}", id=int(i)) for i in ids])
    layers.raw.add(x, ids)
    layers.vectors.add(x, ids)
    return ids


def publish(store, layers) -> int:
    layers.catalogue.set_info(dim=DIM, factory=layers.vectors.factory)  # what every store reads back
    with store.lock(5):
        return store.publish(layers)


def test_the_location_picks_the_engine(where):
    store = engines.open_store(where)
    assert store.engine == engines.engine_of(where) == {"c.db": "milvus", "c.idx": "faiss"}.get(where.rsplit("/", 1)[-1], "memory")
    assert isinstance(store, Store)
    layers = store.create(DIM, None)
    assert isinstance(layers.vectors, VectorLayer) and isinstance(layers.catalogue, CatalogueLayer)
    assert isinstance(layers.raw, RawLayer) and layers.generation is None
    store.close()


def test_versions_are_snapshots_and_writes_are_invisible_until_published(where):
    store = engines.open_store(where)
    writer = store.create(DIM, None)
    x = rows(30)
    fill(writer, x[:20])
    writer.catalogue.set_info(note="first")
    assert not store.exists()
    first = publish(store, writer)
    assert store.exists() and store.version() == first

    snapshot = store.open()
    assert snapshot.generation == first and len(snapshot.catalogue) == 20 and len(snapshot.vectors) == 20
    assert snapshot.catalogue.info()["note"] == "first"
    np.testing.assert_allclose(snapshot.raw.read(np.array([3, 17])), x[[3, 17]], atol=1e-6)

    fill(writer, x[20:], first=20)  # the writer goes on: nobody sees it yet
    snapshot.catalogue.set_info(note="a reader's own")  # nor what a holder of a snapshot changes
    snapshot.vectors.add(x[20:22], np.array([98, 99]))
    writer.catalogue.set_info(note="second")
    again = store.open()
    assert len(again.catalogue) == 20 and again.catalogue.info()["note"] == "first" and store.version() == first

    second = publish(store, writer)
    assert second > first and store.version() == second
    latest = store.open()
    assert latest.generation == second and len(latest.catalogue) == 30 and latest.catalogue.info()["note"] == "second"
    assert latest.catalogue.ids() == list(range(30))
    assert latest.catalogue.ids_by_hash([f"{25:064x}", "absent"]) == {f"{25:064x}": 25}
    assert latest.catalogue.ids_by_path(["img4.jpg"]) == {"img4.jpg": 4}
    store.close()


def test_search_is_exact_inner_product_padded_with_minus_one(where):
    store = engines.open_store(where)
    layers = store.create(DIM, None)
    x = rows(12)
    ids = fill(layers, x)
    publish(store, layers)
    opened = store.open()
    q = rows(3, seed=1)
    scores, got = opened.vectors.search(q, 15)
    order = np.argsort(-(q @ x.T), axis=1, kind="stable")
    assert (got[:, :12] == ids[order]).all() and (got[:, 12:] == -1).all() and np.isneginf(scores[:, 12:]).all()
    np.testing.assert_allclose(scores[:, :12], np.take_along_axis(q @ x.T, order, 1), atol=1e-5)
    np.testing.assert_allclose(opened.vectors.reconstruct(np.array([5, 1])), x[[5, 1]], atol=1e-6)
    store.close()


def test_removal_is_for_good(where):
    store = engines.open_store(where)
    layers = store.create(DIM, None)
    x = rows(10)
    fill(layers, x)
    publish(store, layers)
    layers = store.open()
    gone = np.array([2, 7], dtype=np.int64)
    assert layers.vectors.remove(gone) is True  # every engine here removes (no tombstones)
    layers.catalogue.delete(gone.tolist())
    layers.raw.remove(gone)
    publish(store, layers)
    after = store.open()
    assert len(after.catalogue) == 8 and after.catalogue.records([2, 7, 3]).keys() == {3}
    _, got = after.vectors.search(x, 10)
    assert not np.isin(got, gone).any()
    store.close()


def test_the_lock_admits_one_writer_at_a_time(where):
    store = engines.open_store(where)
    other = engines.open_store(where)
    entered = threading.Event()
    release = threading.Event()

    def hold():
        with store.lock(5):
            entered.set()
            release.wait(10)

    holder = threading.Thread(target=hold)
    holder.start()
    assert entered.wait(10)
    with pytest.raises(Conflict, match="writing to this index"):  # a cfcd error: one line for a user
        with other.lock(0.3):
            pass
    release.set()
    holder.join()
    with other.lock(5):  # free again
        pass
    store.close()


def test_an_index_behaves_the_same_on_every_engine(where):
    """``Index`` over the engine: add, dedupe, remove, a learned projection, reload."""
    x = rows(140)
    index = Index(DIM, model=MODEL, location=where, learn=True)
    assert index.add(x[:120], [f"a{i}.jpg" for i in range(120)]).added == list(range(120))
    index.save()
    with Index.edit(where) as edit:
        report = edit.add(x[100:140], [f"a{i}.jpg" for i in range(100, 140)])
        assert report.added == list(range(120, 140)) and len(report.duplicates) == 20
        assert edit.remove(ids=[0, 139]) == [0, 139]
    loaded = Index.load(where)
    assert loaded.generation == 2 and len(loaded) == 138
    assert loaded.projection is not None  # 138 images: learned at publish (projection.choose)
    keep = np.setdiff1d(np.arange(140), [0, 139])
    q = rows(5, seed=3)
    expected = keep[np.argsort(-(loaded.projection(q) @ loaded.projection(x[keep]).T), axis=1, kind="stable")[:, :10]]
    assert (loaded.search(q, k=10).ids == expected).all()
    np.testing.assert_allclose(loaded.descriptors([5, 120]), x[[5, 120]], atol=1e-6)
    loaded.close()


def test_a_compaction_keeps_what_remains_and_only_the_published_version(where):
    """``Store.reclaim`` and ``footprint``, and the layers' ``compact``, through ``cfcd index compact``'s function."""
    from cfcd.index.compaction import compact

    x = rows(60)
    index = Index(DIM, model=MODEL, location=where)
    index.add(x, [f"a{i}.jpg" for i in range(60)])
    index.save()
    with Index.edit(where) as edit:
        edit.remove(ids=range(0, 60, 2))
    edit.close()
    q = rows(5, seed=4)
    expected = np.arange(1, 60, 2)[np.argsort(-(q @ x[1::2].T), axis=1, kind="stable")[:, :10]]
    report = compact(where, timeout=5)
    assert set(report) >= {"bytes_before", "bytes_after", "rows_before", "rows_after", "removed", "version"}
    assert report["removed"]  # version 1 at least, on every engine
    assert compact(where, timeout=5)["removed"] == []  # nothing left to reclaim
    loaded = Index.load(where)
    assert loaded.generation == report["version"] and len(loaded) == 30
    assert (loaded.search(q, k=10).ids == expected).all()
    np.testing.assert_allclose(loaded.descriptors([1, 59]), x[[1, 59]], atol=1e-6)
    loaded.close()


def test_one_content_at_several_paths_keeps_every_path(where):
    """A byte copy at a new path becomes another path of the indexed image (not a skip, not a
    second image); removing a path keeps the image while another remains; a move re-points."""
    x = rows(3)

    def rec(path: str, content: int) -> ImageRecord:
        return ImageRecord(path, size=10 + content, mtime=1.0, sha256=f"{content:064x}")

    index = Index(DIM, model=MODEL, location=where)
    index.add(x[:2], [rec("/p/a.jpg", 0), rec("/p/b.jpg", 1)])
    index.save()
    with Index.edit(where) as edit:
        report = edit.add(x[[0, 0, 2]], [rec("/q/a-copy.jpg", 0), rec("/r/a-again.jpg", 0), rec("/p/c.jpg", 2)])
        assert report.added == [2] and report.paths == {0: 0, 1: 0}
        # the writer finds the paths it recorded before they are published
        assert edit.layers.catalogue.ids_by_path(["/q/a-copy.jpg", "/p/c.jpg"]) == {"/q/a-copy.jpg": 0, "/p/c.jpg": 2}
    loaded = Index.load(where)
    assert len(loaded) == 3 and loaded.paths([0, 1]) == {0: ["/p/a.jpg", "/q/a-copy.jpg", "/r/a-again.jpg"],
                                                         1: ["/p/b.jpg"]}
    hit = loaded.search(x[:1], k=1).hits(0)[0]
    assert hit["path"] == "/p/a.jpg" and hit["paths"] == ["/p/a.jpg", "/q/a-copy.jpg", "/r/a-again.jpg"]
    loaded.close()
    with Index.edit(where) as edit:
        assert edit.remove(paths=["/q/a-copy.jpg"]) == []  # another path remains: the image stays
        assert edit.move_paths([("/p/a.jpg", rec("/s/a-moved.jpg", 0)), ("/p/none.jpg", rec("/s/x.jpg", 0))]) == 1
    loaded = Index.load(where)
    assert len(loaded) == 3 and loaded.paths([0])[0] == ["/r/a-again.jpg", "/s/a-moved.jpg"]
    assert loaded.records([0])[0].sha256 == f"{0:064x}"
    assert loaded.search(x[:1], k=1).ids[0, 0] == 0  # re-pointing the record kept its vector
    loaded.close()
    with Index.edit(where) as edit:
        assert edit.remove(paths=["/r/a-again.jpg"]) == []
        assert edit.remove(paths=["/s/a-moved.jpg", "/p/b.jpg"]) == [0, 1]  # their last paths
    loaded = Index.load(where)
    assert loaded.ids() == [2] and loaded.paths([0, 2]) == {2: ["/p/c.jpg"]}
    assert loaded.layers.catalogue.ids_by_path(["/s/a-moved.jpg", "/r/a-again.jpg"]) == {}
    loaded.close()
