"""The HTTP service, run as a real uvicorn process and used over HTTP."""

from __future__ import annotations

import io
import threading
import time
from concurrent.futures import ThreadPoolExecutor

import httpx
import numpy as np
from PIL import Image


def search(url, path_or_bytes, name="q.png", timeout=60, **form):
    data = path_or_bytes if isinstance(path_or_bytes, bytes) else path_or_bytes.read_bytes()
    return httpx.post(f"{url}/search", files={"image": (name, data, "image/png")},
                      data={k: str(v) for k, v in form.items()}, timeout=timeout)


def finds_itself(hits, path) -> bool:
    """The query's own file is among the hits with the top score (a random model ties a lot)."""
    own = [h for h in hits if h["path"] == str(path.resolve())]
    return bool(own) and own[0]["score"] >= hits[0]["score"] - 1e-4 and abs(own[0]["score"] - 1) < 1e-4


def png_bytes(w, h, color=(200, 30, 30)) -> bytes:
    out = io.BytesIO()
    Image.new("RGB", (w, h), color).save(out, "PNG")
    return out.getvalue()


def test_health_and_openapi(server):
    health = httpx.get(f"{server}/health").json()
    assert health["status"] == "ok" and health["images"] == 12 and health["api_key_required"] is False
    assert health["projection"] is None and health["learn"] is False  # learning is opt-in (issue 29)
    schema = httpx.get(f"{server}/openapi.json").json()
    assert {"/search", "/images/{image_id}", "/thumbnails/{image_id}", "/health"} <= set(schema["paths"])


def test_search_returns_ranked_hits(server, photos):
    res = search(server, photos[3], k=5)
    assert res.status_code == 200, res.text
    body = res.json()
    hits = body["results"]
    assert len(hits) == 5 and [h["rank"] for h in hits] == [1, 2, 3, 4, 5]
    assert finds_itself(hits, photos[3])
    assert all(a["score"] >= b["score"] for a, b in zip(hits, hits[1:]))
    assert hits[0]["thumbnail_url"] == f"/thumbnails/{hits[0]['id']}"
    crop = search(server, photos[3], k=3, bbox="10,10,60,50").json()
    assert crop["query"]["bbox"] == [10, 10, 60, 50] and len(crop["results"]) == 3


def test_upload_limit_is_within_the_decoders():
    from cfcd.data.decoding import DEFAULT_MAX_PIXELS as DECODER
    from cfcd.serve.settings import DEFAULT_MAX_PIXELS

    assert DEFAULT_MAX_PIXELS <= DECODER


def test_search_without_k_returns_the_default_number(server, photos):
    from cfcd.serve.settings import DEFAULT_K

    body = search(server, photos[0]).json()
    assert DEFAULT_K < 12 and body["k"] == DEFAULT_K and len(body["results"]) == DEFAULT_K


def test_images_and_thumbnails(server, photos):
    hit = next(h for h in search(server, photos[0], k=12).json()["results"] if h["path"] == str(photos[0].resolve()))
    full = httpx.get(f"{server}/images/{hit['id']}")
    assert full.status_code == 200 and full.content == photos[0].read_bytes()
    assert full.headers["content-type"] == "image/png"
    thumb = httpx.get(f"{server}/thumbnails/{hit['id']}?size=64")
    assert thumb.headers["content-type"] == "image/jpeg"
    assert max(Image.open(io.BytesIO(thumb.content)).size) == 64
    assert httpx.get(f"{server}/thumbnails/{hit['id']}?size=5000").status_code == 400


def test_bad_uploads_get_clear_4xx(server):
    cases = {
        "not an image": (search(server, b"hello, I am text", name="x.jpg"), 400, "not an image"),
        "empty": (search(server, b"", name="e.jpg"), 400, "empty"),
        "truncated": (search(server, png_bytes(50, 50)[:60]), 400, "not"),
        "bad bbox": (search(server, png_bytes(50, 50), bbox="3,4,1,2"), 400, "bbox"),
        "bbox outside": (search(server, png_bytes(50, 50), bbox="0,0,500,500"), 400, "outside"),
        "empty crop": (search(server, png_bytes(50, 50), bbox="10,10,10.2,30"), 400, "empty crop box"),
        "bad k": (search(server, png_bytes(50, 50), k=0), 422, ""),
        "no file": (httpx.post(f"{server}/search", data={"k": "3"}), 422, ""),
    }
    for name, (res, status, words) in cases.items():
        assert res.status_code == status, (name, res.status_code, res.text)
        assert res.headers["content-type"] == "application/json", name
        assert words in str(res.json()["detail"]), (name, res.text)


def test_oversized_uploads_refused(server):
    big_canvas = png_bytes(1200, 1000)  # 1.2 Mpx, a small file: over the pixel limit
    assert len(big_canvas) < 100_000
    res = search(server, big_canvas)
    assert res.status_code == 413 and "1000000 pixels" in res.json()["detail"]
    noise = np.random.default_rng(0).integers(0, 256, (700, 700, 3), dtype=np.uint8)
    out = io.BytesIO()
    Image.fromarray(noise).save(out, "PNG")  # ~1.5 MB, under the pixel limit
    res = search(server, out.getvalue())
    assert res.status_code == 413 and "bytes" in res.json()["detail"]


