"""A real `cfcd serve` process on a free localhost port, over a small index."""

from __future__ import annotations

import contextlib
import os
import signal
import socket
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import httpx
import numpy as np
import pytest
import torch
from PIL import Image

LIMITS = ["--max-upload-mb", "1", "--max-pixels", "1000000"]


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def textured(path: Path, seed: int, size=(96, 72)) -> Path:
    """A small picture with structure (blobs on a gradient), so descriptors differ."""
    rng = np.random.default_rng(seed)
    h, w = size[1], size[0]
    yy, xx = np.mgrid[0:h, 0:w]
    img = np.stack([xx * 255 / w, yy * 255 / h, np.full((h, w), 128)], -1)
    for _ in range(4):
        cx, cy, r = rng.uniform(0, w), rng.uniform(0, h), rng.uniform(5, 20)
        img[(xx - cx) ** 2 + (yy - cy) ** 2 < r * r] = rng.integers(0, 256, 3)
    path.parent.mkdir(parents=True, exist_ok=True)
    Image.fromarray(img.astype(np.uint8)).save(path)
    return path


@pytest.fixture(scope="session")
def served_index(tmp_path_factory) -> Path:
    """An index of 12 generated images made with a tiny random model (checkpoint on disk)."""
    from cfcd.index import Index
    from cfcd.model import CFCDNet, ModelConfig, load_model, save_checkpoint

    root = tmp_path_factory.mktemp("serve")
    torch.manual_seed(0)
    save_checkpoint(root / "tiny.pt", CFCDNet(ModelConfig("mobilenet_v2", dim=0)))
    model = load_model(root / "tiny.pt")
    images = [textured(root / "photos" / f"p{i:02d}.png", seed=i) for i in range(12)]
    index = Index(model.output_dim)
    index.add_images(model, images, scales=(1.0,), progress=False)
    index.save(root / "idx")
    return root / "idx"


@contextlib.contextmanager
def run_server(index: Path, *extra: str):
    port = free_port()
    env = {**os.environ, "PYTHONUNBUFFERED": "1", "OMP_NUM_THREADS": "1"}
    cmd = [sys.executable, "-m", "cfcd", "serve", str(index), "--port", str(port), *LIMITS, *extra]
    # A file, not a pipe: nobody reads a pipe while the tests run, and a full one blocks the server.
    log = tempfile.TemporaryFile("w+")
    proc = subprocess.Popen(cmd, stdout=log, stderr=subprocess.STDOUT, env=env, text=True)
    url = f"http://127.0.0.1:{port}"

    def output() -> str:
        log.seek(0)
        return log.read()

    try:
        deadline = time.monotonic() + 90
        while True:
            if proc.poll() is not None:
                raise RuntimeError(f"cfcd serve exited with {proc.returncode}:\n{output()}")
            try:
                if httpx.get(url + "/health", timeout=2).status_code == 200:
                    break
            except httpx.TransportError:
                pass
            if time.monotonic() > deadline:
                raise RuntimeError(f"cfcd serve did not answer /health within 90 s:\n{output()}")
            time.sleep(0.2)
        yield url
        if "Traceback" in output():
            raise AssertionError(f"cfcd serve logged an exception:\n{output()[-4000:]}")
    finally:
        proc.send_signal(signal.SIGINT)
        try:
            proc.wait(10)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()
        log.close()


@pytest.fixture(scope="session")
def server(served_index) -> str:
    with run_server(served_index) as url:
        yield url


@pytest.fixture(scope="session")
def photos(served_index) -> list[Path]:
    return sorted((served_index.parent / "photos").glob("*.png"))


@pytest.fixture(scope="session")
def start_server():
    """run_server(index, *extra cfcd serve options) as a context manager yielding the URL."""
    return run_server
