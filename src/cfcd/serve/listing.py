"""The collection as the page browses it: ids in a stable order (ascending: new images come
last), paths relative to the folder that holds them all, and the image count per folder.
Built once per published version (``Listing.of``), from the index's public records."""

from __future__ import annotations

import os
from collections import Counter
from dataclasses import dataclass
from pathlib import PurePath

import numpy as np

# Records read per catalogue query while a listing is built.
CHUNK = 10_000


@dataclass(frozen=True)
class Listing:
    generation: int | None
    ids: np.ndarray  # ascending
    paths: list[str]  # relative to ``root``, "/"-separated
    root: str

    @classmethod
    def of(cls, index) -> "Listing":
        ids = np.asarray(index.ids(), dtype=np.int64)
        full = []
        for start in range(0, len(ids), CHUNK):
            recs = index.records(ids[start:start + CHUNK])
            full += [recs[i].path for i in ids[start:start + CHUNK].tolist()]
        parents = {os.path.dirname(p) for p in full}
        try:
            root = os.path.commonpath(parents) if parents else ""
        except ValueError:  # absolute and relative names mixed (descriptors made elsewhere)
            root = ""
        rel = [PurePath(os.path.relpath(p, root) if root else p).as_posix() for p in full]
        return cls(index.generation, ids, rel, root)

    def folders(self) -> dict[str, int]:
        """Folder ("" for the root) -> images directly in it, by name."""
        return dict(sorted(Counter(p.rpartition("/")[0] for p in self.paths).items()))

    def page(self, offset: int, limit: int, prefix: str = "") -> tuple[int, list[tuple[int, str]]]:
        """(images under ``prefix``, the (id, relative path) of ``limit`` of them from ``offset``)."""
        if prefix:
            rows = [n for n, p in enumerate(self.paths) if p.startswith(prefix)]
            return len(rows), [(int(self.ids[n]), self.paths[n]) for n in rows[offset:offset + limit]]
        end = min(len(self.ids), offset + limit)
        return len(self.ids), [(int(self.ids[n]), self.paths[n]) for n in range(offset, end)]
