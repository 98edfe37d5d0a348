"""Image descriptors indexed for search: ``Index`` over a vector engine (FAISS, or Milvus),
a catalogue of image records, a versioned store, and re-ranking.

Layers, bottom up: ``contract`` (what an engine provides), ``vectors`` (the FAISS vector index),
``catalogue`` (SQLite image records and settings), ``raw``, ``locks`` (one writer at a time),
``store`` (versions), ``milvus`` (the same over Milvus), ``engines`` (which store a location names),
``layers`` (one version's layers), ``publishing`` (an index's versions), ``index`` (``Index``),
``searcher`` (model + settings + index), ``neighbours`` and ``duplicates`` (from stored descriptors).
"""

__all__ = ["AddReport", "ImageRecord", "Index", "IndexMismatchError", "SearchResult", "Searcher", "add_images",
           "load_index_model"]

_HOMES = {"AddReport": "results", "SearchResult": "results", "ImageRecord": "records", "Index": "index",
          "IndexMismatchError": "index", "Searcher": "searcher", "add_images": "searcher",
          "load_index_model": "searcher"}


def __getattr__(name):
    # Loaded on first use, so that `cfcd search --help` (which reads the re-ranking defaults
    # from .rerank) imports no more than it needs.
    if name not in _HOMES:
        raise AttributeError(f"module 'cfcd.index' has no attribute {name!r}")
    from importlib import import_module

    return getattr(import_module(f".{_HOMES[name]}", __name__), name)
