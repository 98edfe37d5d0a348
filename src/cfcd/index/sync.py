"""Keeping an index in step with a folder: ``plan`` compares them, ``apply`` makes the plan one
versioned write (``cfcd index sync``).

A file is compared by path, size and mtime first; only a file that is new or whose size or mtime
differs is read, for its content hash. Then, for each file:

- ``unchanged``: its path is held with the same size and mtime, or with the same content;
- ``moved``: new path, content held by an image that lost a path in this folder (deleted or
  overwritten): the path is re-pointed, nothing is extracted;
- ``added``: new path; its content is extracted unless the index holds it already (a byte copy:
  recorded as another path of that image);
- ``changed``: held path, other content: the old content loses the path (and leaves the index
  with its last path), the new one is added as above;
- ``removed``: a held path under the folder that is no longer there;
- ``unreadable``: a file that could not be read now, with the reason; its path, if held, stays.

The plan only reads; ``apply`` writes it through ``Index.edit`` (one publish, so a sync killed at
any point leaves the previous version, and a rerun plans again from it).
"""

from __future__ import annotations

import os
from dataclasses import dataclass, field
from pathlib import Path

from ..data.images import list_images
from ..errors import InputError
from ..failpoints import failpoint
from .records import ImageRecord, sha256_file

# Ids per catalogue read when listing the paths an index holds.
_BLOCK = 10_000


@dataclass
class SyncPlan:
    """What a sync of ``folder`` changes: paths by kind (``moved`` as (old, new) pairs), the
    unreadable files with their reason, and what ``apply`` needs (``records`` of the files
    read, ``copies``: paths to point at content the index holds -> its id, ``detach``: held
    paths that leave their image -> its id, ``touched``: unchanged files with a new mtime, whose
    new stat is recorded so that the next sync does not read them again)."""

    folder: str
    added: list[str] = field(default_factory=list)
    removed: list[str] = field(default_factory=list)
    moved: list[tuple[str, str]] = field(default_factory=list)
    changed: list[str] = field(default_factory=list)
    unchanged: list[str] = field(default_factory=list)
    unreadable: dict[str, str] = field(default_factory=dict)
    records: dict[str, ImageRecord] = field(default_factory=dict)
    copies: dict[str, int] = field(default_factory=dict)
    detach: dict[str, int] = field(default_factory=dict)
    touched: list[ImageRecord] = field(default_factory=list)
    images: int | None = None  # after ``sync``: the index's size and version
    version: int | None = None

    def to_extract(self) -> list[str]:
        """Added or changed files whose content the index does not hold."""
        return sorted(p for p in self.added + self.changed if p not in self.copies)

    def counts(self) -> dict[str, int]:
        return {k: len(getattr(self, k)) for k in ("added", "removed", "moved", "changed", "unchanged", "unreadable")}

    def summary(self, dry_run: bool = False) -> str:
        counts = ", ".join(f"{k} {v}" for k, v in self.counts().items())
        return (f"{'would sync' if dry_run else 'synced'} {self.folder}: {counts}; "
                f"{len(self.to_extract())} {'to extract' if dry_run else 'extracted'}")

    def to_dict(self) -> dict:
        return {"folder": self.folder, "counts": self.counts(), "added": self.added, "removed": self.removed,
                "moved": [{"from": a, "to": b} for a, b in self.moved], "changed": self.changed,
                "unchanged": self.unchanged, "unreadable": self.unreadable, "extracted": self.to_extract(),
                "images": self.images, "version": self.version}


def held_paths(index, root: Path) -> dict[str, ImageRecord]:
    """Every path the index holds under ``root`` -> its record (the path's size and mtime, the
    image's id and content hash)."""
    prefix = str(root).rstrip(os.sep) + os.sep
    ids = index.ids()
    out = {}
    for start in range(0, len(ids), _BLOCK):
        records = index.records(ids[start:start + _BLOCK])
        others = index.layers.catalogue.other_paths(records)
        for i, rec in records.items():
            for r in [rec, *others.get(i, [])]:
                if r.path.startswith(prefix):
                    out[r.path] = ImageRecord(r.path, r.size, r.mtime, rec.sha256, i)
    return out


