"""What ``Index.add`` and ``Index.search`` return."""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np

from .records import ImageRecord


@dataclass
class AddReport:
    """What ``add`` did: the ids given to new images (in input order), the inputs skipped as
    already indexed (input position -> id holding that content), repeated within the call
    (input position -> first position) and inputs that could not be read (input position ->
    the file and the cause); ``paths``: inputs recorded as another path of content already
    indexed (input position -> id; a subset of ``duplicates`` and ``repeated``)."""

    added: list[int] = field(default_factory=list)
    duplicates: dict[int, int] = field(default_factory=dict)
    repeated: dict[int, int] = field(default_factory=dict)
    failed: dict[int, str] = field(default_factory=dict)
    paths: dict[int, int] = field(default_factory=dict)

    def update_from(self, other: "AddReport") -> None:
        """Say what ``other`` says, in place (the caller may hold this object)."""
        self.added[:] = other.added
        for mine, theirs in ((self.duplicates, other.duplicates), (self.repeated, other.repeated), (self.failed, other.failed),
                             (self.paths, other.paths)):
            mine.clear()
            mine.update(theirs)


@dataclass
class SearchResult:
    """``ids`` (m, k) int64, ``scores`` (m, k) float32, best first; -1 / -inf pad rows with
    fewer than k hits. ``records`` maps every returned id to its metadata, ``others`` the ids
    found at several paths to their other paths' records."""

    ids: np.ndarray
    scores: np.ndarray
    records: dict[int, ImageRecord]
    others: dict[int, list[ImageRecord]] = field(default_factory=dict)

    def paths(self, image_id: int) -> list[str]:
        """Every path of ``image_id``: its record's ``path`` first."""
        rec = self.records.get(int(image_id))
        return ([rec.path] if rec else []) + [o.path for o in self.others.get(int(image_id), [])]

    def hits(self, row: int = 0) -> list[dict]:
        """The hits of query ``row`` as dicts {rank, id, score, path, paths}: ``path`` the
        image's first path, ``paths`` all of them (byte copies at several paths)."""
        out = []
        for rank, (i, s) in enumerate(zip(self.ids[row], self.scores[row]), start=1):
            if i < 0:
                break
            rec = self.records.get(int(i))
            out.append({"rank": rank, "id": int(i), "score": float(s), "path": rec.path if rec else None,
                        "paths": self.paths(i)})
        return out
