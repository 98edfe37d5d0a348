"""The API key never reaches the server's log, however clients send it."""

from __future__ import annotations

import httpx
from probes import encoded, picture

from servers import serve_process

KEY = "k3y-that-must-not-leak-7f1c"


def test_key_never_in_the_log(tiny_index):
    image = {"image": ("q.png", encoded(picture(), "PNG"), "image/png")}
    with serve_process(tiny_index, "--api-key", KEY) as server:
        with httpx.Client(base_url=server.url, timeout=60) as client:
            hit = client.post("/search", files=image, headers={"X-API-Key": KEY}).json()["results"][0]
            assert client.post("/session", headers={"X-API-Key": KEY}).status_code == 204
            assert client.get(f"/thumbnails/{hit['id']}?size=64").status_code == 200
            assert client.get(f"/images/{hit['id']}").status_code == 200
        # A careless client puts the key in the URL; it does not authorise, and is not logged.
        assert httpx.get(f"{server.url}/images/{hit['id']}?api_key={KEY}").status_code == 401
        assert httpx.get(f"{server.url}/health?token={KEY}").status_code == 200
        assert httpx.post(f"{server.url}/search", files=image, headers={"X-API-Key": KEY + "x"}).status_code == 401
        log = server.output()
    assert f"/thumbnails/{hit['id']}" in log and "/health?[redacted]" in log  # the access log was written
    assert KEY not in log
