"""`cfcd index compact` by real processes: what removed images held is given back (bytes on
disk, rows), search results for what remains are unchanged, and a compaction killed at each
point of its write leaves the index whole for a rerun to finish."""

from __future__ import annotations

import json
import os
import subprocess

import numpy as np
import pytest

from cfcd.errors import InputError
from cfcd.index import Index, store
from cfcd.index.records import ImageRecord
from failpoints import cfcd, kill, start, wait_stopped
from test_crash import MODEL, SETTINGS, unit_rows

N = 2000


def results(location, queries: np.ndarray, k: int = 10) -> tuple[np.ndarray, np.ndarray]:
    index = Index.load(location)
    try:
        found = index.search(queries, k=k)
        return found.ids, found.scores
    finally:
        index.close()


def half_removed(location, factory: str | None = None, learn: bool = False) -> np.ndarray:
    """An index of N images at ``location`` with every other one removed; returns queries."""
    x = unit_rows(N, 0)
    built = Index.build(x, [f"img{i}" for i in range(N)], factory=factory, model=MODEL, settings=SETTINGS,
                        location=location, learn=learn)
    built.save(location)
    built.close()
    with Index.edit(location) as index:
        index.remove(ids=range(0, N, 2))
    index.close()  # Milvus Lite: let go of the data directory (a compaction process opens it)
    return unit_rows(50, 9)


def raw_rows(root) -> int:
    """Rows in the raw descriptor segments of the published version."""
    vdir = store.current(root)[1]
    return sum(len(np.load(f, mmap_mode="r")) for f in vdir.glob("raw-*.npy") if not f.name.endswith(".ids.npy"))


def run_compact(location) -> dict:
    out = subprocess.run(cfcd("index", "compact", location, "--json"), capture_output=True, text=True, timeout=300)
    assert out.returncode == 0, out.stderr
    return json.loads(out.stdout)


def test_compact_gives_back_what_removed_images_held(tmp_path):
    root = tmp_path / "idx"
    queries = half_removed(root, learn=True)
    ids, scores = results(root, queries)
    before = store.disk_bytes(root)
    assert raw_rows(root) == N
    report = run_compact(root)
    after = store.disk_bytes(root)
    assert raw_rows(root) == N // 2
    assert report["bytes_before"] == before and report["bytes_after"] == after and report["reclaimed"] == before - after
    assert report["rows_dropped"] == N // 2
    assert after <= 0.6 * before, (before, after)  # at least 40 % smaller
    assert sorted(p.name for p in root.iterdir() if p.is_dir()) == [store.version_name(report["version"])]
    new_ids, new_scores = results(root, queries)
    np.testing.assert_array_equal(new_ids, ids)
    np.testing.assert_allclose(new_scores, scores, atol=1e-6)
    index = Index.load(root)
    np.testing.assert_allclose(index.descriptors([1, N - 1]), unit_rows(N, 0)[[1, N - 1]], atol=1e-6)
    # Nothing left to give back: a rerun publishes nothing and removes nothing.
    again = run_compact(root)
    assert (again["version"], again["rows_dropped"], again["removed"], again["reclaimed"]) == (report["version"], 0, [], 0)


def test_compact_rebuilds_vectors_an_index_could_not_remove(tmp_path):
    root = tmp_path / "idx"
    half_removed(root, factory="HNSW16")
    assert Index.load(root).info()["removed_pending"] == N // 2  # HNSW keeps them, filtered at search
    with pytest.raises(InputError, match="cfcd index compact"):
        Index.load(root).put_back(unit_rows(N, 0)[[4]], [ImageRecord("img4", id=4)])
    report = run_compact(root)
    assert report["rows_dropped"] == N  # the raw rows and the tombstoned vectors
    index = Index.load(root)
    assert index.info()["removed_pending"] == 0 and len(index.layers.vectors) == N // 2
    kept = np.arange(1, N, 2)[:20]
    assert (index.search(unit_rows(N, 0)[kept], k=1).ids[:, 0] == kept).all()
    # A removed image can be put back now (with tombstones it could not: ``Index.put_back``).
    with Index.edit(root) as index:
        assert index.put_back(unit_rows(N, 0)[[4]], [ImageRecord("img4", id=4)]) == [4]
    assert Index.load(root).search(unit_rows(N, 0)[[4]], k=1).ids[0, 0] == 4


@pytest.mark.parametrize("engine,point", [("faiss", "index.staged"), ("faiss", "index.renamed"),
                                          ("faiss", "index.published"), ("faiss", "index.reclaim"),
                                          ("milvus", "index.staged"), ("milvus", "index.reclaiming")])
