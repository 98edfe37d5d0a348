"""The index's SQLite metadata: one row per indexed image, plus the index's settings.

``images(id, path, size, mtime, sha256)``: ``id`` is the FAISS id of the image's descriptor;
``sha256`` is the hash of the file's bytes, unique, so the same picture is indexed once
whatever its path (NULL for descriptors whose image file is not on this machine).
``info(key, value)`` holds JSON values: format, dim, factory, model, settings, next_id,
tombstones.
"""

from __future__ import annotations

import hashlib
import json
import os
import sqlite3
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Iterable, Sequence

SCHEMA = """
CREATE TABLE IF NOT EXISTS images (
  id INTEGER PRIMARY KEY,
  path TEXT NOT NULL,
  size INTEGER,
  mtime REAL,
  sha256 TEXT UNIQUE
);
CREATE INDEX IF NOT EXISTS images_path ON images(path);
CREATE TABLE IF NOT EXISTS info (key TEXT PRIMARY KEY, value TEXT NOT NULL);
"""


@dataclass(frozen=True)
class ImageRecord:
    """What the index knows about one image."""

    path: str
    size: int | None = None
    mtime: float | None = None
    sha256: str | None = None
    id: int | None = None

    def to_dict(self) -> dict:
        return asdict(self)


def sha256_file(path: str | Path, chunk: int = 1 << 20) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as f:
        while block := f.read(chunk):
            h.update(block)
    return h.hexdigest()


def describe_file(path: str | Path) -> ImageRecord:
    """The record of an image file (absolute path, size, mtime, content hash); for a name
    that is not a file here (descriptors made elsewhere) only the name."""
    p = Path(path)
    if not p.is_file():
        return ImageRecord(path=str(path))
    st = p.stat()
    return ImageRecord(path=str(p.resolve()), size=st.st_size, mtime=st.st_mtime, sha256=sha256_file(p))


def connect_readonly(path: Path) -> sqlite3.Connection:
    # immutable=1: a published version never changes, so SQLite needs no locks or journal.
    conn = sqlite3.connect(f"file:{path}?mode=ro&immutable=1", uri=True, check_same_thread=False)
    conn.row_factory = sqlite3.Row
    return conn


def connect_memory(source: sqlite3.Connection | None = None) -> sqlite3.Connection:
    """A writable in-memory database, a copy of ``source`` if given."""
    conn = sqlite3.connect(":memory:", check_same_thread=False)
    conn.row_factory = sqlite3.Row
    if source is not None:
        source.backup(conn)
    conn.executescript(SCHEMA)
    return conn


def write_file(conn: sqlite3.Connection, path: Path) -> None:
    conn.commit()
    dest = sqlite3.connect(path)
    try:
        conn.backup(dest)
    finally:
        dest.close()


def get_info(conn: sqlite3.Connection) -> dict:
    return {row["key"]: json.loads(row["value"]) for row in conn.execute("SELECT key, value FROM info")}


def set_info(conn: sqlite3.Connection, **values) -> None:
    conn.executemany(
        "INSERT OR REPLACE INTO info(key, value) VALUES (?, ?)", [(k, json.dumps(v)) for k, v in values.items()]
    )


def insert(conn: sqlite3.Connection, records: Sequence[ImageRecord]) -> None:
    conn.executemany(
        "INSERT INTO images(id, path, size, mtime, sha256) VALUES (?, ?, ?, ?, ?)",
        [(r.id, r.path, r.size, r.mtime, r.sha256) for r in records],
    )


def delete(conn: sqlite3.Connection, ids: Iterable[int]) -> None:
    conn.executemany("DELETE FROM images WHERE id = ?", [(int(i),) for i in ids])


def _chunks(values: list, size: int = 900):
    # SQLite limits the number of ? parameters in one statement.
    for start in range(0, len(values), size):
        yield values[start:start + size]


def _row(row: sqlite3.Row) -> ImageRecord:
    return ImageRecord(path=row["path"], size=row["size"], mtime=row["mtime"], sha256=row["sha256"], id=row["id"])


def by_ids(conn: sqlite3.Connection, ids: Iterable[int]) -> dict[int, ImageRecord]:
    out = {}
    for part in _chunks(sorted({int(i) for i in ids})):
        q = f"SELECT * FROM images WHERE id IN ({','.join('?' * len(part))})"
        out.update({row["id"]: _row(row) for row in conn.execute(q, part)})
    return out


def _by_column(conn: sqlite3.Connection, column: str, values: Iterable[str]) -> dict[str, int]:
    out = {}
    for part in _chunks(sorted(set(values))):
        q = f"SELECT id, {column} FROM images WHERE {column} IN ({','.join('?' * len(part))})"
        out.update({row[column]: row["id"] for row in conn.execute(q, part)})
    return out


def ids_by_hash(conn: sqlite3.Connection, hashes: Iterable[str]) -> dict[str, int]:
    return _by_column(conn, "sha256", (h for h in hashes if h))


def ids_by_path(conn: sqlite3.Connection, paths: Iterable[str]) -> dict[str, int]:
    return _by_column(conn, "path", paths)


def count(conn: sqlite3.Connection) -> int:
    return conn.execute("SELECT COUNT(*) FROM images").fetchone()[0]


def all_ids(conn: sqlite3.Connection) -> list[int]:
    return [row[0] for row in conn.execute("SELECT id FROM images ORDER BY id")]


def resolve_paths(paths: Iterable[str]) -> list[str]:
    """The form in which paths are stored: absolute for existing files, as given otherwise."""
    return [str(Path(p).resolve()) if os.path.exists(p) else str(p) for p in paths]
