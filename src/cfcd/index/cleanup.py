"""Resolving duplicate groups safely: the files not kept move into a trash folder (never deleted)
and leave the index; a restore puts them back, in the folder and in the index.

A resolve is a journal, each step idempotent, so a process killed at any point (kill -9) leaves
every file either in place and indexed, or in the trash and listed in its manifest, and running
it again finishes the job:

1. plan: every file to move, with what a restore needs (original path, size, mtime, content
   hash, its descriptor: no re-extraction), written to ``TRASH/manifest.json`` (atomic, fsynced)
   before anything moves; its entries are ``planned``;
2. move each planned file to ``TRASH/<its path relative to the groups' common folder>`` (a
   rename; across file systems a synced copy renamed into place, then the original unlinked);
   a file that changed since it was indexed is skipped, with the reason;
3. remove the moved files' paths from the index in one versioned write (an image whose every
   path moved leaves it; one that keeps a path stays, with its descriptor);
4. mark them ``trashed`` in the manifest.

A rerun that finds ``planned`` entries finishes them instead of planning again: a file already in
the trash is not moved, an image already removed is not removed twice. A restore runs the same
steps backwards (move back, put back into the index under the same ids, or as paths again of
an image still indexed, drop the entries).

``to_move`` is the one place that says which file moves and which record leaves the index.
"""

from __future__ import annotations

import base64
import json
import os
import shutil
from pathlib import Path
from typing import Callable, Sequence

import numpy as np

from ..atomic import atomic_write, fsync_path
from ..errors import ConfigError, InputError, NotFound
from .records import ImageRecord, sha256_file
from ..failpoints import failpoint

MANIFEST = "manifest.json"
FORMAT = "cfcd-trash"
# Tiers resolved unless asked otherwise: "similar" photos are other shots, a person's call.
DEFAULT_TIERS = ("exact", "near")


def to_move(group: dict) -> list[tuple[int, str]]:
    """(id, path) of every file of ``group`` (a ``keeper.suggest`` group) but the one kept:
    every path of the other members, and the kept image's other paths (byte copies). The index
    forgets each moved path; an image leaves it with its last path (``Index.remove(paths=)``),
    so the kept image stays with its kept path, and an image one of whose files is skipped stays
    with that file."""
    kept = (group["keep"], group.get("keep_path"))
    return [(m["id"], p) for m in group["members"] for p in m.get("paths", [m["path"]])
            if m["id"] != kept[0] or (kept[1] is not None and p != kept[1])]


# ---- the manifest -------------------------------------------------------------------------


def _where(location) -> str:
    """``location`` as the manifest records it (a directory or file absolute; a URI as given)."""
    return str(location) if "://" in str(location) else str(Path(location).resolve())


def _check_trash(trash: Path, location) -> None:
    if trash.exists() and not trash.is_dir():
        raise ConfigError(f"--trash {trash}: a file, not a folder; give a folder (it is created if missing)")
    held = read_manifest(trash).get("index")
    if held and held != _where(location):
        raise ConfigError(f"{trash / MANIFEST}: lists photos of the index {held}, not {_where(location)}; give that "
                          "index, or another --trash folder")


def read_manifest(trash: Path) -> dict:
    """``trash``'s manifest, or an empty one when there is none yet."""
    path = Path(trash) / MANIFEST
    if not path.is_file():
        return {"format": FORMAT, "version": 1, "entries": []}
    try:
        manifest = json.loads(path.read_text())
    except (OSError, ValueError) as err:
        raise InputError(f"{path}: not a readable trash manifest ({err}); move it aside to start a new trash") from None
    if manifest.get("format") != FORMAT:
        raise InputError(f"{path}: not a cfcd trash manifest; give another --trash folder")
    return manifest


def write_manifest(trash: Path, manifest: dict) -> None:
    with atomic_write(Path(trash) / MANIFEST, "w") as f:
        json.dump(manifest, f, indent=1)


def _encode(vector: np.ndarray) -> str:
    return base64.b64encode(np.asarray(vector, dtype="<f4").tobytes()).decode("ascii")


def _decode(text: str) -> np.ndarray:
    return np.frombuffer(base64.b64decode(text), dtype="<f4")


# ---- files --------------------------------------------------------------------------------


def _same_file(path: Path, entry: dict) -> bool:
    """Whether ``path`` holds the content ``entry`` recorded (size, then hash)."""
    try:
        return path.stat().st_size == entry["size"] and sha256_file(path) == entry["sha256"]
    except OSError:
        return False


