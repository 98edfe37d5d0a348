"""Persistent FAISS index of CFCD descriptors with SQLite metadata, and re-ranking."""

__all__ = ["AddReport", "ImageRecord", "Index", "IndexMismatchError", "SearchResult"]


def __getattr__(name):
    # FAISS and torch load on first use, so that `cfcd search --help` (which reads the
    # re-ranking defaults from .rerank) does not wait for them.
    if name == "ImageRecord":
        from . import metadata as module
    elif name in __all__:
        from . import index as module
    else:
        raise AttributeError(f"module 'cfcd.index' has no attribute {name!r}")
    return getattr(module, name)
