"""Which store holds an index, chosen by its location.

A plain directory is the embedded FAISS engine (``cfcd.index.store.DirectoryStore``). A
vector engine registers here a test on the location and the module of its store; its store
gives ``cfcd.Index`` the same interface (``exists``, ``version``, ``open``, ``create``,
``create_vectors``, ``lock``, ``publish``), so the index's behaviour (dedupe, model checks,
re-ranking, the learned projection) is written once. A version of an index is its ``Layers``.
"""

from __future__ import annotations

import importlib
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable


@dataclass
class Layers:
    """What one version of an index is made of: the searchable ``vectors`` (projected when a
    ``projection`` is in use), the ``catalogue`` of image records and settings, and the
    ``raw`` descriptors by id (what a projection is learned from); ``generation`` is the
    published version they were read from (None: not published)."""

    vectors: Any
    catalogue: Any
    raw: Any
    projection: Any = None
    generation: int | None = None


def _is_milvus(location: str) -> bool:
    return location.startswith(("milvus://", "http://", "https://")) or location.endswith(".db")


# engine name -> (claims this location?, "module:StoreClass"); the first match wins.
ENGINES: dict[str, tuple[Callable[[str], bool], str]] = {
    "milvus": (_is_milvus, "cfcd.index.milvus:MilvusStore"),
    "faiss": (lambda location: True, "cfcd.index.store:DirectoryStore"),
}


def engine_of(location: str | Path) -> str:
    return next(name for name, (claims, _) in ENGINES.items() if claims(str(location)))


def open_store(location: str | Path):
    """The store of the index at ``location`` (which need not exist yet)."""
    module, cls = ENGINES[engine_of(location)][1].split(":")
    return getattr(importlib.import_module(module), cls)(location)
