"""Descriptors left on disk: ShardedArray and load_features(mmap=True)."""

from __future__ import annotations

import json

import numpy as np
import pytest

from cfcd.extraction import FEATURES_FORMAT, MANIFEST, load_features, read_manifest
from cfcd.sharded import ShardedArray


def write_features(folder, shards: list[np.ndarray]):
    """A features directory as ``cfcd extract`` writes it (shards + manifest), made by hand."""
    folder.mkdir()
    entries, start = [], 0
    for k, shard in enumerate(shards):
        np.save(folder / f"shard-{k:05d}.npy", shard)
        entries.append({"file": f"shard-{k:05d}.npy", "start": start, "count": len(shard)})
        start += len(shard)
    manifest = {"format": FEATURES_FORMAT, "version": 1, "model": {"name": "m", "config": {}, "dim": shards[0].shape[1]},
                "scales": [1.0], "max_side": None, "dtype": str(shards[0].dtype), "count": start,
                "ids": [f"im{i}" for i in range(start)], "shards": entries, "failed": []}
    (folder / MANIFEST).write_text(json.dumps(manifest))
    return folder


def test_rows_read_like_the_concatenation():
    rng = np.random.default_rng(0)
    parts = [rng.normal(size=(n, 3)).astype(np.float16) for n in (4, 1, 5)]
    full = np.concatenate(parts).astype(np.float32)
    view = ShardedArray(parts)
    assert view.shape == (10, 3) and len(view) == 10 and view.dtype == np.float32
    assert np.array_equal(view[2:7], full[2:7]) and np.array_equal(view[::3], full[::3])
    assert np.array_equal(view[[9, 0, 4, 4, -1]], full[[9, 0, 4, 4, -1]])
    assert np.array_equal(view[5], full[5]) and np.array_equal(np.asarray(view), full)
    assert np.array_equal(np.concatenate([b for _, b in view.blocks(3)]), full)
    assert [s for s, _ in view.blocks(4)] == [0, 4, 8]
    with pytest.raises(IndexError):
        view[[10]]


def test_mmap_features_stay_on_disk(tmp_path):
    rng = np.random.default_rng(1)
    shards = [rng.normal(size=(6, 4)).astype(np.float32), rng.normal(size=(3, 4)).astype(np.float32)]
    folder = write_features(tmp_path / "feats", shards)
    ids, desc, manifest = load_features(folder, mmap=True)
    assert isinstance(desc, ShardedArray) and all(isinstance(p, np.memmap) for p in desc.parts)
    assert ids == manifest["ids"] and np.array_equal(np.asarray(desc), load_features(folder)[1])


def test_manifest_alone_tells_the_dimension(tmp_path):
    folder = write_features(tmp_path / "feats", [np.zeros((2, 7), np.float32)])
    (folder / "shard-00000.npy").unlink()  # the manifest is all that is read
    assert read_manifest(folder)["model"]["dim"] == 7
