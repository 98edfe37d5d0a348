"""Folder-per-identity photo sets (UKBench / Holidays style), scored leave-one-out by
``cfcd.evaluate.benchmarks.folder``.

    <root>/images/<identity>/<file>.jpg      (or <root>/<identity>/<file>.jpg)
    <root>/manifest.csv                      optional: path, identity, source (paths relative to root)
    <root>/identities.csv                    optional: identity, hard (1: the identity holds a hard change)

A manifest row with an empty identity is a distractor: an unrelated photo, in the database
only (instances-hard's ``images/_distractors``).
"""

from __future__ import annotations

import csv
from dataclasses import dataclass
from pathlib import Path
from typing import Mapping

from ..errors import InputError, NotFound
from .images import list_images

MANIFEST = "manifest.csv"
# Source of every image when the set has no manifest.
NO_SOURCE = "all"
# Identity of a distractor.
DISTRACTOR = ""
# Sources of instances-dev that are one kind of photo (held out together when choosing a
# default: cfcd.selection); any other source is its own group.
SOURCE_GROUPS = {
    "phototourism-sacre-coeur": "phototourism",
    "phototourism-samples": "phototourism",
    "ukbench-samples": "ukbench/holidays",
    "holidays-samples": "ukbench/holidays",
    "opensfm-lund": "opensfm",
    "opensfm-berlin": "opensfm",
}
IDENTITIES = "identities.csv"


@dataclass(frozen=True)
class InstanceSet:
    """Images with their identity and source, in the set's order (the manifest's, else sorted);
    ``hard``: the identities that ``identities.csv`` marks hard."""

    root: Path
    paths: list[Path]
    identities: list[str]
    sources: list[str]
    hard: frozenset = frozenset()

    def __len__(self) -> int:
        return len(self.paths)


def group_of(source: str, groups: Mapping[str, str] = SOURCE_GROUPS) -> str:
    return groups.get(source, source)


def _find_manifest(folder: Path) -> Path | None:
    """``folder/manifest.csv``, or the one beside ``folder`` when ``folder`` is the ``images`` folder."""
    for candidate in (folder / MANIFEST, folder.parent / MANIFEST if folder.name == "images" else None):
        if candidate is not None and candidate.is_file():
            return candidate
    return None


def _read_manifest(path: Path) -> InstanceSet:
    base = path.parent
    with open(path, newline="") as f:
        reader = csv.DictReader(f)
        missing = {"path", "identity"} - set(reader.fieldnames or ())
        if missing:
            raise InputError(f"{path}: lacks the column(s) {', '.join(sorted(missing))}; expected path, identity[, source]")
        rows = list(reader)
    if not rows:
        raise InputError(f"{path}: no images listed")
    paths = [base / r["path"] for r in rows]
    absent = [p for p in paths if not p.is_file()]
    if absent:
        raise NotFound(f"{path}: {len(absent)} listed images are missing, e.g. {absent[0]}")
    sources = [r.get("source") or NO_SOURCE for r in rows]
    return InstanceSet(base, paths, [r["identity"] for r in rows], sources, _hard_identities(base / IDENTITIES))


def _hard_identities(path: Path) -> frozenset:
    if not path.is_file():
        return frozenset()
    with open(path, newline="") as f:
        reader = csv.DictReader(f)
        if "identity" not in (reader.fieldnames or ()) or "hard" not in reader.fieldnames:
            raise InputError(f"{path}: expected the columns identity, hard")
        return frozenset(r["identity"] for r in reader if r["hard"].strip() == "1")


def load_instances(folder: str | Path) -> InstanceSet:
    """Read a folder-per-identity set; ``folder`` is its root or its ``images`` folder.

    With a ``manifest.csv`` (in ``folder``, or beside it when ``folder`` is ``images``) its rows
    give the images, identities and sources; otherwise every image under ``folder`` is one of
    the identity named by its parent folder, all of source ``"all"``.
    """
    folder = Path(folder)
    if not folder.is_dir():
        raise NotFound(f"{folder}: not a folder; expected <identity>/<image> sub-folders")
    manifest = _find_manifest(folder)
    if manifest is not None:
        return _read_manifest(manifest)
    images_dir = folder / "images" if (folder / "images").is_dir() else folder
    paths = [p for p in list_images(images_dir) if p.parent != images_dir]
    if not paths:
        raise InputError(f"{images_dir}: no images in identity sub-folders (<identity>/<image>)")
    return InstanceSet(folder, paths, [p.parent.name for p in paths], [NO_SOURCE] * len(paths))
