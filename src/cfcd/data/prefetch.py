"""Images decoded and resized by threads while the network runs, in order, a bounded number ahead.

``in_order(fn, items, threads)`` yields ``fn(item)`` for each item in the order given, computed
by ``threads`` threads ahead of the consumer. Threads, not processes: Pillow releases the GIL
while it decodes and resamples, and so do PyTorch and onnxruntime while the network runs, so the
two overlap without copying tensors between processes or loading the model twice.

Memory is bounded by counting images, not bytes: at most ``ahead(threads)`` items are taken from
``items`` and not yet consumed, the one the consumer holds included. Only a running ``fn`` holds
a full-size decode (``cfcd.extraction.prepare`` keeps just the network's views of it), so at most
``threads`` decoded photos live at once, and a 48 Mpx RGB frame is 144 MB.
"""

from __future__ import annotations

import os
from collections import deque
from concurrent.futures import ThreadPoolExecutor
from typing import Callable, Iterable, Iterator, TypeVar

T = TypeVar("T")
R = TypeVar("R")

# At most this many decode threads, whatever the core count: each may hold a full-size photo.
MAX_DECODE_THREADS = 4


def usable_cores() -> int:
    """The cores this process may run on (its affinity mask, e.g. under taskset or a container's
    cpuset), else ``os.cpu_count()``."""
    try:
        return len(os.sched_getaffinity(0))
    except AttributeError:  # not Linux
        return os.cpu_count() or 1


def decode_threads(cores: int | None = None) -> int:
    """Decode threads beside the network on a CPU: 1 + cores // 8, at most ``MAX_DECODE_THREADS``
    (2 to 7 cores: 1; 8 to 15: 2; 16: 3). Decoding and resizing phone photos took 3 % of an
    extraction's CPU time with the reduced JPEG decode and 18 % at full size (docs/results.md,
    "Decoding phone photos"), so one thread keeps up with a network spread over several cores, and
    more would take cores from the network. ``bench/index_build_speed.py`` measures the choice."""
    cores = usable_cores() if cores is None else cores
    return max(1, min(MAX_DECODE_THREADS, 1 + cores // 8))


# At most this many images at once through onnxruntime, whatever the core count: each holds a
# decoded photo while its thread runs the network on it.
MAX_IMAGE_THREADS = 4


def image_threads(cores: int | None = None) -> tuple[int, int]:
    """(images at once, onnxruntime threads per image) on a CPU: min(cores, 4) images, each run
    by cores // images threads (2 cores: 2 x 1; 8: 4 x 2; 16: 4 x 4). The default model's small
    depthwise convolutions split poorly over threads: on 2 cores, two images each on one thread
    ran in 40 ms per image against 56 ms for one image on two threads, with a fifth less CPU time
    (docs/results.md, issue 32). Measured on 2 cores only; ``--image-threads`` overrides it."""
    cores = usable_cores() if cores is None else cores
    images = max(1, min(MAX_IMAGE_THREADS, cores))
    return images, max(1, cores // images)


def ahead(threads: int) -> int:
    """Items in flight for ``threads`` threads: twice as many, so that while the consumer holds
    one, each thread has one more to start when it finishes the one it prepares."""
    return 2 * threads


def in_order(fn: Callable[[T], R], items: Iterable[T], threads: int, initializer: Callable[[], None] | None = None) -> Iterator[R]:
    """``fn(item)`` for each of ``items``, in their order; ``threads`` 0: in this thread, in turn
    with the consumer. An exception ``fn`` raises is raised here, at its item. Items are taken
    from ``items`` here, in the consumer's thread, only when there is room
    (at most ``ahead(threads)`` taken and not yet consumed). Closing the iterator (or an
    exception in the consumer) cancels what has not started and waits for what has. Each thread
    runs ``initializer()`` first."""
    if threads <= 0:
        yield from map(fn, items)
        return
    limit = ahead(threads)
    pool = ThreadPoolExecutor(threads, thread_name_prefix="cfcd-decode", initializer=initializer)
    pending: deque = deque()
    try:
        for item in items:
            pending.append(pool.submit(fn, item))
            if len(pending) == limit:  # full: the next item is taken once this one is consumed
                yield pending.popleft().result()
        while pending:
            yield pending.popleft().result()
    finally:
        pool.shutdown(wait=True, cancel_futures=True)
