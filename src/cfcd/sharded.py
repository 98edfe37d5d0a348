"""Several (n_i, d) arrays read as one (sum n_i, d) array, without concatenating them.

A features directory of 1M descriptors is a few GB of ``.npy`` shards. ``ShardedArray`` over
their memory maps (``np.load(..., mmap_mode="r")``) reads only the rows asked for, so a
consumer that walks it block by block (``cfcd.evaluate.rank`` with ``topk``) holds one block
in memory, not the whole matrix. Rows come out as ``dtype`` (float16 shards are widened).
"""

from __future__ import annotations

from typing import Iterator, Sequence

import numpy as np

from .errors import InputError


class ShardedArray:
    """Read-only rows of ``parts`` stacked in order; ``a[i]``, ``a[start:stop]`` and
    ``a[index_array]`` return ordinary arrays of ``dtype``; ``np.asarray(a)`` reads them all."""

    def __init__(self, parts: Sequence[np.ndarray], dtype=np.float32):
        dims = {p.shape[1:] for p in parts}
        if len(dims) > 1 or any(p.ndim != 2 for p in parts):
            raise InputError(f"shards must be (n, d) with one d; got shapes {[p.shape for p in parts]}")
        if not parts:
            raise InputError("no shards")
        self.parts = list(parts)
        self.dtype = np.dtype(dtype)
        self.offsets = np.cumsum([0] + [len(p) for p in self.parts])

    @property
    def shape(self) -> tuple[int, int]:
        return int(self.offsets[-1]), self.parts[0].shape[1]

    @property
    def ndim(self) -> int:
        return 2

    def __len__(self) -> int:
        return self.shape[0]

    def __getitem__(self, key) -> np.ndarray:
        if isinstance(key, slice):
            start, stop, step = key.indices(len(self))
            return self._rows(start, stop) if step == 1 else self[np.arange(start, stop, step)]
        if isinstance(key, (int, np.integer)):
            return self[np.array([key])][0]
        rows = np.asarray(key)
        if rows.dtype == bool:
            rows = np.flatnonzero(rows)
        if rows.ndim != 1:
            raise IndexError("index the rows with an int, a slice or a 1-d array")
        rows = np.where(rows < 0, rows + len(self), rows)
        if rows.size and (rows.min() < 0 or rows.max() >= len(self)):
            raise IndexError(f"row index out of range for {len(self)} rows")
        out = np.empty((len(rows), self.shape[1]), self.dtype)
        shard = np.searchsorted(self.offsets, rows, side="right") - 1
        for k in np.unique(shard):
            sel = shard == k
            out[sel] = self.parts[k][rows[sel] - self.offsets[k]]
        return out

    def _rows(self, start: int, stop: int) -> np.ndarray:
        out = np.empty((max(0, stop - start), self.shape[1]), self.dtype)
        for k, part in enumerate(self.parts):
            lo, hi = max(start, self.offsets[k]), min(stop, self.offsets[k + 1])
            if lo < hi:
                out[lo - start:hi - start] = part[lo - self.offsets[k]:hi - self.offsets[k]]
        return out

    def blocks(self, rows: int) -> Iterator[tuple[int, np.ndarray]]:
        """(start, rows start..start+rows) over the whole array, one block in memory at a time."""
        for start in range(0, len(self), rows):
            yield start, self._rows(start, min(start + rows, len(self)))

    def __array__(self, dtype=None, copy=None) -> np.ndarray:
        return self._rows(0, len(self)).astype(dtype or self.dtype, copy=False)