def test_kill_a_compaction(tmp_path, engine, point):
    if engine == "milvus":
        pytest.importorskip("milvus_lite", reason="Milvus Lite needs milvus-lite: pip install 'cfcd[milvus]'")
    root = tmp_path / ("photos.db" if engine == "milvus" else "idx")
    queries = half_removed(root, learn=engine == "milvus")
    ids, scores = results(root, queries)
    before = store.disk_bytes(root)
    proc = start("index", "compact", root, failpoint=point)
    wait_stopped(proc)
    kill(proc)
    new_ids, new_scores = results(root, queries)  # whole, whichever version is current
    np.testing.assert_array_equal(new_ids, ids)
    np.testing.assert_allclose(new_scores, scores, atol=1e-5)
    report = run_compact(root)
    assert store.disk_bytes(root) <= 0.6 * before
    assert report["version"] == 3
    if engine == "faiss":
        assert sorted(p.name for p in root.iterdir() if p.is_dir()) == ["v00000003"]
    np.testing.assert_array_equal(results(root, queries)[0], ids)


def test_compact_on_milvus_lite(tmp_path):
    # Removed rows stay in Milvus Lite's files (its own compaction is a no-op): compact moves
    # what remains to new collections and drops the old ones, and earlier projections' rows.
    pytest.importorskip("pymilvus", reason="the Milvus engine needs pymilvus: pip install 'cfcd[milvus]'")
    pytest.importorskip("milvus_lite", reason="Milvus Lite needs milvus-lite: pip install 'cfcd[milvus]'")
    db = tmp_path / "photos.db"
    queries = half_removed(db, learn=True)
    ids, scores = results(db, queries)
    before = store.disk_bytes(db)
    report = run_compact(db)
    after = store.disk_bytes(db)
    print(report)
    assert report["bytes_before"] == before and report["bytes_after"] == after
    assert after <= 0.6 * before, (before, after)
    new_ids, new_scores = results(db, queries)
    np.testing.assert_array_equal(new_ids, ids)
    np.testing.assert_allclose(new_scores, scores, atol=1e-5)
    again = run_compact(db)
    assert (again["version"], again["rows_dropped"], again["removed"]) == (report["version"], 0, [])


def test_compact_says_what_it_did_and_refuses_what_is_not_an_index(tmp_path):
    root = tmp_path / "idx"
    half_removed(root)
    out = subprocess.run(cfcd("index", "compact", root), capture_output=True, text=True, timeout=300)
    assert out.returncode == 0, out.stderr
    lines = out.stdout.splitlines()
    assert lines[:2] == ["removed v00000001", "removed v00000002"]
    assert lines[2].startswith(f"{root}: reclaimed ") and lines[2].endswith(
        f"{N // 2} rows of removed images dropped, version 3")
    missing = subprocess.run(cfcd("index", "compact", tmp_path / "nothing"), capture_output=True, text=True, timeout=300)
    assert missing.returncode != 0 and "not a cfcd index" in missing.stderr and "nothing" in missing.stderr
    assert not (tmp_path / "nothing").exists()


def test_only_segments_holding_removed_rows_are_rewritten(tmp_path):
    # Three segments (three versions' additions): all of the second removed, half of the first,
    # none of the third; plus, in the same edit, rows added and some of them removed again; and
    # an image removed and put back (``Index.put_back``), whose id then has two rows.
    from cfcd.index.compaction import drop_removed

    root = tmp_path / "idx"
    x = unit_rows(1000, 3)
    Index.build(x[:300], [f"a{i}" for i in range(300)], model=MODEL, settings=SETTINGS).save(root)
    for lo, hi in ((300, 600), (600, 900)):
        with Index.edit(root) as index:
            index.add(x[lo:hi], [f"a{i}" for i in range(lo, hi)], model=MODEL, settings=SETTINGS)
    third = os.stat(store.current(root)[1] / "raw-000000000600.npy").st_ino
    with Index.edit(root) as index:
        index.remove(ids=[3])
    with Index.edit(root) as index:
        assert index.put_back(x[[3]], [ImageRecord("a3", id=3)]) == [3]
    assert (store.current(root)[1] / "raw-000000000003.npy").is_file()
    with Index.edit(root) as index:
        index.remove(ids=[*range(0, 300, 2), *range(300, 600)])
        index.add(x[900:], [f"a{i}" for i in range(900, 1000)], model=MODEL, settings=SETTINGS)
        index.remove(ids=range(900, 950))
        assert drop_removed(index) == 150 + 300 + 50 + 1  # and the second row of id 3
        np.testing.assert_allclose(index.descriptors([1, 601, 999]), x[[1, 601, 999]], atol=1e-6)
    vdir = store.current(root)[1]
    assert sorted(f.name for f in vdir.glob("raw-*.npy") if not f.name.endswith(".ids.npy")) == [
        "raw-000000000001.npy", "raw-000000000600.npy", "raw-000000000950.npy"]
    assert os.stat(vdir / "raw-000000000600.npy").st_ino == third  # linked, not copied
    assert raw_rows(root) == 150 + 300 + 50
    index = Index.load(root)
    kept = np.array(index.ids())
    assert len(kept) == 500
    np.testing.assert_allclose(index.descriptors(kept), x[kept], atol=1e-6)
    with pytest.raises(KeyError):
        index.descriptors([0])
