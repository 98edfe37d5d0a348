"""The engine contract: what a vector engine provides to ``cfcd.Index``.

An engine is a **store** (where versions of an index are published) that opens and creates
``Layers``: a **vector layer** (the searched vectors by id), a **catalogue** (one record per
image, and the index's settings) and a **raw layer** (the descriptors as they were added, by
id). ``Index`` composes them and owns everything that is the same for every engine (ids,
dedupe, model and settings checks, tombstones, the learned projection, re-ranking). The
FAISS engine (``store.DirectoryStore``) and the Milvus one (``milvus.store.MilvusStore``) keep it,
and ``tests/index/test_contract.py`` checks every registered engine against it, including an
in-memory NumPy engine written in one file (``tests/index/memory_engine.py``).

The semantics every engine keeps:

- **Versions.** ``publish`` makes the layers it is given the next version and returns its
  generation, larger than every earlier one. A published version never changes: ``open``
  returns a snapshot that later publishes do not alter, and its layers may be changed by its
  holder without anyone else seeing the change until that holder publishes.
- **Visibility.** Nothing a writer does to its layers (``add``, ``remove``, ``insert``,
  ``delete``, ``set_info``) is seen by any other ``open`` before ``publish`` returns; after
  it returns, every new ``open`` sees all of it. A crash before ``publish`` returns leaves the
  previous version whole.
- **Removal.** After ``remove(ids)`` the vector layer never returns those ids from ``search``
  if it said it removed them (``True``); an engine that cannot remove says ``False`` and the
  index filters the ids out (tombstones). ``delete`` removes records from the catalogue and
  ``raw.remove`` rows from the raw layer, both at once and for good.
- **Lock.** ``lock(timeout)`` is a context manager that at most one writer holds at a time
  (across processes for an engine that is shared); ``publish`` is called with it held.
- **Ids.** Ids are non-negative int64 chosen by the index; a layer stores them as given.
  ``search`` pads rows with fewer than ``k`` hits with id -1 and score -inf.
"""

from __future__ import annotations

from typing import Any, ContextManager, Iterable, Protocol, Sequence, runtime_checkable

import numpy as np

from .records import ImageRecord
from .vectors import Capabilities


@runtime_checkable
class VectorLayer(Protocol):
    """The searched vectors by id: inner-product search over L2-normalised rows."""

    factory: str

    @property
    def dim(self) -> int: ...

    @property
    def capabilities(self) -> Capabilities:
        """What this layer can do (training, removal, reading vectors back)."""

    def __len__(self) -> int:
        """Vectors held, removed ones excluded where the layer removes."""

    def describe(self) -> dict:
        """At least ``engine``, ``factory`` and ``vectors`` (the count held)."""

    def train(self, sample: np.ndarray) -> None:
        """Fit the layer to a sample before the first ``add`` (only if ``needs_training``)."""

    def add(self, vectors: np.ndarray, ids: np.ndarray) -> None:
        """Hold ``vectors`` (n, dim) float32 under ``ids`` (n,) int64."""

    def remove(self, ids: np.ndarray) -> bool:
        """Remove ``ids``; False when the layer cannot (the index then keeps tombstones)."""

    def search(self, queries: np.ndarray, k: int) -> tuple[np.ndarray, np.ndarray]:
        """(scores (m, k) float32, ids (m, k) int64), best first, padded with -inf / -1."""

    def reconstruct(self, ids: np.ndarray) -> np.ndarray:
        """The held vectors of ``ids`` (n, dim) (only if ``capabilities.reconstructs``)."""

    def compact(self, keep: np.ndarray) -> int:
        """Give back the space removed ids' vectors still take (``keep``: the ids held); returns
        how many rows that was (0 where ``remove`` gave it back already)."""


