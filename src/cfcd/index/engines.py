"""Which store holds an index, chosen by its location.

A vector engine is a store class (``cfcd.index.contract.Store``) registered in ``ENGINES`` with
a ``claims`` test on a location. The default engine, FAISS in a directory
(``cfcd.index.store.DirectoryStore``), takes every location no other engine claims. Every store
gives ``cfcd.Index`` the same ``Layers`` (``cfcd.index.layers``), so the index's behaviour
(dedupe, model checks, re-ranking, the learned projection) is written once.
"""

from __future__ import annotations

from pathlib import Path

from ..registry import Registry

ENGINES = Registry("vector engine", home="cfcd.index.engines")
# The engine of an index that has no location yet (``Index(dim)`` before ``save``), and of
# every location no other engine claims.
DEFAULT_ENGINE = "faiss"


def _is_milvus(location: str) -> bool:
    return location.startswith(("milvus://", "http://", "https://")) or location.endswith(".db")


ENGINES.register("faiss", "cfcd.index.store:DirectoryStore", claims=lambda location: True)
ENGINES.register("milvus", "cfcd.index.milvus:MilvusStore", claims=_is_milvus)


def engine_of(location: str | Path) -> str:
    others = [name for name in ENGINES if name != DEFAULT_ENGINE]
    return next((name for name in others if ENGINES.attrs(name)["claims"](str(location))), DEFAULT_ENGINE)


def store_class(engine: str):
    return ENGINES.get(engine)


def open_store(location: str | Path):
    """The store of the index at ``location`` (which need not exist yet)."""
    return store_class(engine_of(location))(location)
