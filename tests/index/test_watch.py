"""Watching a folder: a real `cfcd index sync --watch` (change events, and the polling fallback)
and a real `cfcd serve --watch DIR` keep the index in step while the folder changes."""

from __future__ import annotations

import os
import shutil
import signal
import subprocess
import sys
import time

import httpx
import pytest

from cfcd.cli import main
from cfcd.index import Index
from servers import serve_process, textured

pytest.importorskip("watchdog", reason="watching a folder needs watchdog: pip install 'watchdog>=4.0'")


def build(capsys, checkpoint, photos, root, n: int = 3) -> None:
    for i in range(n):
        textured(photos / f"p{i}.jpg", seed=i, size=(120, 90))
    args = ["index", "build", str(root), str(photos), "--model", str(checkpoint), "--scales", "1"]
    if str(root).endswith(".db"):  # in a process of its own: Milvus Lite lets one process open the data
        subprocess.run([sys.executable, "-m", "cfcd", *args], check=True, capture_output=True)
        return
    assert main(args) == 0
    capsys.readouterr()


def until(condition, timeout: float, what: str):
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if found := condition():
            return found
        time.sleep(0.1)
    raise AssertionError(f"{what} within {timeout} s")


# Exec'd with SIGINT ignored, as a background job of a script starts (Python then leaves it
# ignored). Not a preexec_fn: forking a process with threads (gRPC's, of the Milvus tests) and
# running Python in the child before exec can hang it.
IGNORING_SIGINT = ("import os, signal, sys; signal.signal(signal.SIGINT, signal.SIG_IGN); "
                   "os.execv(sys.executable, [sys.executable, *sys.argv[1:]])")


@pytest.mark.parametrize("poll, stop", [(False, signal.SIGINT), (True, signal.SIGTERM)], ids=["events", "polling"])
def test_sync_watch_follows_the_folder(checkpoint, tmp_path, capsys, poll, stop):
    """Also: Ctrl-C (SIGINT, even when started ignoring it) and SIGTERM stop it cleanly."""
    photos, root = tmp_path / "photos", tmp_path / "idx"
    build(capsys, checkpoint, photos, root)
    log = tmp_path / "watch.log"
    with open(log, "w") as out:
        proc = subprocess.Popen([sys.executable, "-c", IGNORING_SIGINT, "-m", "cfcd", "index", "sync", str(root),
                                 str(photos), "--watch", *(["--poll"] if poll else [])], stdout=out,
                                stderr=subprocess.STDOUT, env={**os.environ, "OMP_NUM_THREADS": "1"})
    try:
        until(lambda: "unchanged 3" in log.read_text(), 60, "the first sync")
        (photos / "sub").mkdir()
        shutil.move(photos / "p0.jpg", photos / "sub" / "p0.jpg")
        time.sleep(0.3)  # a burst of changes, closer together than the quiet second a batch waits for
        textured(photos / "sub" / "new.jpg", seed=9, size=(120, 90))
        time.sleep(0.3)
        (photos / "p2.jpg").unlink()
        until(lambda: Index.load(root).generation == 2, 30, "one sync of the three changes")
        time.sleep(2)  # a batch: no second version for the same changes
        index = Index.load(root)
        assert index.generation == 2 and sorted(p for ps in index.paths(index.ids()).values() for p in ps) == [
            str(photos / "p1.jpg"), str(photos / "sub" / "new.jpg"), str(photos / "sub" / "p0.jpg")]
    finally:
        proc.send_signal(stop)
        try:
            proc.wait(20)
        except subprocess.TimeoutExpired:
            proc.kill()  # no process left behind; the test fails below
            proc.wait()
    text = log.read_text()
    assert "added 1, removed 1, moved 1, changed 0, unchanged 1, unreadable 0; 1 extracted" in text, text
    assert "Traceback" not in text and proc.returncode == 0


@pytest.mark.parametrize("engine", ["faiss", "milvus"])
def test_a_served_index_shows_an_added_photo_within_10_s(checkpoint, tmp_path, capsys, engine):
    if engine == "milvus":
        pytest.importorskip("pymilvus", reason="the Milvus engine needs pymilvus: pip install 'cfcd[milvus]'")
        pytest.importorskip("milvus_lite", reason="Milvus Lite needs milvus-lite: pip install 'cfcd[milvus]'")
    photos, root = tmp_path / "photos", tmp_path / ("photos.db" if engine == "milvus" else "idx")
    build(capsys, checkpoint, photos, root)
    with serve_process(root, "--watch", str(photos)) as server:
        added = textured(tmp_path / "elsewhere" / "new.jpg", seed=7, size=(120, 90))
        shutil.copyfile(added, photos / "new.jpg")
        start = time.monotonic()

        def found():
            with open(added, "rb") as f:
                hits = httpx.post(server.url + "/search", files={"image": ("q.jpg", f, "image/jpeg")},
                                  data={"k": "1"}, timeout=30).json()["results"]
            return hits and hits[0]["path"] == str(photos / "new.jpg")

        until(found, 10, "the added photo in the served search")
        assert time.monotonic() - start < 10
