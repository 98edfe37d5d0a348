"""`cfcd index build` / `search` / `serve` on Milvus: a Milvus Lite .db, and one collection on a
Milvus server (`milvus-lite server` on loopback) shared by two `cfcd serve` processes."""

from __future__ import annotations

import json
import subprocess
import sys
import time
from pathlib import Path

import httpx
import pytest
from milvus_server import milvus_server

pytest.importorskip("pymilvus", reason="the Milvus engine needs pymilvus: pip install 'cfcd[milvus]'")
pytest.importorskip("milvus_lite", reason="Milvus Lite needs milvus-lite: pip install 'cfcd[milvus]'")


def search(url: str, photo: Path, k: int) -> httpx.Response:
    return httpx.post(f"{url}/search", files={"image": (photo.name, photo.read_bytes(), "image/png")},
                      data={"k": str(k)}, timeout=60)


def finds_itself(hits: list[dict], photo: Path) -> bool:
    """The query's own file is among the hits with the top score, 1 (the tiny random model
    gives near-ties, so all 12 images are asked for)."""
    return any(h["path"] == str(photo.resolve()) and h["score"] >= hits[0]["score"] - 1e-4 > 1 - 2e-4 for h in hits)


def cfcd(*args, check=True) -> subprocess.CompletedProcess:
    proc = subprocess.run([sys.executable, "-m", "cfcd", *map(str, args)], capture_output=True, text=True, timeout=600)
    if check:
        assert proc.returncode == 0, proc.stderr
    return proc


def image_list(path: Path, images) -> Path:
    path.write_text("".join(f"{p}\n" for p in images))
    return path


def test_build_search_and_serve_a_milvus_lite_file(tmp_path, served_index, photos, start_server):
    db = tmp_path / "photos.db"
    model = served_index.parent / "tiny.pt"
    built = cfcd("index", "build", db, photos[0].parent, "--model", model, "--scales", "1")
    assert "added 12 images" in built.stdout
    info = json.loads(cfcd("index", "info", db, "--json").stdout)
    assert (info["engine"], info["images"], info["factory"]) == ("milvus", 12, "FLAT")
    hits = json.loads(cfcd("search", db, photos[4], "-k", "12", "--json").stdout)[0]["results"]
    assert finds_itself(hits, photos[4])
    with start_server(db) as url:
        assert httpx.get(f"{url}/health").json()["images"] == 12
        res = search(url, photos[7], k=12)
        assert res.status_code == 200, res.text
        hits = res.json()["results"]
        assert finds_itself(hits, photos[7])
        own = next(h for h in hits if h["path"] == str(photos[7].resolve()))
        assert httpx.get(f"{url}{own['image_url']}").content == photos[7].read_bytes()
        assert httpx.get(f"{url}{own['thumbnail_url']}").headers["content-type"] == "image/jpeg"
        # Milvus Lite lets one process open a data directory: a writer is told how to share it.
        busy = cfcd("index", "add", db, photos[0].parent, check=False)
        assert busy.returncode == 2 and "milvus-lite server" in busy.stderr


def test_two_servers_on_one_collection_see_each_write(tmp_path, served_index, photos, start_server):
    model = served_index.parent / "tiny.pt"
    with milvus_server(tmp_path / "shared.db") as address:
        uri = f"milvus://{address}/photos"
        cfcd("index", "build", uri, image_list(tmp_path / "first.txt", photos[:10]), "--model", model, "--scales", "1")
        with start_server(uri) as a, start_server(uri) as b:
            assert [httpx.get(f"{u}/health").json()["images"] for u in (a, b)] == [10, 10]
            # A third process writes; each server's next search after its reload check sees it.
            added = cfcd("index", "add", uri, image_list(tmp_path / "more.txt", photos[10:]))
            assert "added 2 images" in added.stdout
            deadline = time.monotonic() + 30
            while [httpx.get(f"{u}/health").json()["images"] for u in (a, b)] != [12, 12]:
                assert time.monotonic() < deadline, "a server did not pick up the new version"
                time.sleep(0.2)
            answers = [search(u, photos[11], k=12).json() for u in (a, b)]
            assert all(finds_itself(ans["results"], photos[11]) for ans in answers)
            assert answers[0]["results"] == answers[1]["results"]
            assert answers[0]["index_version"] == answers[1]["index_version"] == 2


def test_browse_similar_upload_and_delete_on_milvus_lite(tmp_path, served_index, photos, start_server):
    """The server writes to the Milvus Lite file it serves (one process holds it)."""
    from servers import textured

    db = tmp_path / "photos.db"
    cfcd("index", "build", db, image_list(tmp_path / "first.txt", photos[:6]), "--model", served_index.parent / "tiny.pt",
         "--scales", "1")
    with start_server(db, "--upload-dir", str(tmp_path / "up")) as url:
        items = httpx.get(f"{url}/images", params={"limit": 4}).json()
        assert items["total"] == 6 and len(items["items"]) == 4
        own = items["items"][0]["id"]
        hits = httpx.get(f"{url}/images/{own}/similar", params={"k": 10}, timeout=60).json()["results"]
        assert len(hits) == 5 and own not in [h["id"] for h in hits]
        assert httpx.get(f"{url}/images/99999/similar").status_code == 404
        data = textured(tmp_path / "new.png", seed=400).read_bytes()
        added = httpx.post(f"{url}/images", files={"image": ("new.png", data, "image/png")}, timeout=120)
        assert added.status_code == 201, added.text
        new_id = added.json()["id"]
        assert httpx.get(f"{url}/health").json()["images"] == 7
        assert httpx.get(f"{url}/images/{new_id}").content == data
        assert httpx.delete(f"{url}/images/{new_id}").status_code == 200
        assert httpx.get(f"{url}/images/{new_id}").status_code == 404
        assert httpx.get(f"{url}/health").json()["images"] == 6
