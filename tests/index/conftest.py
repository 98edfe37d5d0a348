"""Fixtures of the index tests."""

from __future__ import annotations

import sys
from pathlib import Path

import pytest

sys.path.insert(0, str(Path(__file__).parent))  # memory_engine.py, the third engine


@pytest.fixture(params=["faiss", "milvus"])
def location(request, tmp_path) -> str:
    """Where a new index goes, once per engine: FAISS in a directory, Milvus Lite in a .db."""
    if request.param == "milvus":
        pytest.importorskip("pymilvus", reason="the Milvus engine needs pymilvus: pip install 'cfcd[milvus]'")
        pytest.importorskip("milvus_lite", reason="Milvus Lite needs milvus-lite: pip install 'cfcd[milvus]'")
        return str(tmp_path / "photos.db")
    return str(tmp_path / "photos.idx")


@pytest.fixture(scope="session")
def checkpoint(tmp_path_factory) -> Path:
    """A tiny model's checkpoint whose descriptors tell pictures apart: random weights, batch-norm
    statistics set from one batch of noise (at their initial values every image gets one descriptor)."""
    import torch

    from cfcd.model import CFCDNet, ModelConfig, save_checkpoint

    torch.manual_seed(0)
    model = CFCDNet(ModelConfig("mobilenet_v2", dim=16))
    for m in model.modules():
        if isinstance(m, torch.nn.modules.batchnorm._BatchNorm):
            m.momentum = None  # running statistics = this batch's
    with torch.no_grad():
        model.train()(torch.randn(8, 3, 64, 64))
    path = tmp_path_factory.mktemp("model") / "tiny.pt"
    save_checkpoint(path, model.eval())
    return path
