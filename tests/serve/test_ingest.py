"""Uploads and deletions over HTTP against a real `cfcd serve --upload-dir` process: the key,
content deduplication, paths, a write racing searches, and a killed server."""

from __future__ import annotations

import os
import shutil
import signal
import threading
from pathlib import Path

import httpx
import pytest

from servers import textured

KEY = {"X-API-Key": "wr1te"}


@pytest.fixture(scope="module")
def writable_process(served_index, tmp_path_factory, start_process):
    """One server for the whole module (each start costs seconds of imports): on a copy of the
    index, with an upload directory and a key."""
    root = tmp_path_factory.mktemp("ingest")
    shutil.copytree(served_index, root / "idx")
    with start_process(root / "idx", "--api-key", KEY["X-API-Key"], "--upload-dir", str(root / "uploads")) as proc:
        yield proc, root


@pytest.fixture(scope="module")
def writable(writable_process):
    proc, root = writable_process
    return proc.url, root


def upload(url, data: bytes, name="new.png", headers=KEY, **form):
    return httpx.post(f"{url}/images", files={"image": (name, data, "image/png")}, data=form, headers=headers, timeout=120)


def health(url) -> dict:
    return httpx.get(f"{url}/health").json()


def test_writes_need_the_key(writable, tmp_path):
    url, root = writable
    data = textured(tmp_path / "a.png", seed=101).read_bytes()
    assert upload(url, data, headers={}).status_code == 401
    assert upload(url, data, headers={"X-API-Key": "nope"}).status_code == 401
    assert httpx.delete(f"{url}/images/0").status_code == 401
    assert health(url)["images"] == 12 and not (root / "uploads").exists()


def test_upload_adds_once_and_serves_it(writable, tmp_path, photos):
    url, root = writable
    before = health(url)
    assert before["writable"] is True
    data = textured(tmp_path / "b.png", seed=102).read_bytes()
    res = upload(url, data)
    assert res.status_code == 201, res.text
    body = res.json()
    assert body["added"] is True and body["index_version"] > before["index_version"]
    stored = Path(body["path"])
    assert stored.parent == (root / "uploads").resolve() and stored.read_bytes() == data
    # Readers see the new version at once: the image, its thumbnail, the count, the search.
    assert health(url)["images"] == 13
    assert httpx.get(f"{url}/images/{body['id']}", headers=KEY).content == data
    hits = httpx.post(f"{url}/search", files={"image": ("q.png", data, "image/png")}, data={"k": "13"},
                      headers=KEY, timeout=60).json()["results"]
    assert any(h["id"] == body["id"] and h["score"] > 0.9999 for h in hits)
    # The same bytes again, or a photo indexed from elsewhere: its id, nothing stored twice.
    again = upload(url, data, name="other-name.png")
    assert again.status_code == 200 and again.json() == {**body, "added": False}
    indexed = upload(url, photos[5].read_bytes())
    assert indexed.status_code == 200 and indexed.json()["path"] == str(photos[5].resolve())
    assert sorted(p.name for p in (root / "uploads").iterdir()) == [stored.name]
    assert health(url)["images"] == 13


def test_upload_to_a_relative_path(writable, tmp_path):
    url, root = writable
    data = textured(tmp_path / "c.png", seed=103).read_bytes()
    res = upload(url, data, path="trips/2024/c.png")
    assert res.status_code == 201, res.text
    assert (root / "uploads" / "trips" / "2024" / "c.png").read_bytes() == data
    other = textured(tmp_path / "d.png", seed=104).read_bytes()
    taken = upload(url, other, path="trips/2024/c.png")
    assert taken.status_code == 409 and "already exists" in taken.json()["detail"]
    for bad in ("../escape.png", "/etc/x.png", "a/../../b.png", "a\\b.png", "."):
        res = upload(url, other, path=bad)
        assert res.status_code == 400 and "relative path" in res.json()["detail"], (bad, res.text)
    assert not (root / "escape.png").exists()
    folders = httpx.get(f"{url}/folders", headers=KEY).json()["folders"]
    assert {"folder": "trips/2024", "images": 1} in [{**f, "folder": f["folder"].split("uploads/")[-1]} for f in folders]


