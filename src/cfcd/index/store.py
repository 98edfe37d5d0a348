"""On-disk layout of an index: immutable versions, an atomically replaced pointer, a write lock.

```
INDEX/
  CURRENT            the name of the published version, e.g. "v00000007"
  write.lock         flock()ed by the one process allowed to publish
  v00000006/         the previous version, kept for readers that opened it a moment ago
  v00000007/         index.faiss + meta.sqlite, never modified once published
  .staging-*/        a version being written (removed by the next writer if its writer died)
```

A writer fills a staging directory, fsyncs it, renames it to the next version and then
replaces ``CURRENT`` (write-temp-then-rename). A crash at any point leaves ``CURRENT``
naming a complete version; a reader that reads ``CURRENT`` and opens that directory never
sees a half-written file.
"""

from __future__ import annotations

import errno
import fcntl
import os
import re
import shutil
import tempfile
import time
from pathlib import Path

CURRENT = "CURRENT"
LOCK = "write.lock"
FAISS_FILE = "index.faiss"
META_FILE = "meta.sqlite"
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
        raise FileNotFoundError(f"{root}: not a cfcd index (no {CURRENT} file); create one with `cfcd index build`") from None
    match = _VERSION.match(name)
    if not match:
        raise ValueError(f"{root / CURRENT}: names {name!r}, not an index version; the index is damaged")
    return int(match.group(1)), root / name


def _versions(root: Path) -> list[int]:
    return sorted(int(m.group(1)) for p in root.iterdir() if (m := _VERSION.match(p.name)))


def _fsync_path(path: Path) -> None:
    fd = os.open(path, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


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
        _fsync_path(f)
    _fsync_path(staging)
    gen = max([0, *_versions(root)]) + 1
    target = root / version_name(gen)
    os.rename(staging, target)
    pointer = root / f".{CURRENT}.tmp"
    with open(pointer, "w") as f:
        f.write(version_name(gen) + "\n")
        f.flush()
        os.fsync(f.fileno())
    os.replace(pointer, root / CURRENT)
    _fsync_path(root)
    collect_garbage(root)
    return gen


def collect_garbage(root: Path) -> None:
    """Remove staging directories of dead writers and versions no reader needs any more
    (call with the write lock held)."""
    gen, _ = current(root)
    for p in root.iterdir():
        if p.name.startswith(STAGING_PREFIX):
            shutil.rmtree(p, ignore_errors=True)
    older = [g for g in _versions(root) if g < gen]
    stale = older[:-KEEP_PREVIOUS] if KEEP_PREVIOUS else older
    stale += [g for g in _versions(root) if g > gen]  # renamed by a writer that died before the swap
    for g in stale:
        shutil.rmtree(root / version_name(g), ignore_errors=True)


class WriteLock:
    """An exclusive ``flock`` on ``INDEX/write.lock``: one writer at a time, released by the
    kernel if the writer dies."""

    def __init__(self, root: str | Path, timeout: float = 60.0):
        self.path = Path(root) / LOCK
        self.timeout = timeout
        self._fd: int | None = None

    @property
    def held(self) -> bool:
        return self._fd is not None

    def acquire(self) -> "WriteLock":
        self.path.parent.mkdir(parents=True, exist_ok=True)
        fd = os.open(self.path, os.O_RDWR | os.O_CREAT, 0o644)
        deadline = time.monotonic() + self.timeout
        while True:
            try:
                fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
                break
            except OSError as err:
                if err.errno not in (errno.EAGAIN, errno.EACCES):
                    os.close(fd)
                    raise
                if time.monotonic() > deadline:
                    os.close(fd)
                    raise RuntimeError(
                        f"{self.path}: another process has been writing to this index for over "
                        f"{self.timeout:.0f} s; wait for it to finish and retry"
                    ) from None
                time.sleep(0.05)
        self._fd = fd
        return self

    def release(self) -> None:
        if self._fd is not None:
            fcntl.flock(self._fd, fcntl.LOCK_UN)
            os.close(self._fd)
            self._fd = None

    def __enter__(self) -> "WriteLock":
        return self.acquire()

    def __exit__(self, *exc) -> None:
        self.release()
