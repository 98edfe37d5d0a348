"""`cfcd serve --runtime onnx`: the graph is made at start-up, and queries score as PyTorch's do."""

from __future__ import annotations

import os
from pathlib import Path

import httpx
import pytest

pytest.importorskip("onnxruntime")


def scores(url: str, photo: Path) -> dict[int, float]:
    res = httpx.post(f"{url}/search", files={"image": ("q.png", photo.read_bytes(), "image/png")},
                     data={"k": "12"}, timeout=120)
    assert res.status_code == 200, res.text
    return {h["id"]: h["score"] for h in res.json()["results"]}


def test_a_server_on_onnxruntime_answers_as_one_on_pytorch(served_index, photos, start_server):
    graphs = Path(os.environ["CFCD_CACHE"]) / "onnx"
    before = set(graphs.glob("*.onnx"))
    with start_server(served_index, "--runtime", "onnx") as url:
        assert len(set(graphs.glob("*.onnx")) - before) == 1  # exported while starting, before any query
        on_onnx = [scores(url, p) for p in photos[:2]]
    with start_server(served_index, "--runtime", "torch") as url:
        on_torch = [scores(url, p) for p in photos[:2]]
    for a, b in zip(on_onnx, on_torch):
        assert a.keys() == b.keys() and max(abs(a[i] - b[i]) for i in a) < 1e-4