def test_bad_uploads_store_nothing(writable):
    url, root = writable
    before = sorted((root / "uploads").rglob("*")) if (root / "uploads").exists() else []
    res = upload(url, b"not an image at all")
    assert res.status_code == 400 and "not a readable image" in res.json()["detail"]
    assert upload(url, b"").status_code == 400
    assert httpx.post(f"{url}/images", headers=KEY).status_code == 422
    after = sorted((root / "uploads").rglob("*")) if (root / "uploads").exists() else []
    assert before == after


def test_delete(writable, tmp_path):
    url, _ = writable
    added = upload(url, textured(tmp_path / "e.png", seed=105).read_bytes()).json()
    count = health(url)["images"]
    res = httpx.delete(f"{url}/images/{added['id']}", headers=KEY)
    assert res.status_code == 200 and res.json()["removed"] == [added["id"]]
    assert health(url)["images"] == count - 1
    assert httpx.get(f"{url}/images/{added['id']}", headers=KEY).status_code == 404
    assert httpx.get(f"{url}/images/{added['id']}/similar", headers=KEY).status_code == 404
    assert httpx.delete(f"{url}/images/{added['id']}", headers=KEY).status_code == 404
    for bad in ("-1", "abc", str(2**63)):
        assert httpx.delete(f"{url}/images/{bad}", headers=KEY).status_code == 422


def test_a_write_racing_searches(writable, tmp_path, photos):
    """Searches during an upload all succeed, each on one whole version (its result count is
    the count of that version), and versions only move forward."""
    url, _ = writable
    seen, errors, stop = [[], []], [], threading.Event()

    def searching(mine: list):
        with httpx.Client(headers=KEY, timeout=120) as client:
            while not stop.is_set():
                res = client.post(f"{url}/search", files={"image": ("q.png", photos[1].read_bytes(), "image/png")},
                                  data={"k": "1000"})
                if res.status_code != 200:
                    errors.append(res.text)
                    return
                body = res.json()
                mine.append((body["index_version"], len(body["results"])))

    threads = [threading.Thread(target=searching, args=(mine,)) for mine in seen]
    for t in threads:
        t.start()
    start = health(url)
    new = [upload(url, textured(tmp_path / f"r{i}.png", seed=200 + i).read_bytes()) for i in range(2)]
    stop.set()
    for t in threads:
        t.join()
    assert not errors and all(r.status_code == 201 for r in new)
    assert all(seen) and all(a[0] <= b[0] for mine in seen for a, b in zip(mine, mine[1:]))
    # One result count per version (every image is a result at k=1000): no search saw half a write.
    counts = {}
    for version, n in seen[0] + seen[1]:
        counts.setdefault(version, set()).add(n)
    assert all(len(n) == 1 for n in counts.values()) and min(counts) >= start["index_version"]
    assert health(url)["images"] == start["images"] + 2


def test_a_killed_server_loses_no_published_image(writable_process, tmp_path):
    """Last in this module: it kills the module's server (after the writes of the tests above,
    which must all be on disk too)."""
    from cfcd.index import Index

    proc, root = writable_process
    before = health(proc.url)["images"]
    data = textured(tmp_path / "k.png", seed=300).read_bytes()
    added = upload(proc.url, data)
    assert added.status_code == 201, added.text
    os.kill(proc.proc.pid, signal.SIGKILL)  # no shutdown, no flush: what was answered is on disk
    proc.proc.wait()
    index = Index.load(root / "idx")
    image_id = added.json()["id"]
    assert len(index) == before + 1 and Path(index.records([image_id])[image_id].path).read_bytes() == data
