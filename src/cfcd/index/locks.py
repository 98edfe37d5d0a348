"""The write lock of an index: one writer publishes at a time, every other waits for it (up
to a timeout, then ``Conflict``).

``WriteLock``: an exclusive ``flock`` on ``INDEX/write.lock``, between processes (the FAISS
engine's directory store, ``cfcd.index.store``). ``LocalLock``: between the threads and
objects of one process, for a store only one process may open at a time (Milvus Lite, the
tests' in-memory engine). Both are what ``Store.lock`` returns (``cfcd.index.contract``).
"""

from __future__ import annotations

import errno
import fcntl
import os
import threading
import time
from pathlib import Path

from ..errors import Conflict

LOCK = "write.lock"


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
                    raise Conflict(
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


class LocalLock:
    """A write lock held within this process (per ``key``), for a store that only one process
    may open at a time (Milvus Lite, in-memory): threads and objects of that process still
    take turns to publish."""

    _locks: dict[str, threading.Lock] = {}
    _guard = threading.Lock()

    def __init__(self, key: str, timeout: float = 60.0):
        with LocalLock._guard:
            self._lock = LocalLock._locks.setdefault(key, threading.Lock())
        self.key, self.timeout = key, timeout

    def __enter__(self) -> "LocalLock":
        if not self._lock.acquire(timeout=self.timeout):
            raise Conflict(f"{self.key}: another writer in this process has been writing to this index for over "
                           f"{self.timeout:.0f} s; wait for it to finish and retry")
        return self

    def __exit__(self, *exc) -> None:
        self._lock.release()
