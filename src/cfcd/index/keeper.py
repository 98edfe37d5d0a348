"""Which photo of a duplicate group to keep, by rules a person can check.

The default rules, in order; the first that tells the best photo from the runner-up decides,
and is the reason given:

1. ``pixels``: the larger upright pixel count;
2. ``format``: the better format: lossless or camera formats (HEIF/HEIC, PNG, TIFF, BMP) over
   lossy re-encodings (JPEG, WebP), those over GIF and unreadable files;
3. ``metadata``: more EXIF tags (camera, date, GPS; an orientation tag alone does not count);
4. ``older``: the older file (modification time);
5. ``folder:NAME``: a photo inside a folder NAME (any folder of its path of that name, or
   that path), only when asked for.

``--prefer RULE`` (repeatable) moves rules to the front in the order given, for example
``--prefer folder:Originals`` keeps the copy in Originals whatever its size. When every rule ties,
the lowest id is kept.
"""

from __future__ import annotations

from pathlib import PurePath
from typing import Callable, Sequence

from ..errors import ConfigError
from .photo_facts import PhotoFacts

DEFAULT_RULES = ("pixels", "format", "metadata", "older")
FORMAT_RANK = {"HEIF": 0, "PNG": 0, "TIFF": 0, "BMP": 0, "JPEG": 1, "MPO": 1, "WEBP": 1, "GIF": 2}
WORST_FORMAT = 3


def _in_folder(path: str, folder: str) -> bool:
    p, f = PurePath(path), PurePath(folder)
    return f in p.parents if f.is_absolute() else folder in p.parts[:-1]


def _rule(name: str) -> tuple[Callable[[PhotoFacts], tuple], str]:
    """(sort key, smaller is better; the reason given when it decides) of the rule ``name``."""
    if name == "pixels":
        return (lambda f: (-f.pixels,)), "largest pixel count"
    if name == "format":
        return (lambda f: (FORMAT_RANK.get(f.format, WORST_FORMAT),)), "better format"
    if name == "metadata":
        return (lambda f: (-f.exif_tags,)), "more metadata (EXIF)"
    if name == "older":
        return (lambda f: (f.mtime if f.mtime is not None else float("inf"),)), "older file"
    if name.startswith("folder:") and len(name) > len("folder:"):
        folder = name[len("folder:"):]
        return (lambda f: (not _in_folder(f.path, folder),)), f"in folder {folder}"
    raise ConfigError(f"keep rule {name!r}: use one of {', '.join(DEFAULT_RULES)} or folder:NAME")


def rules_order(prefer: Sequence[str] = ()) -> list[str]:
    """The rules in the order applied: ``prefer`` first, then the other default rules."""
    for name in prefer:
        _rule(name)  # checked before any file is read
    return list(dict.fromkeys([*prefer, *DEFAULT_RULES]))


def choose(ids: Sequence[int], facts: Sequence[PhotoFacts], rules: Sequence[str]) -> tuple[int, str]:
    """(id to keep, why) among ``ids`` whose files are described by ``facts``."""
    keys = [_rule(name) for name in rules]
    ranked = sorted(zip(ids, facts), key=lambda m: (*[v for key, _ in keys for v in key(m[1])], m[0]))
    (best, best_facts), (_, runner_up) = ranked[0], ranked[1]
    for key, why in keys:
        if key(best_facts) != key(runner_up):
            if why == "better format":
                why = f"better format ({best_facts.format} over {runner_up.format or 'unreadable'})"
            return best, why
    return best, "lowest id (no rule tells them apart)"
