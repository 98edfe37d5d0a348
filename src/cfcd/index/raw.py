"""The raw descriptors of a FAISS-engine index, kept so that a projection can be learned
again without the images (``cfcd.index.projection``).

Append-only segments in the version directory: ``raw-<first id>[-<n>].npy`` (k, D) float32 and
``raw-<first id>[-<n>].ids.npy`` (k,) int64. A version's catalogue lists its segments (info key
``raw``); a new version hard-links the previous version's segments (immutable, so sharing them
is safe and costs nothing) and writes only the rows added since. Rows of removed images stay
in their segment and are never read (callers read by the ids the catalogue still holds) until
``compact`` rewrites the segments that hold some (``cfcd index compact``).
"""

from __future__ import annotations

import os
import shutil
from pathlib import Path
from typing import Sequence

import numpy as np


# Rows copied at a time when ``compact`` rewrites a segment (32 MB of 1024-d float32).
_COPY_BLOCK = 8192


def _ids_file(name: str) -> str:
    return name[:-len(".npy")] + ".ids.npy"


def _new_name(ids: np.ndarray, taken: set[str]) -> str:
    """A new segment's name, by its first id, added to ``taken``: ids put back after a removal
    (``Index.put_back``) may start a segment at an id an older one starts at, so a suffix keeps
    it from ever writing through the older one's hard link."""
    name, copy = f"raw-{int(ids.min()):012d}.npy", 1
    while name in taken:
        name, copy = f"raw-{int(ids.min()):012d}-{copy}.npy", copy + 1
    taken.add(name)
    return name


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
        # published segment -> the rows of it that ``compact`` keeps (the next ``write`` copies them)
        self._kept_rows: dict[str, np.ndarray] = {}
        # ([(ids, vectors, rows of vectors or None: all)], (sorted ids, segment of each, position of each)),
        # built on first read
        self._cache: tuple[list, tuple[np.ndarray, np.ndarray, np.ndarray]] | None = None

    def add(self, vectors: np.ndarray, ids: np.ndarray) -> None:
        self._pending_ids.append(np.asarray(ids, dtype=np.int64))
        self._pending.append(np.ascontiguousarray(vectors, dtype=np.float32))
        self._cache = None

    def remove(self, ids: np.ndarray) -> None:
        pass  # rows of removed ids are never asked for again (see the module docstring)

    def compact(self, keep: np.ndarray) -> int:
        """Drop the rows of ids not in ``keep``: the next ``write`` copies the rows kept of a
        segment that holds others into a new one, block by block (the other segments stay
        linked); returns the rows dropped."""
        segs, (sorted_ids, seg, at) = self._locate()
        # The row ``read`` returns of each id kept: an id put back after a removal
        # (``Index.put_back``) also has its removed row in an older segment.
        first = np.ones(len(sorted_ids), bool)
        first[1:] = sorted_ids[1:] != sorted_ids[:-1]
        wanted = first & np.isin(sorted_ids, keep)
        dropped = 0
        for n, (ids, _, rows) in enumerate(segs):
            alive = np.zeros(len(ids), bool)
            alive[at[wanted & (seg == n)]] = True
            if alive.all():
                continue
            dropped += int((~alive).sum())
            if n < len(self.files):
                self._kept_rows[self.files[n]] = (np.arange(len(ids)) if rows is None else rows)[alive]
            else:  # this writer's own rows, in memory
                self._pending_ids, self._pending = [ids[alive]], [np.asarray(segs[n][1])[alive]]
        self.files = [f for f in self.files if len(self._kept_rows.get(f, [None]))]
        self._cache = None
        return dropped

    def _locate(self) -> tuple[list, tuple[np.ndarray, np.ndarray, np.ndarray]]:
        if self._cache is None:
            segs = []
            for f in self.files:
                ids, rows = np.load(self.directory / _ids_file(f)), self._kept_rows.get(f)
                segs.append((ids if rows is None else ids[rows], np.load(self.directory / f, mmap_mode="r"), rows))
            if self._pending:
                segs.append((np.concatenate(self._pending_ids), np.concatenate(self._pending), None))
            all_ids = np.concatenate([s[0] for s in segs] or [np.zeros(0, np.int64)])
            seg = np.concatenate([np.full(len(s[0]), n) for n, s in enumerate(segs)] or [np.zeros(0, int)])
            pos = np.concatenate([np.arange(len(s[0])) for s in segs] or [np.zeros(0, int)])
            order = np.argsort(all_ids, kind="stable")
            self._cache = segs, (all_ids[order], seg[order], pos[order])
        return self._cache

    def read(self, ids: np.ndarray) -> np.ndarray:
        """The raw descriptors (n, D) of ``ids``; ``KeyError`` for an id never added."""
        segs, (sorted_ids, seg, at) = self._locate()
        ids = np.asarray(ids, dtype=np.int64)
        pos = np.searchsorted(sorted_ids, ids)
        found = (pos < len(sorted_ids)) & (sorted_ids[np.minimum(pos, len(sorted_ids) - 1)] == ids)
        if not found.all():
            raise KeyError(f"no raw descriptor stored for ids {ids[~found][:5].tolist()}")
        out = np.empty((len(ids), self.dim), np.float32)
        for n, (_, vectors, rows) in enumerate(segs):
            mine = seg[pos] == n
            where = at[pos][mine]
            out[mine] = vectors[where if rows is None else rows[where]]
        return out

    def write(self, staging: Path) -> list[str]:
        """Put this layer's segments in ``staging`` (links to the published ones, copies of the
        rows ``compact`` kept, a new file for the pending rows); returns their names, for the
        catalogue."""
        segs, _ = self._locate()
        files, taken = [], set(self.files)
        for f, (ids, vectors, rows) in zip(self.files, segs):
            if rows is not None:
                files.append(self._copy_rows(staging, _new_name(ids, taken), vectors, rows, ids))
                continue
            for name in (f, _ids_file(f)):
                try:
                    os.link(self.directory / name, staging / name)
                except OSError:  # a file system without hard links
                    shutil.copyfile(self.directory / name, staging / name)
            files.append(f)
        if self._pending:
            ids = np.concatenate(self._pending_ids)
            name = _new_name(ids, taken)
            np.save(staging / name, np.concatenate(self._pending))
            np.save(staging / _ids_file(name), ids)
            files.append(name)
        return files

    @staticmethod
    def _copy_rows(staging: Path, name: str, vectors: np.ndarray, rows: np.ndarray, ids: np.ndarray) -> str:
        """A new segment ``name`` of ``vectors[rows]`` (ids ``ids``), copied in blocks: a
        segment can be larger than memory."""
        out = np.lib.format.open_memmap(staging / name, mode="w+", dtype=np.float32, shape=(len(rows), vectors.shape[1]))
        for start in range(0, len(rows), _COPY_BLOCK):
            out[start:start + _COPY_BLOCK] = vectors[rows[start:start + _COPY_BLOCK]]
        out.flush()
        del out
        np.save(staging / _ids_file(name), ids)
        return name

    def published(self, directory: Path, files: list[str]) -> None:
        self.directory, self.files = Path(directory), list(files)
        self._pending_ids, self._pending, self._kept_rows, self._cache = [], [], {}, None
