"""cfcd.Index: exact and factory indexes, dedupe, removal, persistence, settings checks."""

from __future__ import annotations

import shutil
import subprocess
import sys
import threading

import numpy as np
import pytest

from cfcd.index import Index, IndexMismatchError, Searcher, add_images, load_index_model
from cfcd.index.locks import WriteLock
from cfcd.index.neighbours import augmented
from cfcd.index.vectors import layers
from cfcd.settings import DEFAULT_MAX_WORKING_SIDE, ExtractionSettings, Runtime

MODEL = {"name": "test-model", "config": {"backbone": "x"}, "dim": 16}
SETTINGS = ExtractionSettings((1.0,), max_side=None, preparation="cfcd").to_dict()  # as an index stores it
QUIET = Runtime(progress=False)


def unit_rows(n: int, d: int = 16, seed: int = 0) -> np.ndarray:
    x = np.random.default_rng(seed).standard_normal((n, d)).astype(np.float32)
    return x / np.linalg.norm(x, axis=1, keepdims=True)


def names(n: int, prefix: str = "img") -> list[str]:
    return [f"{prefix}{i:05d}.jpg" for i in range(n)]


def test_exact_search_finds_each_vector_first():
    x = unit_rows(200)
    index = Index.build(x, names(200), model=MODEL, settings=SETTINGS)
    res = index.search(x[:10], k=5)
    assert res.ids[:, 0].tolist() == list(range(10))
    assert np.allclose(res.scores[:, 0], 1.0, atol=1e-5)
    assert res.hits(3)[0] == {"rank": 1, "id": 3, "score": pytest.approx(1.0, abs=1e-5), "path": "img00003.jpg",
                              "paths": ["img00003.jpg"]}
    assert (np.diff(res.scores, axis=1) <= 1e-6).all()


def test_k_larger_than_index_pads():
    index = Index.build(unit_rows(3), names(3))
    res = index.search(unit_rows(1, seed=1), k=5)
    assert res.ids[0, 3:].tolist() == [-1, -1] and len(res.hits(0)) == 3


def test_same_content_is_indexed_once(tmp_path):
    a, b = tmp_path / "a.jpg", tmp_path / "copy-of-a.jpg"
    a.write_bytes(b"same bytes")
    b.write_bytes(b"same bytes")
    (tmp_path / "c.jpg").write_bytes(b"other bytes")
    x = unit_rows(3)
    index = Index(16)
    report = index.add(x, [a, b, tmp_path / "c.jpg"])
    assert report.added == [0, 1] and report.repeated == {1: 0}
    again = index.add(x, [b, tmp_path / "c.jpg", a])
    assert again.added == [] and again.duplicates == {0: 0, 1: 1, 2: 0}
    assert len(index) == 2 and len(index.layers.vectors) == 2
    rec = index.records([0])[0]
    assert rec.sha256 and rec.size == 10 and rec.path == str(a.resolve())


def test_remove_by_id_and_path():
    x = unit_rows(20)
    index = Index.build(x, names(20))
    assert index.remove(ids=[3, 99]) == [3]
    assert index.remove(paths=["img00004.jpg"]) == [4]
    res = index.search(x[3:5], k=20)
    assert 3 not in res.ids and 4 not in res.ids and len(index) == 18
    # the content can be added back, under a new id
    assert index.add(x[3:4], ["img00003.jpg"]).added == [20]


def test_save_load_roundtrip_and_versions(tmp_path):
    x = unit_rows(50)
    root = tmp_path / "idx"
    Index.build(x[:30], names(30), model=MODEL, settings=SETTINGS).save(root)
    for step in range(4):
        with Index.edit(root) as index:
            index.add(x[30 + step:31 + step], [f"more{step}.jpg"])
    loaded = Index.load(root)
    assert len(loaded) == 34 and loaded.generation == 5
    assert loaded.model == MODEL and loaded.settings == SETTINGS
    assert loaded.search(x[33:34], k=1).hits(0)[0]["path"] == "more3.jpg"
    versions = sorted(p.name for p in root.iterdir() if p.name.startswith("v"))
    assert versions == ["v00000003", "v00000004", "v00000005"]  # current + KEEP_PREVIOUS
    with Index.edit(root) as index:  # nothing changed: nothing published
        pass
    assert Index.load(root).generation == 5


def test_save_refuses_to_clobber(tmp_path):
    root = tmp_path / "idx"
    Index.build(unit_rows(5), names(5)).save(root)
    with pytest.raises(FileExistsError, match="already exists"):
        Index.build(unit_rows(5), names(5)).save(root)
    stale, fresh = Index.load(root), Index.load(root)
    fresh.add(unit_rows(1, seed=3), ["new.jpg"])
    fresh.save()
    stale.add(unit_rows(1, seed=4), ["other.jpg"])
    with pytest.raises(RuntimeError, match="changed by another process"):
        stale.save()
    (tmp_path / "junk").mkdir()
    (tmp_path / "junk" / "notes.txt").write_text("mine")
    with pytest.raises(FileExistsError, match="not a cfcd index"):
        Index.build(unit_rows(5), names(5)).save(tmp_path / "junk")


