"""On-disk layout of an index: immutable versions, an atomically replaced pointer, a write lock.

```
INDEX/
  CURRENT            the name of the published version, e.g. "v00000007"
  write.lock         flock()ed by the one process allowed to publish (cfcd.index.locks)
  v00000006/         the previous version, kept for readers that opened it a moment ago
  v00000007/         index.faiss + meta.sqlite (+ projection.f32, raw-*.npy), never modified once published
  .staging-*/        a version being written (removed by the next writer if its writer died)
```

A writer fills a staging directory, fsyncs it, renames it to the next version and then
replaces ``CURRENT`` (write-temp-then-rename). A crash at any point leaves ``CURRENT``
naming a complete version; a reader that reads ``CURRENT`` and opens that directory never
sees a half-written file. What a dead writer left (staging directories, a version renamed
but never named by ``CURRENT``) is removed by the next writer, under the lock.

``DirectoryStore`` puts this behind the interface every engine's store has (``exists``,
``version``, ``open``, ``create``, ``create_vectors``, ``lock``, ``publish``, ``reclaim``), for
``cfcd.Index``. The raw descriptors' segments (``cfcd.index.raw``) are hard-linked from one
version to the next, so a version costs only what changed in them; ``cfcd index compact``
rewrites those holding removed images' rows and ``reclaim`` removes every earlier version.
"""

from __future__ import annotations

import os
import re
import shutil
import tempfile
from pathlib import Path

from ..atomic import fsync_path
from ..errors import AlreadyExists, InputError, MismatchError, NotFound
from ..failpoints import failpoint
from .catalogue import Catalogue
from .catalogue import Error as CatalogueError
from .layers import Layers
from .locks import LOCK, WriteLock
from .projection import Projection
from .raw import RawSegments
from .vectors import DEFAULT_FACTORY, FaissVectors

CURRENT = "CURRENT"
FAISS_FILE = "index.faiss"
META_FILE = "meta.sqlite"
PROJECTION_FILE = "projection.f32"
STAGING_PREFIX = ".staging-"
# Published versions kept besides the current one, so a reader that read CURRENT just before
# a swap still finds its files.
KEEP_PREVIOUS = 2
_VERSION = re.compile(r"^v(\d{8})$")


def version_name(generation: int) -> str:
    return f"v{generation:08d}"


def is_index(root: str | Path) -> bool:
    return (Path(root) / CURRENT).is_file()


def current(root: str | Path) -> tuple[int, Path]:
    """(generation, directory) of the published version of the index at ``root``."""
    root = Path(root)
    try:
        name = (root / CURRENT).read_text().strip()
    except FileNotFoundError:
        raise NotFound(f"{root}: not a cfcd index (no {CURRENT} file); create one with `cfcd index build`") from None
    match = _VERSION.match(name)
    if not match:
        raise InputError(f"{root / CURRENT}: names {name!r}, not an index version; the index is damaged")
    return int(match.group(1)), root / name


def _versions(root: Path) -> list[int]:
    return sorted(int(m.group(1)) for p in root.iterdir() if (m := _VERSION.match(p.name)))


def new_staging(root: str | Path) -> Path:
    root = Path(root)
    root.mkdir(parents=True, exist_ok=True)
    return Path(tempfile.mkdtemp(prefix=STAGING_PREFIX, dir=root))


def publish(root: str | Path, staging: Path) -> int:
    """Make the complete files in ``staging`` the index's next version; returns its generation.

    Call with the write lock held.
    """
    root = Path(root)
    for f in staging.iterdir():
        fsync_path(f)
    fsync_path(staging)
    failpoint("index.staged")
    base = current(root)[0] if is_index(root) else 0
    _remove_orphans(root, base)
    gen = base + 1
    target = root / version_name(gen)
    os.rename(staging, target)
    failpoint("index.renamed")
    pointer = root / f".{CURRENT}.tmp"
    with open(pointer, "w") as f:
        f.write(version_name(gen) + "\n")
        f.flush()
        os.fsync(f.fileno())
    os.replace(pointer, root / CURRENT)
    fsync_path(root)
    failpoint("index.published")
    collect_garbage(root)
    return gen


def _remove_orphans(root: Path, gen: int) -> None:
    """Versions after ``gen``: renamed by a writer that died before switching ``CURRENT``,
    never published, so no reader opened them."""
    for g in _versions(root):
        if g > gen:
            shutil.rmtree(root / version_name(g))


