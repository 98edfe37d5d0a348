"""Index writes by real `cfcd index` processes: killed at each point of a write, racing to
build the same new index, or adding while another add is still extracting.

A writer is stopped at a named point (``CFCD_FAILPOINT``: it SIGSTOPs itself there,
``failpoints.start``), the test checks that the point was reached as described (files on disk), then SIGKILLs it and
asserts the one state the index must be in.
"""

from __future__ import annotations

import contextlib
import json
import os
import signal
import subprocess
from pathlib import Path

import numpy as np
import pytest

from cfcd.failpoints import FAILPOINT_ENV
from cfcd.index import Index, store
from failpoints import cfcd, kill, start, wait_stopped

DIM = 32
MODEL = {"name": "synthetic", "config": {"backbone": "none"}, "dim": DIM}
SETTINGS = {"scales": [1.0], "max_side": None}
BASE, MORE = 1000, 5000


def unit_rows(n: int, seed: int) -> np.ndarray:
    x = np.random.default_rng(seed).standard_normal((n, DIM)).astype(np.float32)
    return x / np.linalg.norm(x, axis=1, keepdims=True)


def features_dir(path: Path, n: int, seed: int, prefix: str) -> Path:
    """A `cfcd extract`-style directory of n random unit descriptors."""
    path.mkdir(parents=True)
    np.save(path / "shard-00000.npy", unit_rows(n, seed))
    manifest = {"format": "cfcd-features", "version": 1, "model": MODEL, "scales": [1.0], "max_side": None,
                "dtype": "float32", "count": n, "ids": [f"{prefix}{i}" for i in range(n)],
                "shards": [{"file": "shard-00000.npy", "start": 0, "count": n}], "failed": []}
    (path / "manifest.json").write_text(json.dumps(manifest))
    return path


def check_index(root: Path, n: int, generation: int) -> None:
    """The published version is ``generation``, complete with ``n`` images, and answers."""
    index = Index.load(root)
    assert (index.generation, len(index), len(index.layers.vectors)) == (generation, n, n)
    q = index.descriptors([n - 1])
    assert index.search(q, k=1).hits(0)[0]["id"] == n - 1


def leftovers(root: Path) -> list[str]:
    """Directories that are neither the current version nor a kept previous one."""
    gen = store.current(root)[0]
    return sorted(p.name for p in root.iterdir() if p.is_dir() and not (
        p.name.startswith("v") and gen - store.KEEP_PREVIOUS <= int(p.name[1:]) <= gen))


def add_in_process(root: Path, n: int, seed: int, prefix: str) -> None:
    with Index.edit(root) as index:
        index.add(unit_rows(n, seed), [f"{prefix}{i}" for i in range(n)], model=MODEL, settings=SETTINGS)


@contextlib.contextmanager
def shared_milvus(tmp_path: Path, learn: bool):
    """An index of BASE descriptors (version 1) on a `milvus-lite server` that real processes
    share; yields its location."""
    pytest.importorskip("pymilvus", reason="the Milvus engine needs pymilvus: pip install 'cfcd[milvus]'")
    pytest.importorskip("milvus_lite", reason="Milvus Lite needs milvus-lite: pip install 'cfcd[milvus]'")
    from milvus_server import milvus_server

    with milvus_server(tmp_path / "shared.db") as address:
        uri = f"milvus://{address}/photos"
        Index.build(unit_rows(BASE, 0), [f"base{i}" for i in range(BASE)], model=MODEL, settings=SETTINGS,
                    location=uri, learn=learn).save(uri)
        yield uri


@pytest.fixture
def built(tmp_path) -> tuple[Path, Path]:
    """An index of BASE descriptors (version 1), and a features directory of MORE others."""
    root = tmp_path / "idx"
    Index.build(unit_rows(BASE, 0), [f"base{i}" for i in range(BASE)], model=MODEL, settings=SETTINGS, learn=True).save(root)
    return root, features_dir(tmp_path / "f1", MORE, 1, "more")


@pytest.mark.parametrize("point", ["index.commit", "index.staged", "index.renamed", "index.published"])
def test_kill_at_each_point_of_an_add(built, point):
    root, more = built
    proc = start("index", "add", root, more, failpoint=point)
    wait_stopped(proc)
    staged = [p for p in root.iterdir() if p.name.startswith(store.STAGING_PREFIX)]
    faiss_files = [p / store.FAISS_FILE for p in staged]
    if point == "index.commit":  # descriptors read, nothing written yet
        assert not staged
    elif point == "index.staged":  # the new version's vectors and records are on disk, unpublished
        assert len(staged) == 1 and faiss_files[0].stat().st_size > MORE * DIM * 4
        assert (staged[0] / store.META_FILE).stat().st_size > 0
    else:  # renamed to v2; CURRENT switched to it only at "published"
        assert not staged and (root / store.version_name(2) / store.FAISS_FILE).is_file()
    assert store.current(root)[0] == (2 if point == "index.published" else 1)
    kill(proc)
    if point == "index.published":
        check_index(root, BASE + MORE, generation=2)  # the new version, complete
    else:
        check_index(root, BASE, generation=1)  # the old version, intact
    if point == "index.renamed":
        assert leftovers(root) == ["v00000002"]  # the orphan: renamed, never published
    # The next writer removes what the dead one left, and publishes the next version.
    add_in_process(root, MORE, 1, "more")
    check_index(root, BASE + MORE, generation=2)
    assert leftovers(root) == []


