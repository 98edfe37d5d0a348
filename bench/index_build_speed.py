"""How fast the default CPU path indexes and answers, against ``--runtime torch``, in one run (issue 32).

    .venv/bin/python bench/index_build_speed.py                      # everything: about 15 min on 2 idle cores
    .venv/bin/python bench/index_build_speed.py --limit 10 --phone-photos 2 --passes 1 --requests 4   # a quick check

1. **Index build**: images/s of ``cfcd index build OUT IMAGES`` in a fresh process per pass, on
   instances-hard (``../shared/data/instances-hard/images``, 289 photos <= 1024 px) and on the phone
   library (``bench/phone_library.py``'s copies of instances-dev photos as 12, 24 and 48 Mpx JPEGs),
   per configuration, passes alternating between configurations:

     torch          ``--runtime torch`` (decode threads as by default)
     auto           the defaults: onnxruntime on a CPU, several images at once, each decoded and
                    run by a thread of its own (``--image-threads``, default min(cores, 4))
     auto-one       ``--image-threads 1``: one image at a time on every core, decoded by a thread
                    beside the network
     auto-serial    ``--image-threads 1 --decode-threads 0``: decoding in turn with the network
                    (before issue 32.2)
     auto-process   ``--workers 1``: one decoding process, one image at a time
     auto-threads2  ``--image-threads 1 --decode-threads 2``

   Per pass: wall s, images/s, CPU s (user + system of the child and what it waited for,
   ``os.wait4``) and peak resident memory (``ru_maxrss`` of the child). The graph cache starts
   empty; a one-image build exports the graph before the timed passes (its time is printed). ``--cores
   2,4,8,16`` repeats the builds pinned to the first N usable cores (what the thread rules,
   ``cfcd.data.prefetch.image_threads`` and ``decode_threads``, see as the machine). Then the last torch and auto indexes
   of instances-hard are compared (every image a query, top 10; ``bench/runtime_speed.compare``).
2. **Search from a cold start**: wall time of ``cfcd search INDEX photo.jpg`` in a fresh process
   (start-up, index and model load, graph from the warm cache, one query), per runtime, median of
   ``--repeats``.
3. **Serving**: a real ``cfcd serve INDEX`` per runtime (torch's default threads); ``POST /search``
   with instances-hard photos in turn, at 1 and 4 concurrent clients, ``--requests`` per client
   after one warm-up query: p50 / p95 latency and requests/s.

Timings are worth something only on an otherwise idle machine: the load average at the start
is printed.
"""

from __future__ import annotations

import argparse
import os
import platform
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path

HERE = Path(__file__).resolve().parent
sys.path[:0] = [str(HERE), str(HERE.parent / "tests")]  # its sibling scripts, tests/servers.py
from runtime_speed import DEFAULT_IMAGES, build, compare  # noqa: E402

CONFIGS = {
    "torch": ("torch", ()),
    "auto": ("auto", ()),
    "auto-one": ("auto", ("--image-threads", "1")),
    "auto-serial": ("auto", ("--image-threads", "1", "--decode-threads", "0")),
    "auto-process": ("auto", ("--decode-threads", "0", "--workers", "1")),
    "auto-threads2": ("auto", ("--image-threads", "1", "--decode-threads", "2")),
}
DEFAULT_CONFIGS = "torch,auto,auto-one,auto-serial"


def first_images(images: Path, limit: int | None, folder: Path) -> Path:
    """``images``, or a folder of links to its first ``limit`` images (in ``list_images`` order)."""
    from cfcd.data.images import list_images

    if not limit:
        return images
    folder.mkdir(parents=True)
    for i, path in enumerate(list_images(images)[:limit]):
        (folder / f"{i:04d}{path.suffix}").symlink_to(path.resolve())
    return folder


