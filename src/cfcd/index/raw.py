"""The raw descriptors of a FAISS-engine index, kept so that a projection can be learned
again without the images (``cfcd.index.projection``).

Append-only segments in the version directory: ``raw-<first id>[-<n>].npy`` (k, D) float32 and
``raw-<first id>[-<n>].ids.npy`` (k,) int64. A version's catalogue lists its segments (info key
``raw``); a new version hard-links the previous version's segments (immutable, so sharing them
is safe and costs nothing) and writes only the rows added since. Rows of removed images stay
in their segment and are never read: callers read by the ids the catalogue still holds.
"""

from __future__ import annotations

import os
import shutil
from pathlib import Path
from typing import Sequence

import numpy as np


def _ids_file(name: str) -> str:
    return name[:-len(".npy")] + ".ids.npy"


class RawSegments:
    """Raw descriptors by id: the published segments ``files`` in ``directory`` (None: none
    yet) plus this writer's pending rows."""

    engine = "faiss"

    def __init__(self, dim: int, directory: Path | None = None, files: Sequence[str] = ()):
        self.dim = int(dim)
        self.directory = Path(directory) if directory is not None else None
        self.files = list(files)
        self._pending_ids: list[np.ndarray] = []
        self._pending: list[np.ndarray] = []
        # (segments, (sorted ids, segment of each, row of each)), built on first read
        self._cache: tuple[list, tuple[np.ndarray, np.ndarray, np.ndarray]] | None = None

    def add(self, vectors: np.ndarray, ids: np.ndarray) -> None:
        self._pending_ids.append(np.asarray(ids, dtype=np.int64))
        self._pending.append(np.ascontiguousarray(vectors, dtype=np.float32))
        self._cache = None

    def remove(self, ids: np.ndarray) -> None:
        pass  # rows of removed ids are never asked for again (see the module docstring)

    def _locate(self) -> tuple[list, tuple[np.ndarray, np.ndarray, np.ndarray]]:
        if self._cache is None:
            segs = [(np.load(self.directory / _ids_file(f)), np.load(self.directory / f, mmap_mode="r")) for f in self.files]
            if self._pending:
                segs.append((np.concatenate(self._pending_ids), np.concatenate(self._pending)))
            all_ids = np.concatenate([s[0] for s in segs] or [np.zeros(0, np.int64)])
            seg = np.concatenate([np.full(len(s[0]), n) for n, s in enumerate(segs)] or [np.zeros(0, int)])
            row = np.concatenate([np.arange(len(s[0])) for s in segs] or [np.zeros(0, int)])
            order = np.argsort(all_ids, kind="stable")
            self._cache = segs, (all_ids[order], seg[order], row[order])
        return self._cache

    def read(self, ids: np.ndarray) -> np.ndarray:
        """The raw descriptors (n, D) of ``ids``; ``KeyError`` for an id never added."""
        segs, (sorted_ids, seg, row) = self._locate()
        ids = np.asarray(ids, dtype=np.int64)
        pos = np.searchsorted(sorted_ids, ids)
        found = (pos < len(sorted_ids)) & (sorted_ids[np.minimum(pos, len(sorted_ids) - 1)] == ids)
        if not found.all():
            raise KeyError(f"no raw descriptor stored for ids {ids[~found][:5].tolist()}")
        out = np.empty((len(ids), self.dim), np.float32)
        for n, (_, vectors) in enumerate(segs):
            mine = seg[pos] == n
            out[mine] = vectors[row[pos][mine]]
        return out

    def write(self, staging: Path) -> list[str]:
        """Put this layer's segments in ``staging`` (links to the published ones, a new file
        for the pending rows); returns their names, for the catalogue."""
        files = []
        for f in self.files:
            for name in (f, _ids_file(f)):
                try:
                    os.link(self.directory / name, staging / name)
                except OSError:  # a file system without hard links
                    shutil.copyfile(self.directory / name, staging / name)
            files.append(f)
        if self._pending:
            ids = np.concatenate(self._pending_ids)
            name = f"raw-{int(ids.min()):012d}.npy"
            # Ids put back after a removal (``Index.put_back``) may start a segment at an id an
            # older one starts at: a new name, never a write through the older one's hard link.
            copy = 1
            while name in files:
                name, copy = f"raw-{int(ids.min()):012d}-{copy}.npy", copy + 1
            np.save(staging / name, np.concatenate(self._pending))
            np.save(staging / _ids_file(name), ids)
            files.append(name)
        return files

    def published(self, directory: Path, files: list[str]) -> None:
        self.directory, self.files = Path(directory), list(files)
        self._pending_ids, self._pending, self._cache = [], [], None