def test_concurrent_builds_never_replace_each_other(tmp_path):
    # The first build has extracted everything and is about to save when the second builds
    # the same new index: the first must then fail clearly, not replace the second's.
    root = tmp_path / "idx"
    first = start("index", "build", root, features_dir(tmp_path / "fa", 300, 2, "a"), failpoint="index.commit")
    wait_stopped(first)
    second = subprocess.run(cfcd("index", "build", root, features_dir(tmp_path / "fb", 200, 3, "b")),
                            capture_output=True, text=True)
    assert second.returncode == 0, second.stderr
    os.kill(first.pid, signal.SIGCONT)
    out, err = first.communicate(timeout=120)
    assert first.returncode == 2 and "an index already exists" in err, (out, err)
    index = Index.load(root)
    assert index.generation == 1 and len(index) == 200
    assert {r.path[0] for r in index.records(index.ids()).values()} == {"b"}


def test_a_second_writer_does_not_wait_for_the_first_ones_extraction(built):
    # The first add is stopped after extraction (holding no lock); the second completes at
    # once; the first then publishes on top of it, its additions replayed, nothing lost.
    root, more = built
    first = start("index", "add", root, more, failpoint="index.commit")
    wait_stopped(first)
    add_in_process(root, 700, 4, "other")
    check_index(root, BASE + 700, generation=2)
    os.kill(first.pid, signal.SIGCONT)
    out, err = first.communicate(timeout=120)
    assert first.returncode == 0, err
    assert f"added {MORE} images" in out and "version 3" in out
    index = Index.load(root)
    assert index.generation == 3 and len(index) == BASE + MORE + 700
    paths = [r.path for r in index.records(index.ids()).values()]
    assert sum(p.startswith("more") for p in paths) == MORE and sum(p.startswith("other") for p in paths) == 700


def test_milvus_readers_never_see_an_unpublished_addition(tmp_path):
    # A real writer stopped after inserting its rows into a Milvus collection (shared through
    # `milvus-lite server`), before publishing them: another process's reader sees the old
    # version only; killed there, its rows stay invisible and the next writer deletes them.
    # No learned projection: it would move the vectors to a new collection (tested below).
    with shared_milvus(tmp_path, learn=False) as uri:
        more = unit_rows(MORE, 1)
        writer = start("index", "add", uri, features_dir(tmp_path / "f1", MORE, 1, "more"), failpoint="index.staged")
        wait_stopped(writer)
        index = Index.load(uri)
        rows = index.store.client.query("photos", filter="id >= 0", output_fields=["count(*)"])[0]["count(*)"]
        assert rows == BASE + MORE  # the new rows are in the collection ...
        assert (index.generation, len(index)) == (1, BASE)  # ... but not in the published version
        hits = index.search(more[:20], k=1).ids
        assert (hits < BASE).all() and not index.records(range(BASE, BASE + MORE))
        kill(writer)
        add_in_process(uri, 700, 4, "other")
        index = Index.load(uri)
        assert (index.generation, len(index), len(index.layers.vectors)) == (2, BASE + 700, BASE + 700)
        rows = index.store.client.query("photos", filter="id >= 0", output_fields=["count(*)"])[0]["count(*)"]
        assert rows == BASE + 700  # the dead writer's rows are gone
        assert index.search(unit_rows(700, 4)[:5], k=1).ids[:, 0].tolist() == list(range(BASE, BASE + 5))


@pytest.mark.parametrize("point", ["index.staged", "index.renamed"])
def test_kill_a_relearn(built, point):
    # `cfcd index relearn` killed after writing the new projection and its vectors, before
    # publishing them: readers keep the old projection whole (its dimension, its vectors),
    # never the new projection with the old vectors; the next relearn publishes cleanly.
    root, _ = built
    old = Index.load(root)
    assert old.projection is not None and old.projection.dim == DIM  # learned when built
    proc = start("index", "relearn", root, "--dim", 8, failpoint=point)
    wait_stopped(proc)
    staged = [p for p in root.iterdir() if p.name.startswith(store.STAGING_PREFIX)]
    pending = staged[0] if point == "index.staged" else root / store.version_name(2)
    assert (pending / store.PROJECTION_FILE).stat().st_size == (8 + 1) * DIM * 4  # the new one is on disk ...
    kill(proc)
    index = Index.load(root)  # ... but not published
    assert (index.generation, index.projection.dim, index.layers.vectors.dim) == (1, DIM, DIM)
    np.testing.assert_array_equal(index.projection.matrix, old.projection.matrix)
    check_index(root, BASE, 1)
    out = subprocess.run(cfcd("index", "relearn", root, "--dim", 8), capture_output=True, text=True, timeout=300)
    assert out.returncode == 0, out.stderr
    assert "32 -> 8-d" in out.stdout and "version 2" in out.stdout
    index = Index.load(root)
    assert (index.generation, index.projection.dim, index.layers.vectors.dim) == (2, 8, 8)
    check_index(root, BASE, 2)
    assert leftovers(root) == []


