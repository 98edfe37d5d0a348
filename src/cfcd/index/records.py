"""What an index knows about one image, and how a file is described (engine-neutral)."""

from __future__ import annotations

import hashlib
import os
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Iterable, Sequence


@dataclass(frozen=True)
class ImageRecord:
    """What the index knows about one image. ``sha256`` is the hash of the file's bytes, so
    the same picture is indexed once whatever its path (None for descriptors whose image file
    is not on this machine: those are told apart by path)."""

    path: str
    size: int | None = None
    mtime: float | None = None
    sha256: str | None = None
    id: int | None = None

    def to_dict(self) -> dict:
        return asdict(self)

    def with_id(self, image_id: int) -> "ImageRecord":
        return ImageRecord(self.path, self.size, self.mtime, self.sha256, int(image_id))


def sha256_file(path: str | Path, chunk: int = 1 << 20) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as f:
        while block := f.read(chunk):
            h.update(block)
    return h.hexdigest()


def describe_file(path: str | Path) -> ImageRecord:
    """The record of an image file (absolute path, size, mtime, content hash); for a name
    that is not a file here (descriptors made elsewhere) only the name."""
    p = Path(path)
    if not p.is_file():
        return ImageRecord(path=str(path))
    try:
        st = p.stat()
        return ImageRecord(path=str(p.resolve()), size=st.st_size, mtime=st.st_mtime, sha256=sha256_file(p))
    except OSError:  # unreadable (permissions, I/O): decoding it will report the cause
        return ImageRecord(path=str(path))


def resolve_paths(paths: Iterable[str]) -> list[str]:
    """The form in which paths are stored: absolute for existing files, as given otherwise."""
    return [str(Path(p).resolve()) if os.path.exists(p) else str(p) for p in paths]


def new_positions(catalogue, recs: Sequence[ImageRecord]) -> tuple[list[int], dict[int, int], dict[int, int]]:
    """Which of ``recs`` to add to ``catalogue``: (positions of the new ones, position -> id
    already holding that content, position -> earlier position repeating it). Content is the
    sha256, or for names that are not files here, the path."""
    by_hash = catalogue.ids_by_hash(r.sha256 for r in recs)
    by_path = catalogue.ids_by_path(r.path for r in recs if not r.sha256)
    seen: dict[str, int] = {}
    keep, duplicates, repeated = [], {}, {}
    for pos, r in enumerate(recs):
        key = r.sha256 or f"path:{r.path}"
        existing = by_hash.get(r.sha256) if r.sha256 else by_path.get(r.path)
        if existing is not None:
            duplicates[pos] = existing
        elif key in seen:
            repeated[pos] = seen[key]
        else:
            seen[key] = pos
            keep.append(pos)
    return keep, duplicates, repeated
