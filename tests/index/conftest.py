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
    """A tiny model's checkpoint whose descriptors tell pictures apart (``samples.tiny_checkpoint``)."""
    from samples import tiny_checkpoint

    return tiny_checkpoint(tmp_path_factory.mktemp("model") / "tiny.pt")
