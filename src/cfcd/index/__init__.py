"""Persistent FAISS index of CFCD descriptors with SQLite metadata, and re-ranking."""

from .index import AddReport, Index, IndexMismatchError, SearchResult
from .metadata import ImageRecord

__all__ = ["AddReport", "ImageRecord", "Index", "IndexMismatchError", "SearchResult"]