@runtime_checkable
class CatalogueLayer(Protocol):
    """One ``ImageRecord`` per image id, and the index's settings (``info``)."""

    def info(self) -> dict:
        """The mapping last given to ``set_info`` (JSON values), merged over earlier ones."""

    def set_info(self, **values: Any) -> None:
        """Set these keys of ``info``, keeping the others."""

    def insert(self, records: Sequence[ImageRecord]) -> None:
        """Add records (each with its ``id`` set); an id is inserted at most once."""

    def delete(self, ids: Iterable[int]) -> None:
        """Remove the records of ``ids`` and their other paths (unknown ids are ignored); a
        record inserted again under a deleted id replaces it (its vectors are not touched)."""

    def records(self, ids: Iterable[int]) -> dict[int, ImageRecord]:
        """The records of those ``ids`` that are present."""

    def ids_by_hash(self, hashes: Iterable[str]) -> dict[str, int]:
        """sha256 -> id, for the hashes held."""

    def ids_by_path(self, paths: Iterable[str]) -> dict[str, int]:
        """path -> id, for the paths held (a record's own or another path of it)."""

    def insert_paths(self, records: Sequence[ImageRecord]) -> None:
        """Record other paths of indexed content: each record's ``path`` (with ``size``,
        ``mtime``) under its ``id``; a path recorded already is re-pointed."""

    def delete_paths(self, paths: Iterable[str]) -> None:
        """Forget these other paths (unknown ones are ignored)."""

    def other_paths(self, ids: Iterable[int]) -> dict[int, list[ImageRecord]]:
        """id -> its other paths' records (by path, ``sha256`` None), for the ids that have some."""

    def ids(self) -> list[int]:
        """Every id held, ascending."""

    def __len__(self) -> int: ...


@runtime_checkable
class RawLayer(Protocol):
    """The descriptors as they were added, by id: what a projection is learned from."""

    @property
    def dim(self) -> int: ...

    def add(self, vectors: np.ndarray, ids: np.ndarray) -> None: ...

    def remove(self, ids: np.ndarray) -> None: ...

    def read(self, ids: np.ndarray) -> np.ndarray:
        """The rows of ``ids`` (n, dim) float32, in the order asked; ``KeyError`` for an id not held."""

    def compact(self, keep: np.ndarray) -> int:
        """Drop the rows of ids not in ``keep`` (removed images' rows a layer kept); returns
        how many (0 where ``remove`` dropped them already)."""


@runtime_checkable
class Store(Protocol):
    """Where the versions of one index live (a directory, a Milvus database, ...)."""

    engine: str

    @property
    def location(self) -> str: ...

    def exists(self) -> bool:
        """Whether a version has been published here."""

    def version(self) -> int:
        """The generation of the published version (only if ``exists``)."""

    def open(self) -> Any:
        """The published version's ``Layers`` (``generation`` set), a snapshot."""

    def create(self, dim: int, factory: str | None) -> Any:
        """Empty ``Layers`` for a new index (``generation`` None), published by ``publish``."""

    def create_vectors(self, dim: int, factory: str | None) -> VectorLayer:
        """An empty vector layer, to be published in place of the current one (a re-projection)."""

    def lock(self, timeout: float = 60.0) -> ContextManager:
        """The write lock; ``cfcd.errors.Conflict`` (a ``RuntimeError``) naming the holder after
        ``timeout`` seconds."""

    def check_vacant(self) -> None:
        """Raise ``FileExistsError`` if the location holds something that is not an index."""

    def publish(self, layers: Any) -> int:
        """Make ``layers`` the next version (the lock is held); returns its generation."""

    def reclaim(self) -> list[str]:
        """Remove what no reader of the published version needs (the lock is held): earlier
        versions, what writers that died left; returns what was removed, in words."""

    def footprint(self) -> dict:
        """What the index takes: ``bytes`` on disk and ``rows`` stored, each None where the
        store cannot tell."""

    def close(self) -> None:
        """Release what is held open; the store is not used afterwards."""