def test_no_path_from_the_client_reaches_the_filesystem(server):
    for path in ["/images/../../etc/passwd", "/images/%2e%2e%2f%2e%2e%2fetc%2fpasswd", "/images/..%2F..%2Fetc%2Fpasswd",
                 "/thumbnails/%2Fetc%2Fpasswd", "/images/abc", "/images/1.5", "/images/-1", "/images/999999",
                 "/static/../../../../etc/passwd", "/static/%2e%2e/%2e%2e/%2e%2e/etc/passwd", "/images/0;ls"]:
        res = httpx.get(server + path)
        assert res.status_code in (404, 422), (path, res.status_code)
        assert "root:" not in res.text, path
    raw = httpx.Client(base_url=server)
    req = raw.build_request("GET", "/")
    req.url = req.url.copy_with(raw_path=b"/images/../../../etc/passwd")
    res = raw.send(req)
    assert res.status_code in (404, 422) and "root:" not in res.text


def test_concurrent_queries_are_served(server, photos):
    def one(i):
        res = search(server, photos[i % len(photos)], k=12, timeout=120)
        return res.status_code, finds_itself(res.json()["results"], photos[i % len(photos)])

    health_times = []
    stop = threading.Event()

    def poll_health():
        while not stop.is_set():
            t = time.perf_counter()
            httpx.get(f"{server}/health", timeout=30)
            health_times.append(time.perf_counter() - t)
            time.sleep(0.05)

    poller = threading.Thread(target=poll_health)
    poller.start()
    with ThreadPoolExecutor(8) as pool:
        results = list(pool.map(one, range(16)))
    stop.set()
    poller.join()
    assert all(status == 200 for status, _ in results)
    assert all(found for _, found in results)
    # The event loop stays free while queries are extracted in threads.
    assert health_times and min(health_times) < 1.0


def test_api_key(served_index, photos, start_server):
    with start_server(served_index, "--api-key", "s3cret") as url:
        assert httpx.get(f"{url}/health").json()["api_key_required"] is True
        assert httpx.get(f"{url}/").status_code == 200
        res = search(url, photos[1], k=2)
        assert res.status_code == 401 and "API key" in res.json()["detail"]
        data = {"image": ("q.png", photos[1].read_bytes(), "image/png")}
        wrong = httpx.post(f"{url}/search", files=data, headers={"X-API-Key": "nope"})
        assert wrong.status_code == 401
        ok = httpx.post(f"{url}/search", files=data, headers={"X-API-Key": "s3cret"}, timeout=60)
        assert ok.status_code == 200
        image_id = ok.json()["results"][0]["id"]
        assert httpx.get(f"{url}/thumbnails/{image_id}").status_code == 401
        # A key in the URL is not a key: it would end up in logs and browser history.
        assert httpx.get(f"{url}/thumbnails/{image_id}?api_key=s3cret").status_code == 401
        assert httpx.get(f"{url}/thumbnails/{image_id}", headers={"X-API-Key": "s3cret"}).status_code == 200
        # Non-ASCII keys are compared as bytes, not a 500.
        assert httpx.get(f"{url}/session", headers={"X-API-Key": "s\u00e9cret".encode()}).status_code == 401
        with httpx.Client(base_url=url) as browser:
            assert browser.post("/session", headers={"X-API-Key": "nope"}).status_code == 401
            assert not browser.cookies
            opened = browser.post("/session", headers={"X-API-Key": "s3cret"})
            assert opened.status_code == 204
            cookie = opened.headers["set-cookie"].lower()
            assert "httponly" in cookie and "samesite=strict" in cookie and "s3cret" not in cookie
            assert browser.get("/session").status_code == 204
            assert browser.get(f"/thumbnails/{image_id}").status_code == 200
            assert browser.get(f"/images/{image_id}").status_code == 200
            assert browser.post("/search", files=data, timeout=60).status_code == 200
        forged = httpx.get(f"{url}/images/{image_id}", cookies={"cfcd_session": "s3cret"})
        assert forged.status_code == 401


def test_host_header_must_name_this_server(server):
    assert httpx.get(f"{server}/health", headers={"Host": "localhost:1234"}).status_code == 200
    res = httpx.get(f"{server}/health", headers={"Host": "attacker.example:8000"})
    assert res.status_code == 400 and "--allowed-hosts" in res.json()["detail"]
    assert httpx.get(f"{server}/", headers={"Host": "attacker.example"}).status_code == 400


def test_allowed_hosts_option(served_index, start_server):
    with start_server(served_index, "--allowed-hosts", "search.example,127.0.0.1") as url:
        assert httpx.get(f"{url}/health", headers={"Host": "search.example"}).status_code == 200
        assert httpx.get(f"{url}/health", headers={"Host": "localhost"}).status_code == 400