def build_table(name: str, images: Path, configs: list[str], passes: int, cores_list: list, env: dict, out: Path) -> dict:
    """Prints the per-pass rows and a summary per core count; returns {config: last index dir}."""
    from cfcd.data.images import list_images

    n = len(list_images(images))
    usable = sorted(os.sched_getaffinity(0))
    last = {}
    print(f"\n### `cfcd index build` on {name} ({n} images)\n")
    print("| cores | pass | configuration | wall s | images/s | CPU s | CPU s / image | peak RSS MiB |")
    print("|---:|---:|---|---:|---:|---:|---:|---:|")
    summary = []
    for cores in cores_list:
        pinned = usable[:cores] if cores else None
        label = cores or len(usable)
        rows = []
        for i in range(passes):
            for config in configs:
                runtime, extra = CONFIGS[config]
                index = out / f"{name}-{label}-{config}-{i}"
                r = build(images, index, runtime, env, extra, pinned)
                last[config] = index
                rows.append((config, r))
                print(f"| {label} | {i + 1} | {config} | {r['wall']:.1f} | {n / r['wall']:.2f} | {r['cpu']:.1f} "
                      f"| {r['cpu'] / n:.3f} | {r['rss']:.0f} |", flush=True)
                for w in r["warnings"]:
                    print(f"warning: {w}")
        for config in configs:
            passes_of = [r for c, r in rows if c == config]
            best = min(passes_of, key=lambda r: r["wall"])
            summary.append((label, config, n / best["wall"], min(r["cpu"] for r in passes_of) / n,
                            max(r["rss"] for r in passes_of)))
    print(f"\nFastest pass per configuration ({name}):\n")
    print("| cores | configuration | images/s | least CPU s / image | peak RSS MiB | vs torch |")
    print("|---:|---|---:|---:|---:|---:|")
    for label, config, rate, cpu, rss in summary:
        torch_rate = next((r for lb, c, r, _, _ in summary if lb == label and c == "torch"), None)
        ratio = f"{rate / torch_rate:.2f}x" if torch_rate else ""
        print(f"| {label} | {config} | {rate:.2f} | {cpu:.3f} | {rss:.0f} | {ratio} |")
    return last


def cold_search(index: Path, photo: Path, env: dict, repeats: int) -> None:
    print(f"\n### `cfcd search INDEX {photo.name}` from a cold start (median of {repeats})\n")
    print("| --runtime | wall s (median) | min | max |\n|---|---:|---:|---:|")
    for runtime in ("torch", "auto"):
        walls = []
        for _ in range(repeats):
            start = time.perf_counter()
            subprocess.run([sys.executable, "-m", "cfcd", "search", str(index), str(photo), "--runtime", runtime],
                           env=env, check=True, capture_output=True)
            walls.append(time.perf_counter() - start)
        print(f"| {runtime} | {statistics.median(walls):.2f} | {min(walls):.2f} | {max(walls):.2f} |", flush=True)


def percentile(values: list[float], q: float) -> float:
    """The q-quantile (0..1), nearest rank."""
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, max(0, round(q * len(ordered)) - 1))]


