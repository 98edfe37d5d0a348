"""HTTP(S) downloads that resume and verify: model weights and dataset files."""

from __future__ import annotations

import hashlib
import os
import urllib.error
import urllib.request
from pathlib import Path

from tqdm import tqdm

from .errors import Unavailable

CHUNK = 1 << 20


class DownloadError(Unavailable):
    """A download that failed or whose content does not match its checksum."""


def sha256sum(path: str | Path) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(CHUNK), b""):
            h.update(block)
    return h.hexdigest()


def verify(path: str | Path, sha256: str | None) -> None:
    """``sha256`` may be the full digest or a prefix (torchvision names files by prefix)."""
    if sha256 and not sha256sum(path).startswith(sha256.lower()):
        raise DownloadError(f"{path}: checksum mismatch (expected sha256 {sha256}...); delete it and download again")


def download(url: str, dest: str | Path, sha256: str | None = None, progress: bool = True, timeout: float = 60) -> Path:
    """Download ``url`` to ``dest`` unless it is already there and verified.

    Bytes arrive in ``dest + '.part'``; an interrupted download continues from there with an
    HTTP Range request (a server that ignores Range makes it start over). The file is renamed
    to ``dest`` only once complete and verified.
    """
    dest = Path(dest)
    if dest.is_file():
        verify(dest, sha256)
        return dest
    dest.parent.mkdir(parents=True, exist_ok=True)
    part = dest.with_name(dest.name + ".part")
    have = part.stat().st_size if part.exists() else 0
    request = urllib.request.Request(url, headers={"Range": f"bytes={have}-"} if have else {})
    try:
        response = urllib.request.urlopen(request, timeout=timeout)
    except urllib.error.HTTPError as err:
        if err.code == 416 and have:  # the .part file is already complete
            response = None
        else:
            raise DownloadError(f"{url}: HTTP {err.code} {err.reason}") from err
    except (urllib.error.URLError, OSError) as err:
        raise DownloadError(f"{url}: cannot connect ({err}); check the network or place the file at {dest}") from err
    if response is not None:
        with response:
            resumed = have and response.status == 206
            if not resumed:
                have = 0
            length = response.headers.get("Content-Length")
            total = have + int(length) if length else None
            with open(part, "ab" if resumed else "wb") as f, tqdm(
                total=total, initial=have, unit="B", unit_scale=True, desc=dest.name, disable=not progress
            ) as bar:
                for block in iter(lambda: response.read(CHUNK), b""):
                    f.write(block)
                    bar.update(len(block))
    try:
        verify(part, sha256)
    except DownloadError:
        part.unlink()
        raise
    os.replace(part, dest)
    return dest
