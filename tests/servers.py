"""A real `cfcd serve` process on a free localhost port, and images to feed it."""

from __future__ import annotations

import contextlib
import os
import signal
import socket
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path

import httpx
import numpy as np
from PIL import Image


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


@dataclass
class ServeProcess:
    url: str
    proc: subprocess.Popen
    log_path: Path

    def output(self) -> str:
        return self.log_path.read_text(errors="replace")

    def rss_bytes(self, field: str = "VmRSS") -> int:
        """Resident memory of the server process (VmHWM: its peak so far), from /proc."""
        for line in Path(f"/proc/{self.proc.pid}/status").read_text().splitlines():
            if line.startswith(field + ":"):
                return int(line.split()[1]) * 1024
        raise KeyError(field)


@contextlib.contextmanager
def serve_process(index: Path, *args: str, startup: float = 120, one_thread: bool = True) -> ServeProcess:
    """Run `cfcd serve INDEX ARGS` until the block ends; its stdout and stderr go to a log file.
    Fails the block if the server logged a traceback. ``one_thread``: the network on one thread
    (tests share the machine); False: torch's default threads, whatever $OMP_NUM_THREADS says (benchmarks)."""
    port = free_port()
    env = {**os.environ, "PYTHONUNBUFFERED": "1", "OMP_NUM_THREADS": "1"}
    if not one_thread:
        del env["OMP_NUM_THREADS"]
    cmd = [sys.executable, "-m", "cfcd", "serve", str(index), "--port", str(port), *args]
    # A file, not a pipe: nobody reads a pipe while the tests run, and a full one blocks the server.
    log_dir = tempfile.TemporaryDirectory(prefix="cfcd-serve-log-")
    log_path = Path(log_dir.name) / "serve.log"
    with open(log_path, "w") as log:
        proc = subprocess.Popen(cmd, stdout=log, stderr=subprocess.STDOUT, env=env, text=True)
    server = ServeProcess(f"http://127.0.0.1:{port}", proc, log_path)
    try:
        deadline = time.monotonic() + startup
        while True:
            if proc.poll() is not None:
                raise RuntimeError(f"cfcd serve exited with {proc.returncode}:\n{server.output()}")
            try:
                if httpx.get(server.url + "/health", timeout=2).status_code == 200:
                    break
            except httpx.TransportError:
                pass
            if time.monotonic() > deadline:
                raise RuntimeError(f"cfcd serve did not answer /health within {startup:.0f} s:\n{server.output()}")
            time.sleep(0.2)
        yield server
        if "Traceback" in server.output():
            raise AssertionError(f"cfcd serve logged an exception:\n{server.output()[-4000:]}")
    finally:
        if proc.poll() is None:
            proc.send_signal(signal.SIGINT)
            try:
                proc.wait(10)
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait()
        log_dir.cleanup()
