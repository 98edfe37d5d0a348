"""100 concurrent clients: every answer is 200 or 503 with Retry-After, none an error or a
timeout, and /health answers within a second throughout."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import threading
from concurrent.futures import ThreadPoolExecutor

import httpx
from probes import encoded, picture

from servers import serve_process

CLIENTS = 100
# Times GET /health every 50 ms until a line arrives on stdin; prints the times as JSON.
POLL_HEALTH = """
import json, sys, threading, time
import httpx
stop = threading.Event()
threading.Thread(target=lambda: (sys.stdin.readline(), stop.set()), daemon=True).start()
times = []
with httpx.Client(timeout=30) as client:
    while not stop.is_set():
        start = time.perf_counter()
        assert client.get(sys.argv[1] + "/health").status_code == 200
        times.append(time.perf_counter() - start)
        time.sleep(0.05)
print(json.dumps(times))
"""


def test_hundred_clients_get_200_or_503(tiny_index):
    query = encoded(picture((320, 240)), "JPEG")
    # One worker and a short queue, so that a hundred clients surely overflow it.
    with serve_process(tiny_index, "--workers", "1", "--queue", "4") as server:
        barrier = threading.Barrier(CLIENTS)

        def client(i: int) -> list[tuple[int, str | None]]:
            # Real clients run elsewhere: this load generator must not take the server's CPU.
            os.setpriority(os.PRIO_PROCESS, threading.get_native_id(), 19)
            out = []
            with httpx.Client(timeout=120) as http:
                barrier.wait()
                for _ in range(2):
                    res = http.post(f"{server.url}/search", files={"image": ("q.jpg", query, "image/jpeg")}, data={"k": "3"})
                    out.append((res.status_code, res.headers.get("retry-after")))
            return out

        # /health is timed from another process, so the clients' threads do not slow the timer.
        poller = subprocess.Popen([sys.executable, "-c", POLL_HEALTH, server.url], stdin=subprocess.PIPE,
                                  stdout=subprocess.PIPE, text=True)
        try:
            with ThreadPoolExecutor(CLIENTS) as pool:
                answers = [a for part in pool.map(client, range(CLIENTS)) for a in part]
        finally:
            health_times = json.loads(poller.communicate("stop\n", timeout=60)[0])
        statuses = [s for s, _ in answers]
        assert set(statuses) == {200, 503}, sorted(set(statuses))
        assert all(retry is not None and int(retry) >= 1 for s, retry in answers if s == 503)
        assert len(health_times) > 5 and max(health_times) < 1.0, max(health_times)
        # The server is idle again: the queue drained and nothing stayed admitted.
        assert httpx.post(f"{server.url}/search", files={"image": ("q.jpg", query, "image/jpeg")}, timeout=60).status_code == 200
