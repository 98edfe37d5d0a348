"""Real `cfcd` processes stopped at a named point of a write (``CFCD_FAILPOINT``: the process
SIGSTOPs itself there, ``cfcd.failpoints.failpoint``), checked, then killed (SIGKILL)."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from pathlib import Path

from cfcd.failpoints import FAILPOINT_ENV


def cfcd(*args) -> list[str]:
    return [sys.executable, "-m", "cfcd", *map(str, args)]


def start(*args, failpoint: str | None = None) -> subprocess.Popen:
    env = {**os.environ, FAILPOINT_ENV: failpoint} if failpoint else None
    return subprocess.Popen(cfcd(*args), stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=env)


def wait_stopped(proc: subprocess.Popen, timeout: float = 120) -> None:
    """Until ``proc`` has stopped itself at its failpoint."""
    deadline = time.monotonic() + timeout
    while Path(f"/proc/{proc.pid}/stat").read_text().split(") ")[1][0] != "T":
        assert proc.poll() is None, proc.communicate()
        assert time.monotonic() < deadline, "the writer never reached its failpoint"
        time.sleep(0.01)


def kill(proc: subprocess.Popen) -> None:
    os.kill(proc.pid, signal.SIGKILL)
    proc.wait()
