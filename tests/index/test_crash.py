"""Killing `cfcd index add` mid-write leaves the previous index loadable and answering."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest

from cfcd.index import Index, store

DIM = 32
MODEL = {"name": "synthetic", "config": {"backbone": "none"}, "dim": DIM}


def features_dir(path: Path, n: int, seed: int, prefix: str) -> Path:
    """A `cfcd extract`-style directory of n random unit descriptors."""
    path.mkdir(parents=True)
    x = np.random.default_rng(seed).standard_normal((n, DIM)).astype(np.float32)
    np.save(path / "shard-00000.npy", x / np.linalg.norm(x, axis=1, keepdims=True))
    manifest = {"format": "cfcd-features", "version": 1, "model": MODEL, "scales": [1.0], "max_side": None,
                "dtype": "float32", "count": n, "ids": [f"{prefix}{i}" for i in range(n)],
                "shards": [{"file": "shard-00000.npy", "start": 0, "count": n}], "failed": []}
    (path / "manifest.json").write_text(json.dumps(manifest))
    return path


def cfcd(*args) -> list[str]:
    return [sys.executable, "-m", "cfcd", *map(str, args)]


def check_index(root: Path, expected: set[int]) -> None:
    index = Index.load(root)
    assert len(index) in expected
    assert index.faiss.ntotal == len(index)
    q = index.reconstruct(np.array([0]))
    assert index.search(q, k=1).hits(0)[0]["id"] == 0


@pytest.mark.parametrize("moment", ["staging", "early"])
def test_kill_during_add(tmp_path, moment):
    root = tmp_path / "idx"
    small = features_dir(tmp_path / "f0", 1000, 0, "base")
    subprocess.run(cfcd("index", "build", root, small), check=True, capture_output=True)
    big = features_dir(tmp_path / "f1", 100_000, 1, "more")
    proc = subprocess.Popen(cfcd("index", "add", root, big), stdout=subprocess.PIPE, stderr=subprocess.PIPE)
    deadline = time.monotonic() + 120
    if moment == "staging":
        # Wait for the writer to start writing the new version, then kill it.
        while not any(p.name.startswith(store.STAGING_PREFIX) for p in root.iterdir()):
            assert proc.poll() is None, proc.communicate()
            assert time.monotonic() < deadline
            time.sleep(0.001)
    else:
        time.sleep(0.5)
    os.kill(proc.pid, signal.SIGKILL)
    proc.wait()
    killed_before_publish = store.current(root)[0] == 1
    if moment == "staging":
        assert killed_before_publish, "the writer finished before it was killed; make the added set larger"
    check_index(root, {1000, 101_000})
    # The next writer cleans up after the dead one and succeeds.
    subprocess.run(cfcd("index", "add", root, big), check=True, capture_output=True)
    check_index(root, {101_000})
    assert not any(p.name.startswith(store.STAGING_PREFIX) for p in root.iterdir())
