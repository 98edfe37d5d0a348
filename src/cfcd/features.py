"""Descriptors made elsewhere, read for evaluation (``cfcd eval --features``).

Accepted: a cfcd features directory (``cfcd.extraction``), ``.npy`` (one matrix), ``.mat``
(cirtorch and revisitop write the database as ``X`` and the queries as ``Q``, d x n) and
``.pkl`` (a dict of arrays, e.g. ``db`` and ``query``; read with ``cfcd.safe_pickle``).
Whatever the file, a matrix leaves as (n, d) float32, one descriptor per row: its
orientation is the one whose row count matches the number of images it must describe.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np

from .errors import ConfigError, InputError, MismatchError, NotFound
from .safe_pickle import load_pickle

# Names a container may give its matrices, tried in order.
DB_KEYS = ("X", "db", "database")
QUERY_KEYS = ("Q", "query", "queries")
FORMATS = ".npy, .mat, .pkl or a cfcd features directory"


def read_cfcd_features(path: str | Path) -> tuple[list[str], np.ndarray, dict]:
    """(ids, descriptors (n, d), manifest) of a directory written by ``cfcd extract``."""
    from . import extraction  # imports torch; only this format needs it

    return extraction.load_features(path)


def _load_mat(path: Path) -> dict:
    from scipy.io import loadmat

    try:
        return {k: v for k, v in loadmat(path).items() if not k.startswith("__")}
    except NotImplementedError as err:  # MATLAB v7.3 files are HDF5
        raise InputError(f"{path}: MATLAB v7.3 files are not supported; save with -v7 or as .npy") from err


def _load_container(path: Path) -> dict | np.ndarray:
    if path.is_dir():
        return read_cfcd_features(path)[1]
    if not path.is_file():
        raise NotFound(f"{path}: no such descriptor file")
    suffix = path.suffix.lower()
    if suffix == ".npy":
        return np.load(path, allow_pickle=False)
    if suffix == ".mat":
        return _load_mat(path)
    if suffix == ".pkl":
        data = load_pickle(path)
        if not isinstance(data, (dict, np.ndarray)):
            raise InputError(f"{path}: expected a dict of arrays or an array; got {type(data).__name__}")
        return data
    raise InputError(f"{path}: unknown descriptor format {suffix!r}; use {FORMATS}")


def _pick(container: dict | np.ndarray, keys: tuple[str, ...], path: Path, alone_ok: bool):
    """The matrix under the first of ``keys``, or the only one if ``alone_ok``."""
    if isinstance(container, np.ndarray):
        return container
    for key in keys:
        if key in container:
            return container[key]
    if alone_ok and len(container) == 1:
        return next(iter(container.values()))
    raise InputError(f"{path}: no matrix named {' or '.join(keys)}; it holds {', '.join(map(str, container)) or 'nothing'}")


def _orient(matrix, count: int, path: Path) -> np.ndarray:
    """(count, d) from (count, d) or (d, count); a square matrix follows its format's
    convention, d x n for ``.mat`` and n x d otherwise."""
    m = np.asarray(matrix)
    if m.ndim != 2 or count not in m.shape:
        raise MismatchError(f"{path}: descriptors of shape {m.shape} do not describe {count} images; expected ({count}, d) or (d, {count})")
    columns = m.shape[1] == count and (m.shape[0] != count or path.suffix.lower() == ".mat")
    return np.ascontiguousarray(m.T if columns else m, dtype=np.float32)


def read_descriptors(path: str | Path, count: int, keys: tuple[str, ...] = DB_KEYS) -> np.ndarray:
    """One descriptor matrix (count, d) float32 from any accepted format.

    A ``.mat`` / ``.pkl`` container gives the matrix under the first of ``keys`` present, or
    its only matrix.
    """
    path = Path(path)
    return _orient(_pick(_load_container(path), keys, path, alone_ok=True), count, path)


def read_eval_features(path: str | Path, n_db: int, n_queries: int, query_path: str | Path | None = None) -> tuple[np.ndarray, np.ndarray]:
    """(database (n_db, d), queries (n_queries, d)) float32.

    With ``query_path`` the two matrices come from two files; without it ``path`` must be a
    container holding both (``X``/``Q`` in a ``.mat``, ``db``/``query`` in a ``.pkl``).
    """
    path = Path(path)
    if query_path is not None:
        db, queries = read_descriptors(path, n_db, DB_KEYS), read_descriptors(query_path, n_queries, QUERY_KEYS)
    else:
        container = _load_container(path)
        if isinstance(container, np.ndarray):
            raise ConfigError(f"{path}: holds one matrix; give the query descriptors as a second file")
        db = _orient(_pick(container, DB_KEYS, path, alone_ok=False), n_db, path)
        queries = _orient(_pick(container, QUERY_KEYS, path, alone_ok=False), n_queries, path)
    if db.shape[1] != queries.shape[1]:
        raise MismatchError(f"database descriptors are {db.shape[1]}-d but query descriptors {queries.shape[1]}-d")
    return db, queries