def test_other_model_or_settings_refused():
    index = Index.build(unit_rows(5), names(5), model=MODEL, settings=SETTINGS)
    q = unit_rows(1, seed=2)
    with pytest.raises(IndexMismatchError, match="differs from the index's model"):
        index.search(q, model={**MODEL, "name": "other"})
    with pytest.raises(IndexMismatchError, match="extraction settings"):
        index.search(q, settings={"scales": [0.5, 1.0], "max_side": None})
    with pytest.raises(IndexMismatchError, match="32-d"):
        index.search(unit_rows(1, d=32))
    with pytest.raises(IndexMismatchError):
        index.add(unit_rows(1, seed=3), ["x.jpg"], settings={"scales": [1.0], "max_side": 512})
    assert len(index.search(q, model=MODEL, settings=SETTINGS).hits(0)) == 5


@pytest.mark.parametrize("factory", ["IVF8,Flat", "IVF8,PQ4x4", "HNSW16", "OPQ4,IVF8,PQ4x4"])
def test_factory_strings(tmp_path, factory):
    x = unit_rows(1000)
    index = Index.build(x, names(1000), factory=factory)
    assert not index.layers.vectors.capabilities.needs_training
    res = index.search(x[:50], k=10)
    assert (res.ids[:, :10] == np.arange(50)[:, None]).any(axis=1).mean() >= 0.9
    index.remove(ids=[0, 1])
    res = index.search(x[:2], k=10)
    assert not np.isin([0, 1], res.ids).any()
    index.save(tmp_path / "idx")
    loaded = Index.load(tmp_path / "idx")
    assert len(loaded) == 998 and loaded.factory == factory
    assert not np.isin([0, 1], loaded.search(x[:2], k=10).ids).any()
    assert loaded.search(x[5:6], k=10, qe=3).ids.shape == (1, 10)


def test_pq_skips_polysemous_training():
    # index_factory turns polysemous training on for every PQ; it is minutes of wasted work.
    import faiss

    for factory in ("IVF8,PQ4x4", "OPQ4,IVF8,PQ4x4", "PQ4x4"):
        index = Index(16, factory=factory)
        trainable = [layer for layer in layers(index.layers.vectors.faiss) if hasattr(layer, "do_polysemous_training")]
        assert trainable and not any(layer.do_polysemous_training for layer in trainable), factory
    assert faiss.downcast_index(faiss.index_factory(16, "IVF8,PQ4x4")).do_polysemous_training  # faiss's default


@pytest.mark.parametrize("factory", ["IVF8,PQ8x4fs", "PQ8x4fs"])
def test_fast_scan_refuses_reconstruction(tmp_path, factory):
    # faiss 1.15 segfaults reconstructing from a fast-scan index read back from disk (QE, DBA):
    # cfcd refuses instead; plain search and removal work.
    x = unit_rows(1000)
    index = Index.build(x, names(1000), factory=factory)
    index.remove(ids=[0])
    index.save(tmp_path / "idx")
    loaded = Index.load(tmp_path / "idx")
    assert loaded.search(x[1:2], k=5).ids.shape == (1, 5)
    assert 0 not in loaded.search(x[:1], k=10).ids
    for attempt in (lambda: loaded.search(x[:1], k=5, qe=2), lambda: augmented(loaded, 2), lambda: augmented(index, 2)):
        with pytest.raises(ValueError, match="fast-scan"):
            attempt()


def test_bad_factory_and_too_few_training_points():
    with pytest.raises(ValueError, match="not understood by faiss"):
        Index(16, factory="NoSuchIndex42")
    with pytest.raises(ValueError, match="cannot train 'IVF256,Flat' on 20 vectors"):
        Index.build(unit_rows(20), names(20), factory="IVF256,Flat")


def test_one_writer_at_a_time(tmp_path):
    root = tmp_path / "idx"
    Index.build(unit_rows(5), names(5)).save(root)
    with WriteLock(root):
        with pytest.raises(RuntimeError, match="another process"):
            with Index.edit(root, timeout=0.2) as index:  # the block runs; the save waits for the lock
                index.add(unit_rows(1, seed=9), ["late.jpg"])
    assert len(Index.load(root)) == 5


def test_interleaved_edits_both_land(tmp_path):
    # The second writer publishes while the first is still inside its block (extracting):
    # the first's changes are replayed on the newer version, its report updated.
    root = tmp_path / "idx"
    x = unit_rows(10, seed=4)
    Index.build(x[:5], names(5)).save(root)
    with Index.edit(root) as first:
        report = first.add(x[5:7], ["a.jpg", "shared.jpg"])
        removed = first.remove(ids=[1])
        assert report.added == [5, 6]
        with Index.edit(root) as second:
            assert second.add(x[7:9], ["b.jpg", "shared.jpg"]).added == [5, 6]
            second.remove(ids=[0])
    assert report.added == [7] and report.duplicates == {1: 6} and removed == [1]
    loaded = Index.load(root)
    assert loaded.generation == 3 and first.generation == 3
    assert sorted(r.path for r in loaded.records(loaded.ids()).values()) == [
        "a.jpg", "b.jpg", "img00002.jpg", "img00003.jpg", "img00004.jpg", "shared.jpg"]
    assert loaded.search(x[5:6], k=1).hits(0)[0]["path"] == "a.jpg"


