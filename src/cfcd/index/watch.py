"""Keeping an index in step with a folder while it changes (``cfcd index sync --watch``,
``cfcd serve --watch DIR``).

The folder is watched with ``watchdog``: the platform's change notification (inotify, FSEvents,
ReadDirectoryChangesW) where it starts, its polling observer where it does not (a network mount,
inotify's watch limit reached). Events are not applied one by one: a burst of them (a camera roll
copied in, a folder renamed) is waited out until nothing has changed for ``quiet`` seconds, then
one ``cfcd.index.sync.sync`` brings the index in step, in one versioned write. A sync compares
by size and mtime first, so one after a few changes reads only the changed files.
"""

from __future__ import annotations

import logging
import threading
import time
from contextlib import nullcontext
from pathlib import Path
from typing import Callable

from ..errors import Unavailable
from .sync import SyncPlan, sync

log = logging.getLogger(__name__)

# Seconds without a change before a batch is synced, and between two polls of the fallback.
DEFAULT_QUIET = 1.0
POLL_INTERVAL = 1.0


def check_watchable(folder: str | Path) -> None:
    """Refuse, before anything starts, a folder that is not one or a missing watchdog."""
    import importlib.util

    from ..errors import InputError

    if not Path(folder).is_dir():
        raise InputError(f"{folder}: not a folder; give the folder of photos to keep the index in step with")
    if importlib.util.find_spec("watchdog") is None:
        raise Unavailable("watching a folder needs the watchdog package: pip install 'watchdog>=4.0'")


class FolderWatch:
    """Whether anything changed under ``folder`` since the last ``wait``."""

    def __init__(self, folder: str | Path, poll: bool = False):
        try:
            from watchdog.events import FileSystemEventHandler
            from watchdog.observers import Observer
            from watchdog.observers.polling import PollingObserver
        except ImportError as err:
            raise Unavailable("watching a folder needs the watchdog package: pip install 'watchdog>=4.0'") from err
        self._changed = threading.Event()
        self.last = 0.0  # monotonic time of the last change seen

        watch = self

        class Handler(FileSystemEventHandler):
            def on_any_event(self, event) -> None:
                if event.event_type not in ("opened", "closed_no_write"):  # reads change nothing
                    watch.last = time.monotonic()
                    watch._changed.set()

        self.observer = None
        for kind in ([] if poll else [Observer]) + [lambda: PollingObserver(timeout=POLL_INTERVAL)]:
            observer = kind()
            try:
                observer.schedule(Handler(), str(folder), recursive=True)
                observer.start()
            except OSError as err:  # no change notification here: poll instead
                log.warning("%s: change notification unavailable (%s); polling every %.0f s", folder, err, POLL_INTERVAL)
                continue
            self.observer = observer
            break
        self.polling = isinstance(self.observer, PollingObserver)

    def wait(self, quiet: float, stop: threading.Event) -> bool:
        """Block until something changed and then nothing for ``quiet`` seconds (True), or
        ``stop`` is set (False)."""
        while not stop.is_set():
            if self._changed.wait(0.2):
                if time.monotonic() - self.last >= quiet:
                    self._changed.clear()
                    return True
                stop.wait(0.1)  # still changing: wait for the burst to end
        return False

    def close(self) -> None:
        self.observer.stop()
        self.observer.join()


def watch(location, folder: str | Path, model=None, runtime=None, quiet: float = DEFAULT_QUIET,
          stop: threading.Event | None = None, guard=None, on_sync: Callable[[SyncPlan], None] | None = None,
          poll: bool = False) -> None:
    """Sync ``folder`` into the index at ``location`` now, then after every batch of changes,
    until ``stop`` is set (forever without one). ``guard``: a lock held around each sync (a
    server's one writer at a time); ``on_sync`` is called with each sync's plan. A failed sync
    is logged and tried again at the next change."""
    stop = stop or threading.Event()
    watcher = FolderWatch(folder, poll)  # watching before the first sync: nothing falls between
    try:
        while not stop.is_set():
            try:
                with guard or nullcontext():
                    todo = sync(location, folder, model, runtime)
                if on_sync is not None:
                    on_sync(todo)
            except (OSError, ValueError, RuntimeError) as err:
                log.warning("sync of %s into %s failed, retried at the next change: %s", folder, location, err)
            if not watcher.wait(quiet, stop):
                return
    finally:
        watcher.close()