def move_file(src: Path, dst: Path) -> None:
    """Move ``src`` to ``dst`` (absent): a rename, or across file systems a copy synced and
    renamed into place before ``src`` is unlinked, so a kill leaves ``dst`` whole or absent."""
    dst.parent.mkdir(parents=True, exist_ok=True)
    try:
        os.rename(src, dst)
    except OSError as err:
        if err.errno != 18:  # EXDEV: another file system
            raise
        tmp = dst.with_name(f".{dst.name}.moving")
        shutil.copy2(src, tmp)
        with open(tmp, "rb") as f:
            os.fsync(f.fileno())
        os.replace(tmp, dst)
        fsync_path(dst.parent)
        src.unlink()
    fsync_path(dst.parent)
    fsync_path(src.parent)


def _prune(trash: Path) -> None:
    """Remove the empty folders left in ``trash`` by a restore."""
    for folder in sorted((p for p in trash.rglob("*") if p.is_dir()), key=lambda p: len(p.parts), reverse=True):
        if not any(folder.iterdir()):
            folder.rmdir()


# ---- resolve and restore -----------------------------------------------------------------


def edit_writer(location) -> Callable:
    """``write(change)``: ``change(index)`` through the versioned write of the index at ``location``."""
    from .index import Index

    def write(change):
        with Index.edit(location) as index:
            return change(index)

    return write


def plan(index, groups: Sequence[dict], root: str | None = None) -> list[dict]:
    """The manifest entries that move the files ``to_move`` of ``groups`` (``keeper.suggest``
    groups of ``index``) into the trash, each at its path relative to ``root`` (default: the
    folder holding every photo of the groups); files whose content the index does not know (no
    hash: not a file of this machine when indexed) are left out."""
    moves = [(g, image_id, path) for g in groups for image_id, path in to_move(g)]
    if not moves:
        return []
    if not root:
        root = os.path.commonpath([os.path.dirname(p) for g in groups for m in g["members"]
                                   for p in m.get("paths", [m["path"]])])
    ids = [i for _, i, _ in moves]
    records = index.records(ids)
    files = {r.path: r for r in records.values()}  # each file's own size and mtime
    files.update({o.path: o for others in index.layers.catalogue.other_paths(ids).values() for o in others})
    vectors = index.descriptors(ids)
    entries = []
    for (group, image_id, path), vector in zip(moves, vectors):
        record, file = records.get(image_id), files.get(path)
        if record is None or not record.sha256 or file is None or file.id != image_id:
            continue
        # "primary": the image's record path, put first again when the image is put back
        entries.append({"id": image_id, "path": path, "primary": path == record.path,
                        "trash": os.path.relpath(path, root), "size": file.size, "mtime": file.mtime,
                        "sha256": record.sha256, "tier": group["tier"], "keep": group["keep"],
                        "keep_path": group.get("keep_path"), "why": group["why"], "descriptor": _encode(vector),
                        "status": "planned"})
    return entries


def carry_out(trash: Path, manifest: dict, write: Callable) -> dict:
    """Steps 2 to 4 of the module docstring for the ``planned`` entries of ``manifest``;
    returns {moved: [entry], skipped: [entry with its reason]}."""
    trash = Path(trash)
    pending = [e for e in manifest["entries"] if e["status"] == "planned"]
    for n, entry in enumerate(pending):
        src, dst = Path(entry["path"]), trash / entry["trash"]
        if dst.exists() and not src.exists():
            continue  # moved by an earlier run
        if not src.exists():
            _skip(entry, f"{src} is missing (neither in place nor in the trash)")
        elif not _same_file(src, entry):
            _skip(entry, f"{src} changed since it was indexed: left in place (index it again to resolve it)")
        elif dst.exists():
            if _same_file(dst, entry):  # a copy across file systems finished before the original was unlinked
                src.unlink()
            else:
                _skip(entry, f"{dst} already holds another file: left {src} in place")
        else:
            move_file(src, dst)
            if n == 0:
                failpoint("cleanup.moving")
    failpoint("cleanup.moved")
    moved = [e for e in pending if e["status"] == "planned"]
    if moved:
        write(lambda index: index.remove(paths=[e["path"] for e in moved]))
    failpoint("cleanup.removed")
    for entry in moved:
        entry["status"] = "trashed"
    write_manifest(trash, manifest)
    return {"moved": moved, "skipped": [e for e in pending if e["status"] == "skipped"]}


def _skip(entry: dict, why: str) -> None:
    entry["status"], entry["skipped"] = "skipped", why


