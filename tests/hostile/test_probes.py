"""Every probe of issue 11 gets its documented status (docs/serving.md), never a 500."""

from __future__ import annotations

import socket

import httpx
import pytest
from probes import FORMS, PATHS, encoded, picture, uploads

from servers import serve_process


@pytest.fixture(scope="module")
def server(tiny_index):
    with serve_process(tiny_index, "--workers", "1") as server:  # default limits
        yield server


def post(url: str, data: bytes, **form) -> httpx.Response:
    return httpx.post(f"{url}/search", files={"image": ("q.bin", data, "application/octet-stream")}, data=form, timeout=120)


def test_uploads(server):
    wrong = {}
    for name, (data, status) in uploads().items():
        res = post(server.url, data, k="3")
        body = res.json()
        if res.status_code != status or res.headers["content-type"] != "application/json":
            wrong[name] = (res.status_code, res.text[:200])
        elif status != 200 and not body["detail"]:
            wrong[name] = "no reason given"
        elif status == 200 and len(body["results"]) != 3:
            wrong[name] = body
    assert not wrong, wrong


def test_form_fields(server):
    image = encoded(picture(), "PNG")
    wrong = {name: (res.status_code, res.text[:200]) for name, (form, status) in FORMS.items()
             if (res := post(server.url, image, **form)).status_code != status}
    assert not wrong, wrong
    assert "finite" in post(server.url, image, bbox="nan,0,10,10").json()["detail"]


def test_requests_without_a_proper_upload(server):
    assert httpx.post(f"{server.url}/search", data={"k": "3"}).status_code == 422
    assert httpx.post(f"{server.url}/search", json={"image": "x"}).status_code == 422
    chunked = httpx.post(f"{server.url}/search", content=iter([b"--x\r\n", b"junk"]),
                         headers={"content-type": "multipart/form-data; boundary=x"})
    assert chunked.status_code == 411
    for length in (str(2**70), "-5", "12abc"):
        assert raw_status(server.url, b"POST /search HTTP/1.1\r\nHost: 127.0.0.1\r\n"
                          b"Content-Type: multipart/form-data; boundary=x\r\nContent-Length: " + length.encode()
                          + b"\r\n\r\n--x") in (400, 413), length


def raw_status(url: str, request: bytes) -> int:
    """The status a server answers to bytes no HTTP client library would send."""
    host, port = url.split("//")[1].split(":")
    with socket.create_connection((host, int(port)), timeout=30) as sock:
        sock.sendall(request)
        return int(sock.recv(4096).split(b" ", 2)[1])


def test_paths(server):
    wrong = {}
    with httpx.Client(base_url=server.url) as client:
        for path, statuses in PATHS.items():
            req = client.build_request("GET", "/")
            req.url = req.url.copy_with(raw_path=path.encode())  # exactly as written, no normalisation
            res = client.send(req)
            if res.status_code not in statuses or "root:" in res.text:
                wrong[path] = (res.status_code, res.text[:200])
    assert not wrong, wrong


def test_foreign_host_header(server):
    res = httpx.get(f"{server.url}/health", headers={"Host": "rebound.attacker.example"})
    assert res.status_code == 400 and "--allowed-hosts" in res.json()["detail"]
