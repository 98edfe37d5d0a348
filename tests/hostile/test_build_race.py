"""Two `cfcd index build` processes racing for one new path: one index, complete, and a clear
error for the other (issue 11: both exited 0 and the second silently replaced the first)."""

from __future__ import annotations

import os
import subprocess
import sys

from cfcd.index import Index


def test_two_builds_of_one_path(tiny_checkpoint, collection, tmp_path):
    target = tmp_path / "idx"
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    cmd = [sys.executable, "-m", "cfcd", "index", "build", str(target), str(collection), "--model", str(tiny_checkpoint),
           "--scales", "1"]
    procs = [subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=env) for _ in range(2)]
    results = [(p.wait(300), *p.communicate()) for p in procs]
    codes = sorted(rc for rc, _, _ in results)
    assert codes == [0, 2], results
    loser = next(err for rc, _, err in results if rc == 2)
    assert "Traceback" not in loser and str(target) in loser and "exists" in loser, loser
    index = Index.load(target)
    assert len(index) == len(list(collection.glob("*.png"))) and index.generation == 1