def resolve(location, trash: str | Path, groups_of: Callable, dry_run: bool = False,
            write: Callable | None = None, root: str | None = None) -> dict:
    """Move the files not kept of the groups ``groups_of(index)`` gives (``keeper.suggest``
    groups) into ``trash`` (at their paths relative to ``root``: see ``plan``) and out of the
    index at ``location``, or with ``dry_run`` only say which. A trash holding a resolve that
    did not finish finishes that one instead.
    Returns {trash, resumed, planned: [entry], moved, skipped}; entries without descriptors."""
    from .index import Index

    trash = Path(trash)
    _check_trash(trash, location)
    manifest = read_manifest(trash)
    resumed = any(e["status"] == "planned" for e in manifest["entries"])
    if resumed:
        planned = [e for e in manifest["entries"] if e["status"] == "planned"]
    else:
        index = Index.load(location)
        try:
            planned = plan(index, groups_of(index), root)
        finally:
            index.close()
        if not dry_run and planned:
            again = {p["path"] for p in planned}  # skipped by an earlier resolve, planned anew
            manifest["entries"] = [e for e in manifest["entries"] if e["path"] not in again] + planned
            manifest["index"] = _where(location)
            trash.mkdir(parents=True, exist_ok=True)
            write_manifest(trash, manifest)
            failpoint("cleanup.planned")
    report = {"trash": str(trash), "resumed": resumed, "planned": planned, "moved": [], "skipped": []}
    if not dry_run and planned:
        report.update(carry_out(trash, manifest, write or edit_writer(location)))
    return _without_descriptors(report)


def restore(location, trash: str | Path, write: Callable | None = None) -> dict:
    """Move every file listed in ``trash``'s manifest back to its path and put it back into
    the index at ``location`` under its id, with its stored descriptor. A file that changed in
    the trash, or whose path now holds another file, is skipped and stays listed.
    Returns {trash, restored: [entry], skipped: [entry with its reason]}."""
    trash = Path(trash)
    if not (trash / MANIFEST).is_file():
        raise NotFound(f"{trash / MANIFEST}: no trash manifest there; give the --trash folder of a resolve")
    _check_trash(trash, location)
    manifest = read_manifest(trash)
    back, skipped = [], []
    for entry in manifest["entries"]:
        src, dst = Path(entry["path"]), trash / entry["trash"]
        entry.pop("skipped", None)
        if dst.exists():
            if not _same_file(dst, entry):
                why = f"{dst} changed in the trash since it was moved there: left in the trash"
            elif src.exists() and not _same_file(src, entry):
                why = f"{src} now holds another file: {dst} left in the trash"
            else:
                why = None
                if src.exists():  # the original is the same content: the trash copy is spare
                    dst.unlink()
                else:
                    move_file(dst, src)
            if why:
                skipped.append({**entry, "skipped": why})
                continue
        elif not _same_file(src, entry):
            skipped.append({**entry, "skipped": f"{dst} is missing from the trash and {src} is not the file moved"})
            continue
        back.append(entry)
    failpoint("cleanup.restored")
    if back:
        (write or edit_writer(location))(lambda index: put_back(index, back))
    manifest["entries"] = [e for e in manifest["entries"] if e not in back]
    if manifest["entries"]:
        write_manifest(trash, manifest)
    else:
        (trash / MANIFEST).unlink()
    _prune(trash)
    return _without_descriptors({"trash": str(trash), "restored": back, "skipped": skipped})


def put_back(index, entries: Sequence[dict]) -> None:
    """Re-index the files of trash ``entries``: an image no longer indexed is put back under
    its id with its stored descriptor (its primary path first), and every other file becomes
    again a path of the image holding its content (``Index.add_paths``), its own path again
    when it was."""
    held = index.records({e["id"] for e in entries})
    whole: dict[int, dict] = {}
    for e in sorted(entries, key=lambda e: not e.get("primary", True)):
        if e["id"] not in held:
            whole.setdefault(e["id"], e)
    firsts = list(whole.values())
    put = set(index.put_back(np.stack([_decode(e["descriptor"]) for e in firsts]),
                             [ImageRecord(e["path"], e["size"], e["mtime"], e["sha256"], e["id"]) for e in firsts])
              if firsts else [])
    index.add_paths([ImageRecord(e["path"], e["size"], e["mtime"], e["sha256"]) for e in entries
                     if not (e["id"] in put and whole[e["id"]] is e)])
    # a kept image whose own path was moved (another of its paths kept) gets it back first
    index.put_first([e["path"] for e in entries if e.get("primary") and e["id"] in held])


def _without_descriptors(report: dict) -> dict:
    return {k: [{f: v for f, v in e.items() if f != "descriptor"} for e in v] if isinstance(v, list) else v
            for k, v in report.items()}