def test_readers_never_see_a_half_written_index(tmp_path):
    root = tmp_path / "idx"
    x = unit_rows(400, seed=5)
    Index.build(x[:100], names(100)).save(root)
    errors, sizes = [], []
    done = threading.Event()

    def reader():
        while not done.is_set():
            try:
                index = Index.load(root)
                n = len(index)
                assert len(index.layers.vectors) == n, (len(index.layers.vectors), n)
                hit = index.search(x[n - 1:n], k=1).hits(0)[0]
                assert hit["id"] == n - 1 and hit["path"] is not None
                sizes.append(n)
            except Exception as err:  # noqa: BLE001 - collected and reported below
                errors.append(repr(err))

    threads = [threading.Thread(target=reader) for _ in range(2)]
    for t in threads:
        t.start()
    for step in range(30):
        with Index.edit(root) as index:
            start = 100 + 10 * step
            index.add(x[start:start + 10], names(10, prefix=f"s{step}-"))
    done.set()
    for t in threads:
        t.join()
    assert not errors, errors[:3]
    assert len(set(sizes)) > 3  # the readers saw several versions
    assert len(Index.load(root)) == 400


def test_add_images_extracts_only_new_ones(tmp_path, image_folder, tiny_model):
    from cfcd.data.images import list_images

    images = list_images(image_folder)
    (tmp_path / "broken.jpg").write_bytes(b"not a jpeg")
    index = Index(tiny_model.output_dim)
    one_scale = ExtractionSettings((1.0,), max_side=None)
    report = add_images(index, tiny_model, [*images, tmp_path / "broken.jpg"], one_scale, QUIET)
    assert len(report.added) == len(images) and list(report.failed) == [len(images)]
    assert index.model["name"] == "tiny-test"
    assert index.settings == {"scales": [1.0], "max_side": None, "max_working_side": DEFAULT_MAX_WORKING_SIDE,
                              "preparation": "cfcd"}
    shutil.copy(images[0], tmp_path / "copy.jpg")
    again = add_images(index, tiny_model, [tmp_path / "copy.jpg", images[1]], runtime=QUIET)  # the index's settings
    assert again.added == [] and again.duplicates == {0: 0, 1: 1}
    with pytest.raises(IndexMismatchError):
        add_images(index, tiny_model, images, {"scales": (0.5, 1.0)}, QUIET)
    with pytest.raises(IndexMismatchError, match="preparation"):
        add_images(index, tiny_model, images, {"preparation": "official"}, QUIET)
    res = Searcher(index, tiny_model).search([images[2], (images[2], (0, 0, 30, 30))], k=3)
    assert res.ids.shape == (2, 3) and res.ids[0, 0] == 2


def test_index_reloads_its_model_from_the_stored_config(tmp_path):
    # A timm state dict has no key that names its architecture: only the backbone stored in
    # the index's model config can rebuild the model (guessing from keys fails).
    timm = pytest.importorskip("timm")
    import torch

    from cfcd.model import WeightsError, load_model

    torch.manual_seed(0)
    path = tmp_path / "timm_resnet18.pth"
    torch.save(timm.create_model("resnet18", pretrained=False).state_dict(), path)
    with pytest.raises(WeightsError):
        load_model(path)
    model = load_model(path, backbone="timm:resnet18")
    Index(model.output_dim, model=model).save(tmp_path / "idx")
    index = Index.load(tmp_path / "idx")
    assert index.model["config"]["backbone"] == "timm:resnet18"
    reloaded = load_index_model(index)
    assert reloaded.config == model.config
    assert all(torch.equal(a, b) for a, b in zip(reloaded.state_dict().values(), model.state_dict().values()))


def test_a_search_from_descriptors_loads_no_torch(tmp_path):
    """Searching stored descriptors (a query's, or an indexed image's for "more like this") needs
    no model: a fresh process doing it must not pay torch's import (seconds, hundreds of MB)."""
    code = f"""
import sys, numpy as np
from cfcd.index import Index
from cfcd.index.neighbours import similar
x = np.eye(12, 8, dtype=np.float32)
Index.build(x, [f"/none/{{i}}.jpg" for i in range(12)]).save({str(tmp_path / 'idx')!r})
index = Index.load({str(tmp_path / 'idx')!r})
index.search(x[:2], k=3); similar(index, [0], k=3)
print('torch' in sys.modules)
"""
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout
    assert out.strip() == "False"
