"""Hostile but fair use of a real `cfcd serve` process on loopback and of real CLI processes,
on tiny indexes (generated images, a tiny random model) so the suite stays quick."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest
import torch

sys.path.insert(0, str(Path(__file__).parent))  # probes.py

from servers import textured  # noqa: E402


def cfcd(*args: str, timeout: float = 300, **kw) -> subprocess.CompletedProcess:
    """Run the `cfcd` command line as a separate process."""
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    return subprocess.run([sys.executable, "-m", "cfcd", *map(str, args)], capture_output=True, text=True,
                          timeout=timeout, env=env, **kw)


@pytest.fixture(scope="session")
def tiny_checkpoint(tmp_path_factory) -> Path:
    from cfcd.model import CFCDNet, ModelConfig, save_checkpoint

    torch.manual_seed(0)
    path = tmp_path_factory.mktemp("hostile-model") / "tiny.pt"
    save_checkpoint(path, CFCDNet(ModelConfig("mobilenet_v2", dim=0)))
    return path


@pytest.fixture(scope="session")
def collection(tmp_path_factory) -> Path:
    root = tmp_path_factory.mktemp("hostile-photos")
    for i in range(6):
        textured(root / f"p{i}.png", seed=i, size=(160, 120))
    return root


@pytest.fixture(scope="session")
def tiny_index(tmp_path_factory, tiny_checkpoint, collection) -> Path:
    """Six generated images indexed by `cfcd index build` with the tiny model at one scale."""
    root = tmp_path_factory.mktemp("hostile-index") / "idx"
    res = cfcd("index", "build", root, collection, "--model", tiny_checkpoint, "--scales", "1")
    assert res.returncode == 0, res.stderr
    return root