def test_a_writer_learning_a_projection_holds_no_lock(built):
    # The first add learns the projection its 6000 images are due (stopped right after, as if
    # learning took minutes); a second add, a real process too, publishes meanwhile without
    # waiting. The first then publishes on top: both additions land, searched through the
    # projection it learned (from more images than the second one's).
    root, more = built
    first = start("index", "add", root, more, failpoint="index.learned")
    wait_stopped(first)
    assert store.current(root)[0] == 1  # learned, nothing published yet
    second = subprocess.run(cfcd("index", "add", root, features_dir(root.parent / "f2", 700, 4, "other")),
                            capture_output=True, text=True, timeout=50)  # the lock waits 60 s
    assert second.returncode == 0, second.stderr
    assert Index.load(root).projection.learned_from == BASE + 700  # the second learned its own
    os.kill(first.pid, signal.SIGCONT)
    out, err = first.communicate(timeout=120)
    assert first.returncode == 0, err
    assert f"added {MORE} images" in out and "version 3" in out
    index = Index.load(root)
    assert (index.generation, len(index), len(index.layers.vectors)) == (3, BASE + MORE + 700, BASE + MORE + 700)
    assert index.projection.learned_from == BASE + MORE  # the first's, not learned again
    paths = {r.id: r.path for r in index.records(index.ids()).values()}
    assert sum(p.startswith("more") for p in paths.values()) == MORE
    assert sum(p.startswith("other") for p in paths.values()) == 700
    probe = np.array(sorted(paths))[::50]
    assert (index.search(index.descriptors(probe), k=1).ids[:, 0] == probe).all()


def test_kill_a_relearn_and_a_compaction_on_milvus(tmp_path):
    # As test_kill_a_relearn, on a Milvus server shared by real processes: a relearn stopped
    # after writing the new projection's rows and its new vector collection, then killed,
    # leaves readers on the old projection; the next relearn publishes cleanly; a compaction
    # killed half-way leaves the index whole and its rerun drops what the dead relearn left.
    with shared_milvus(tmp_path, learn=True) as uri:
        old = Index.load(uri)
        assert old.projection.dim == DIM
        collections = set(old.store.client.list_collections())
        proc = start("index", "relearn", uri, "--dim", 8, failpoint="index.staged")
        wait_stopped(proc)
        dead = set(old.store.client.list_collections()) - collections
        assert len(dead) == 1 and old.store.client.get_collection_stats(dead.pop())["row_count"] == BASE  # on disk ...
        kill(proc)
        index = Index.load(uri)  # ... but not published
        assert (index.generation, index.projection.dim, index.layers.vectors.dim) == (1, DIM, DIM)
        np.testing.assert_array_equal(index.projection.matrix, old.projection.matrix)
        assert index.search(index.descriptors([7]), k=1).ids[0, 0] == 7
        out = subprocess.run(cfcd("index", "relearn", uri, "--dim", 8), capture_output=True, text=True, timeout=300)
        assert out.returncode == 0, out.stderr
        assert "32 -> 8-d" in out.stdout and "version 2" in out.stdout
        index = Index.load(uri)
        assert (index.generation, index.projection.dim, index.layers.vectors.dim) == (2, 8, 8)
        assert index.search(index.descriptors([7]), k=1).ids[0, 0] == 7
        searched = index.layers.vectors.collection

        proc = start("index", "compact", uri, failpoint="index.reclaiming")
        wait_stopped(proc)  # the unused vector collections dropped, the rows not yet deleted
        kill(proc)
        index = Index.load(uri)
        assert (index.generation, index.projection.dim) == (2, 8)
        assert index.search(index.descriptors([7]), k=1).ids[0, 0] == 7
        out = subprocess.run(cfcd("index", "compact", uri, "--json"), capture_output=True, text=True, timeout=300)
        assert out.returncode == 0, out.stderr
        assert json.loads(out.stdout)["version"] == 2  # nothing removed: no new version
        left = set(index.store.client.list_collections())
        # The first vector collection too: the projection learned at build moved the vectors out.
        assert left == {"photos_images", "photos_raw", "photos_proj", searched}
        assert index.store.client.query("photos_proj", filter="id >= 0", output_fields=["count(*)"])[0]["count(*)"] == 9
        index = Index.load(uri)
        assert index.search(index.descriptors([7]), k=1).ids[0, 0] == 7