def collect_garbage(root: Path, keep: int = KEEP_PREVIOUS) -> list[str]:
    """Remove staging directories of other writers (dead: the lock is ours) and versions
    no reader needs any more: all but the ``keep`` before the current one (call with the
    write lock held). Returns the names removed."""
    gen, _ = current(root)
    removed = [p.name for p in root.iterdir() if p.name.startswith(STAGING_PREFIX)]
    for name in removed:
        shutil.rmtree(root / name, ignore_errors=True)
    removed += [version_name(g) for g in _versions(root) if g > gen]
    _remove_orphans(root, gen)
    older = [g for g in _versions(root) if g < gen]
    for g in older[:-keep] if keep else older:
        shutil.rmtree(root / version_name(g), ignore_errors=True)
        removed.append(version_name(g))
    return removed


def disk_bytes(root: Path) -> int:
    """Bytes of the files under ``root``, a file hard-linked from several versions counted once."""
    seen, total = set(), 0
    for dirpath, _, files in os.walk(root):
        for name in files:
            st = os.lstat(os.path.join(dirpath, name))
            if (st.st_dev, st.st_ino) not in seen:
                seen.add((st.st_dev, st.st_ino))
                total += st.st_size
    return total


class DirectoryStore:
    """The FAISS engine's store: versions of ``index.faiss`` + ``meta.sqlite`` in a directory."""

    engine = "faiss"

    def __init__(self, root: str | Path):
        self.root = Path(root)

    @property
    def location(self) -> str:
        return str(self.root)

    def exists(self) -> bool:
        return is_index(self.root)

    def version(self) -> int:
        return current(self.root)[0]

    def lock(self, timeout: float = 60.0) -> WriteLock:
        return WriteLock(self.root, timeout)

    def close(self) -> None:
        pass  # nothing held between calls: versions are opened read-only and immutable

    def reclaim(self) -> list[str]:
        """Every version but the current one, and what dead writers left (with the lock held).
        A reader still holding an earlier version keeps the files it opened; one that opens
        again reads ``CURRENT`` (a server does on each new version)."""
        return collect_garbage(self.root, keep=0)

    def footprint(self) -> dict:
        return {"bytes": disk_bytes(self.root), "rows": None}

    @staticmethod
    def create(dim: int, factory: str | None) -> Layers:
        return Layers(FaissVectors.create(dim, factory or DEFAULT_FACTORY), Catalogue.memory(), RawSegments(dim))

    @staticmethod
    def create_vectors(dim: int, factory: str | None) -> FaissVectors:
        """An empty vector layer (to be filled and published in place of the current one)."""
        return FaissVectors.create(dim, factory or DEFAULT_FACTORY)

    def open(self) -> Layers:
        """The published version, a consistent snapshot even while another process publishes."""
        for attempt in range(5):
            gen, vdir = current(self.root)
            try:
                catalogue = Catalogue.open(vdir / META_FILE)
                info = catalogue.info()
                described = info.get("projection")
                projection = Projection.from_bytes((vdir / PROJECTION_FILE).read_bytes(), described) if described else None
                # An index from before raw descriptors were kept lists none: it has no raw layer.
                raw = RawSegments(info["dim"], vdir, info["raw"]) if info.get("raw") is not None else None
                return Layers(FaissVectors.read(vdir / FAISS_FILE, info.get("factory", "")), catalogue, raw, projection, gen)
            except (RuntimeError, OSError, CatalogueError):
                # The version was collected between reading CURRENT and opening it: a newer
                # one is published, read CURRENT again.
                if attempt == 4 or current(self.root)[0] == gen:
                    raise
        raise AssertionError("unreachable")

    def check_vacant(self) -> None:
        """Refuse a directory that holds something other than a cfcd index."""
        if self.root.exists() and not self.exists():
            if not self.root.is_dir():
                raise AlreadyExists(f"{self.root}: exists and is not a directory; choose another path")
            stray = [p.name for p in self.root.iterdir() if p.name != LOCK][:3]
            if stray:
                raise AlreadyExists(f"{self.root}: exists and is not a cfcd index (holds {stray}); choose another path")

    def publish(self, layers: Layers) -> int:
        """Write ``layers`` as the next version (call with the lock held); returns its generation."""
        if not isinstance(layers.vectors, FaissVectors):
            raise MismatchError(f"{self.root}: a directory holds FAISS indexes; this index uses the {layers.vectors.engine} engine")
        staging = new_staging(self.root)
        layers.vectors.write(staging / FAISS_FILE)
        if layers.raw is not None:
            layers.catalogue.set_info(raw=layers.raw.write(staging))
        if layers.projection is not None:
            (staging / PROJECTION_FILE).write_bytes(layers.projection.to_bytes())
        layers.catalogue.write(staging / META_FILE)
        gen = publish(self.root, staging)
        if layers.raw is not None:
            layers.raw.published(self.root / version_name(gen), layers.catalogue.info()["raw"])
        return gen