def serve_latency(index: Path, photos: list[Path], requests: int) -> None:
    import httpx
    from servers import serve_process

    print(f"\n### `POST /search` against `cfcd serve` ({requests} requests per client, after one warm-up)\n")
    print("| --runtime | clients | p50 ms | p95 ms | requests/s |\n|---|---:|---:|---:|---:|")
    payloads = [(p.name, p.read_bytes()) for p in photos]
    for runtime in ("torch", "auto"):
        with serve_process(index, "--runtime", runtime, one_thread=False, startup=600) as server:
            url = f"{server.url}/search"

            def ask(client, k):
                name, data = payloads[k % len(payloads)]
                start = time.perf_counter()
                client.post(url, files={"image": (name, data, "image/jpeg")}, timeout=600).raise_for_status()
                return time.perf_counter() - start

            with httpx.Client() as client:
                ask(client, 0)  # warm-up: the first query loads what the server loads lazily
            for clients in (1, 4):
                latencies, lock = [], threading.Lock()

                def one_client(c):
                    with httpx.Client() as client:
                        for k in range(requests):
                            t = ask(client, c * requests + k)
                            with lock:
                                latencies.append(t)

                start = time.perf_counter()
                workers = [threading.Thread(target=one_client, args=(c,)) for c in range(clients)]
                for w in workers:
                    w.start()
                for w in workers:
                    w.join()
                wall = time.perf_counter() - start
                if len(latencies) != clients * requests:
                    raise SystemExit(f"{runtime}, {clients} clients: {len(latencies)} of {clients * requests} requests answered")
                print(f"| {runtime} | {clients} | {1000 * percentile(latencies, 0.5):.0f} "
                      f"| {1000 * percentile(latencies, 0.95):.0f} | {len(latencies) / wall:.2f} |", flush=True)


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--images", type=Path, default=DEFAULT_IMAGES, help="the instances-hard images (default: %(default)s)")
    p.add_argument("--limit", type=int, default=None, help="only the first N images of --images (a quick check)")
    p.add_argument("--phone-photos", type=int, default=8, help="source photos of the phone library, 3 JPEGs each "
                   "(default 8; 0: skip it)")
    p.add_argument("--configs", default=DEFAULT_CONFIGS, help=f"build configurations, of {', '.join(CONFIGS)} "
                   f"(default {DEFAULT_CONFIGS})")
    p.add_argument("--passes", type=int, default=2, help="passes per configuration (default 2)")
    p.add_argument("--cores", default="0", help="comma-separated core counts to pin the builds to; 0: all (default)")
    p.add_argument("--repeats", type=int, default=5, help="cold-start searches per runtime (default 5)")
    p.add_argument("--requests", type=int, default=20, help="POST /search per client (default 20)")
    args = p.parse_args()
    configs = args.configs.split(",")
    if unknown := set(configs) - set(CONFIGS):
        raise SystemExit(f"--configs: unknown {', '.join(sorted(unknown))}; choose among {', '.join(CONFIGS)}")
    cores_list = [int(c) for c in args.cores.split(",")]
    if max(cores_list) > len(os.sched_getaffinity(0)):
        raise SystemExit(f"--cores {args.cores}: this process may use {len(os.sched_getaffinity(0))} cores")
    from cfcd.data.images import list_images
    from phone_library import make_library, source_photos

    with tempfile.TemporaryDirectory() as tmp:
        tmp = Path(tmp)
        # The children (builds, searches, the server) share an empty graph cache and the defaults.
        os.environ["CFCD_CACHE"] = str(tmp / "cache")
        os.environ.pop("CFCD_RUNTIME", None)
        env = {k: v for k, v in os.environ.items() if k != "OMP_NUM_THREADS"}
        print(f"machine: {platform.processor() or platform.machine()}, {os.cpu_count()} cores, load average at start "
              f"{os.getloadavg()[0]:.1f}; Python {platform.python_version()}")
        print("command: .venv/bin/python bench/index_build_speed.py " + " ".join(sys.argv[1:]))
        hard = first_images(args.images, args.limit, tmp / "hard")
        # The graph is exported and checked once per model, before the timed passes.
        r = build(first_images(hard, 1, tmp / "one"), tmp / "export", "auto", env)
        print(f"\nfirst use of the default model with onnxruntime (graph export and check, one image): {r['wall']:.1f} s wall, "
              f"{r['cpu']:.1f} CPU s")
        last = build_table("instances-hard", hard, configs, args.passes, cores_list, env, tmp)
        if "torch" in last and "auto" in last:
            c = compare(last["torch"], last["auto"])
            print(f"\n{c['queries']} queries (every image), top 10, torch index vs auto index: same ranking "
                  f"{c['same_top']}/{c['queries']}, max score difference {c['score_diff']:.2e}; min cosine between "
                  f"the runtimes' descriptors {c['cosine_min']:.7f}")
        if args.phone_photos:
            start = time.perf_counter()
            library, _ = make_library(source_photos(args.phone_photos), tmp / "phone")
            print(f"\nphone library: {3 * args.phone_photos} JPEGs (12, 24, 48 Mpx) written in "
                  f"{time.perf_counter() - start:.0f} s")
            build_table("the phone library", library, configs, args.passes, cores_list, env, tmp)
        index = last.get("auto") or next(iter(last.values()))
        photos = list_images(hard)
        cold_search(index, photos[0], env, args.repeats)
        serve_latency(index, photos, args.requests)
    return 0


if __name__ == "__main__":
    sys.exit(main())