def _read(path: Path) -> ImageRecord:
    """The record of a file (size, mtime, content hash); ``OSError`` when it cannot be read."""
    st = path.stat()
    return ImageRecord(str(path), st.st_size, st.st_mtime, sha256_file(path))


def plan(index, folder: str | Path, progress: bool = False) -> SyncPlan:
    """What syncing ``index`` with ``folder`` (recursively, image files) would change."""
    from tqdm import tqdm

    root = Path(folder).resolve()
    if not root.is_dir():
        raise InputError(f"{folder}: not a folder; give the folder of photos to keep the index in step with")
    out = SyncPlan(str(root))
    held = held_paths(index, root)
    read: list[ImageRecord] = []
    for path in tqdm(list_images(root), unit="file", desc="compare", disable=not progress):
        name = str(path)
        try:
            st = path.stat()
            known = held.get(name)
            if known is not None and (known.size, known.mtime) == (st.st_size, st.st_mtime):
                out.unchanged.append(name)
                continue
            read.append(_read(path))
        except OSError as err:
            out.unreadable[name] = f"{name}: {err.strerror or err}"
    by_hash = index.layers.catalogue.ids_by_hash(r.sha256 for r in read)
    # Paths each image lost in this folder (gone, or overwritten by other content): where a
    # new path of that content was moved from.
    on_disk = {r.path for r in read} | set(out.unchanged) | set(out.unreadable)
    lost: dict[int, list[str]] = {}
    for name, known in held.items():
        if name not in on_disk:
            lost.setdefault(known.id, []).append(name)
    for r in read:
        known = held.get(r.path)
        if known is not None and known.sha256 == r.sha256:
            out.unchanged.append(r.path)  # touched, not changed: its new size and mtime are recorded
            out.touched.append(ImageRecord(r.path, r.size, r.mtime, r.sha256, known.id))
            continue
        out.records[r.path] = r
        if by_hash.get(r.sha256) is not None:
            out.copies[r.path] = by_hash[r.sha256]
        if known is not None:
            out.changed.append(r.path)
            lost.setdefault(known.id, []).append(r.path)
    for path, r in out.records.items():
        image_id = out.copies.get(path)
        if path in held:
            continue
        if image_id is not None and lost.get(image_id):
            out.moved.append((lost[image_id].pop(0), path))
        else:
            out.added.append(path)
    moved_from = {old for old, _ in out.moved}
    out.removed = sorted(name for name in held if name not in on_disk and name not in moved_from)
    out.detach = {name: held[name].id for name in [*out.removed, *moved_from, *out.changed] if name not in out.copies}
    out.unchanged.sort()
    return out


def apply(index, todo: SyncPlan, model=None, settings=None, runtime=None):
    """Make ``todo`` (from ``plan``) changes of ``index`` (opened with ``Index.edit``: published
    at once when the block ends): paths re-pointed first (moves, byte copies, paths taken from
    changed content), then the new content extracted and added (``searcher.add_images``).
    Returns the ``AddReport`` of the extraction (None when nothing was extracted)."""
    from .searcher import add_images, load_index_model

    index.repoint([todo.records[p].with_id(i) for p, i in todo.copies.items()], todo.detach)
    index.restat(todo.touched)
    extract = todo.to_extract()
    if not extract:
        return None
    return add_images(index, model if model is not None else load_index_model(index), extract, settings, runtime)


def sync(location, folder: str | Path, model=None, runtime=None, dry_run: bool = False,
         progress: bool = False) -> SyncPlan:
    """Bring the index at ``location`` in step with ``folder`` in one versioned write (none for
    a ``dry_run``, or when nothing changed); returns the plan, its ``unreadable`` completed with
    the files that turned out not to be images (left out of ``added`` and ``changed``)."""
    from .index import Index

    with Index.edit(location) as index:
        todo = plan(index, folder, progress)
        failpoint("sync.planned")  # crash tests stop a sync here: compared, nothing extracted or written
        extract = todo.to_extract()
        report = None if dry_run else apply(index, todo, model, runtime=runtime)
        if dry_run:
            index.changed = False  # nothing is published
    failed = {extract[pos]: reason for pos, reason in report.failed.items()} if report else {}
    todo.unreadable.update(failed)
    todo.added = [p for p in todo.added if p not in failed]
    todo.changed = [p for p in todo.changed if p not in failed]
    todo.images, todo.version = len(index), index.generation
    return todo
