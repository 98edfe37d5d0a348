"""The catalogue of a FAISS index: one SQLite row per indexed image, plus the index's settings.

``images(id, path, size, mtime, sha256)``: ``id`` is the vector's id in the vector index;
``sha256`` is unique, so the same picture is indexed once whatever its path, and ``path`` is
its first (primary) path. ``other_paths(path, id, size, mtime)``: the other paths at which the
same content was found (byte copies in other folders); an index from before it was kept has
no such table (read as none, made on the first write).
``info(key, value)`` holds JSON values: format, dim, factory, model, settings, next_id,
tombstones.

A published version's file is opened read-only and immutable (no locks, no journal); the
first change copies it into memory, and ``write`` saves that copy as the next version's file.
"""

from __future__ import annotations

import json
import sqlite3
from pathlib import Path
from typing import Iterable, Sequence

from .records import ImageRecord

SCHEMA = """
CREATE TABLE IF NOT EXISTS images (
  id INTEGER PRIMARY KEY,
  path TEXT NOT NULL,
  size INTEGER,
  mtime REAL,
  sha256 TEXT UNIQUE
);
CREATE INDEX IF NOT EXISTS images_path ON images(path);
CREATE TABLE IF NOT EXISTS other_paths (
  path TEXT PRIMARY KEY,
  id INTEGER NOT NULL,
  size INTEGER,
  mtime REAL
);
CREATE INDEX IF NOT EXISTS other_paths_id ON other_paths(id);
CREATE TABLE IF NOT EXISTS info (key TEXT PRIMARY KEY, value TEXT NOT NULL);
"""
# SQLite limits the number of ? parameters in one statement.
_CHUNK = 900
Error = sqlite3.Error


def _chunks(values: list, size: int = _CHUNK):
    for start in range(0, len(values), size):
        yield values[start:start + size]


def _row(row: sqlite3.Row) -> ImageRecord:
    return ImageRecord(path=row["path"], size=row["size"], mtime=row["mtime"], sha256=row["sha256"], id=row["id"])


class Catalogue:
    """Image records and index settings in SQLite."""

    def __init__(self, conn: sqlite3.Connection, writable: bool):
        conn.row_factory = sqlite3.Row
        self._conn = conn
        self.writable = writable

    @classmethod
    def memory(cls) -> "Catalogue":
        conn = sqlite3.connect(":memory:", check_same_thread=False)
        conn.executescript(SCHEMA)
        return cls(conn, writable=True)

    @classmethod
    def open(cls, path: Path) -> "Catalogue":
        """A published version's file, read-only (``immutable``: it never changes)."""
        return cls(sqlite3.connect(f"file:{path}?mode=ro&immutable=1", uri=True, check_same_thread=False), writable=False)

    def _for_writing(self) -> sqlite3.Connection:
        if not self.writable:
            conn = sqlite3.connect(":memory:", check_same_thread=False)
            self._conn.backup(conn)
            conn.row_factory = sqlite3.Row
            conn.executescript(SCHEMA)
            self._conn, self.writable = conn, True
        return self._conn

    def write(self, path: Path) -> None:
        self._conn.commit()
        dest = sqlite3.connect(path)
        try:
            self._conn.backup(dest)
        finally:
            dest.close()

    # ---- settings -----------------------------------------------------------------------

    def info(self) -> dict:
        return {row["key"]: json.loads(row["value"]) for row in self._conn.execute("SELECT key, value FROM info")}

    def set_info(self, **values) -> None:
        self._for_writing().executemany(
            "INSERT OR REPLACE INTO info(key, value) VALUES (?, ?)", [(k, json.dumps(v)) for k, v in values.items()]
        )

    # ---- records ------------------------------------------------------------------------

    def insert(self, records: Sequence[ImageRecord]) -> None:
        self._for_writing().executemany(
            "INSERT INTO images(id, path, size, mtime, sha256) VALUES (?, ?, ?, ?, ?)",
            [(r.id, r.path, r.size, r.mtime, r.sha256) for r in records],
        )

    def delete(self, ids: Iterable[int]) -> None:
        """Remove the records of ``ids`` and their other paths."""
        rows = [(int(i),) for i in ids]
        conn = self._for_writing()
        conn.executemany("DELETE FROM images WHERE id = ?", rows)
        conn.executemany("DELETE FROM other_paths WHERE id = ?", rows)

    def records(self, ids: Iterable[int]) -> dict[int, ImageRecord]:
        out = {}
        for part in _chunks(sorted({int(i) for i in ids})):
            q = f"SELECT * FROM images WHERE id IN ({','.join('?' * len(part))})"
            out.update({row["id"]: _row(row) for row in self._conn.execute(q, part)})
        return out

    def _ids_by(self, column: str, values: Iterable[str], table: str = "images") -> dict[str, int]:
        out = {}
        for part in _chunks(sorted(set(values))):
            q = f"SELECT id, {column} FROM {table} WHERE {column} IN ({','.join('?' * len(part))})"
            out.update({row[column]: row["id"] for row in self._conn.execute(q, part)})
        return out

    def _has_other_paths(self) -> bool:
        # An index written before other paths were kept opens read-only without the table.
        return self.writable or self._conn.execute(
            "SELECT 1 FROM sqlite_master WHERE type = 'table' AND name = 'other_paths'").fetchone() is not None

    def ids_by_hash(self, hashes: Iterable[str]) -> dict[str, int]:
        return self._ids_by("sha256", (h for h in hashes if h))

    def ids_by_path(self, paths: Iterable[str]) -> dict[str, int]:
        """path -> id, for the paths held, primary or other."""
        paths = list(paths)
        out = self._ids_by("path", paths, "other_paths") if self._has_other_paths() else {}
        out.update(self._ids_by("path", paths))
        return out

    # ---- other paths of the same content ----------------------------------------------

    def insert_paths(self, records: Sequence[ImageRecord]) -> None:
        """Record ``records`` (id set) as other paths of their ids' content."""
        self._for_writing().executemany(
            "INSERT OR REPLACE INTO other_paths(path, id, size, mtime) VALUES (?, ?, ?, ?)",
            [(r.path, int(r.id), r.size, r.mtime) for r in records],
        )

    def delete_paths(self, paths: Iterable[str]) -> None:
        self._for_writing().executemany("DELETE FROM other_paths WHERE path = ?", [(p,) for p in paths])

    def other_paths(self, ids: Iterable[int]) -> dict[int, list[ImageRecord]]:
        """id -> its other paths (records with ``sha256`` None), by path, for the ids that have some."""
        out: dict[int, list[ImageRecord]] = {}
        if not self._has_other_paths():
            return out
        for part in _chunks(sorted({int(i) for i in ids})):
            q = f"SELECT * FROM other_paths WHERE id IN ({','.join('?' * len(part))}) ORDER BY path"
            for row in self._conn.execute(q, part):
                out.setdefault(row["id"], []).append(ImageRecord(row["path"], row["size"], row["mtime"], None, row["id"]))
        return out

    def __len__(self) -> int:
        return self._conn.execute("SELECT COUNT(*) FROM images").fetchone()[0]

    def ids(self) -> list[int]:
        return [row[0] for row in self._conn.execute("SELECT id FROM images ORDER BY id")]
