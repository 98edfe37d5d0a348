"""Images/s of ``cfcd index build`` with ``--runtime torch`` and with the default (``auto``:
onnxruntime on a CPU), in one run, and whether the two indexes rank alike.

Each pass runs ``python -m cfcd index build OUT IMAGES --runtime R`` in a fresh process, in the
order torch, auto, torch, auto ... with an empty graph cache at the start, so the first auto pass
includes the one-time export and check of the model's graph. Per pass: wall time (the whole
command: start-up, model load, extraction, index write), images/s, CPU time (user + system) and
peak resident memory of the process (``os.wait4``). Then the last index of each runtime is
searched with its own stored descriptors and with the other's (every image a query, top 10).

    .venv/bin/python bench/runtime_speed.py [--images ../shared/data/instances-hard/images] [--passes 3]
"""

from __future__ import annotations

import argparse
import os
import platform
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

HERE = Path(__file__).resolve().parent
DEFAULT_IMAGES = HERE.parent.parent / "shared" / "data" / "instances-hard" / "images"


def build(images: Path, out: Path, runtime: str, env: dict, extra: tuple = (), cores: list[int] | None = None) -> dict:
    """One ``cfcd index build`` (with ``extra`` options) in a child process, on ``cores`` when
    given (its affinity: what it sees as its cores): wall s, CPU s, peak RSS MiB (of the child, or
    of a decoding process it waited for, whichever is larger)."""
    argv = [sys.executable, "-m", "cfcd", "index", "build", str(out), str(images), "--runtime", runtime, *extra]
    start = time.perf_counter()
    pin = (lambda: os.sched_setaffinity(0, cores)) if cores else None
    child = subprocess.Popen(argv, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, preexec_fn=pin)
    _, status, usage = os.wait4(child.pid, 0)
    wall = time.perf_counter() - start
    err = child.stderr.read().decode()
    if os.waitstatus_to_exitcode(status) != 0:
        raise SystemExit(f"{' '.join(argv)} failed:\n{err[-2000:]}")
    warnings = [line for line in err.splitlines() if "PyTorch instead" in line]
    return {"wall": wall, "cpu": usage.ru_utime + usage.ru_stime, "rss": usage.ru_maxrss / 1024, "warnings": warnings}


def compare(a_dir: Path, b_dir: Path, k: int = 10) -> dict:
    """Every indexed image as a query: top-k of index a with a's descriptors vs index b with b's,
    and index a with b's descriptors (the other runtime's queries)."""
    from cfcd.index import Index

    a, b = Index.load(a_dir), Index.load(b_dir)
    paths_a = {i: r.path for i, r in a.records(a.ids()).items()}
    by_path_b = {r.path: i for i, r in b.records(b.ids()).items()}
    ids_a = np.array(sorted(paths_a))
    ids_b = np.array([by_path_b[paths_a[i]] for i in ids_a])
    da, db = a.descriptors(ids_a), b.descriptors(ids_b)
    own_a, own_b, cross = a.search(da, k), b.search(db, k), a.search(db, k)

    def ranked(result):
        return [[result.records[int(x)].path for x in row if x >= 0] for row in result.ids]

    ra, rb, rc = ranked(own_a), ranked(own_b), ranked(cross)
    found = own_a.ids >= 0  # fewer than k images: the rest of a row is padding (score -inf)
    return {"queries": len(ids_a), "cosine_min": float((da * db).sum(1).min()),
            "same_top": sum(x == y for x, y in zip(ra, rb)), "same_top_cross": sum(x == y for x, y in zip(ra, rc)),
            "score_diff": float(np.abs(own_a.scores[found] - own_b.scores[found]).max()),
            "score_diff_cross": float(np.abs(own_a.scores[found] - cross.scores[found]).max())}


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--images", type=Path, default=DEFAULT_IMAGES)
    p.add_argument("--passes", type=int, default=3, help="passes per runtime, alternating (default 3; the first "
                   "auto pass exports the graph)")
    args = p.parse_args()
    from cfcd.data.images import list_images

    n = len(list_images(args.images))
    with tempfile.TemporaryDirectory() as tmp:
        env = {**os.environ, "CFCD_CACHE": str(Path(tmp) / "cache")}
        env.pop("CFCD_RUNTIME", None)
        print(f"machine: {platform.processor() or platform.machine()}, {os.cpu_count()} cores, load average at start "
              f"{os.getloadavg()[0]:.1f}; Python {platform.python_version()}")
        print(f"command: .venv/bin/python bench/runtime_speed.py --images {args.images} --passes {args.passes}")
        print(f"{n} images; graph cache empty at the start\n")
        print("| pass | --runtime | wall s | images/s | CPU s | peak RSS MiB |\n|---:|---|---:|---:|---:|---:|")
        rows = []
        for i in range(args.passes):
            for runtime in ("torch", "auto"):
                r = build(args.images, Path(tmp) / f"{runtime}-{i}", runtime, env)
                rows.append((runtime, i, r))
                note = " (exports the graph)" if runtime == "auto" and i == 0 else ""
                print(f"| {i + 1} | {runtime}{note} | {r['wall']:.1f} | {n / r['wall']:.2f} | {r['cpu']:.1f} | {r['rss']:.0f} |",
                      flush=True)
                for w in r["warnings"]:
                    print(f"warning: {w}")
        # The first auto pass pays the one-time export: compare the passes with a warm cache.
        warm = [(name, r) for name, i, r in rows if not (name == "auto" and i == 0)]
        best = {rt: min(r["wall"] for name, r in warm if name == rt) for rt in ("torch", "auto")}
        cpu = {rt: min(r["cpu"] for name, r in warm if name == rt) / n for rt in ("torch", "auto")}
        print(f"\nfastest pass with a warm graph cache: torch {n / best['torch']:.2f} images/s, auto "
              f"{n / best['auto']:.2f} images/s ({best['torch'] / best['auto']:.2f}x); least CPU per image: torch "
              f"{cpu['torch']:.3f} s, auto {cpu['auto']:.3f} s ({cpu['torch'] / cpu['auto']:.2f}x)")
        last = args.passes - 1
        c = compare(Path(tmp) / f"torch-{last}", Path(tmp) / f"auto-{last}")
        print(f"{c['queries']} queries (every image), top 10: same ranking {c['same_top']}/{c['queries']}, "
              f"max score difference {c['score_diff']:.2e}; torch index searched with auto's descriptors: same "
              f"ranking {c['same_top_cross']}/{c['queries']}, max score difference {c['score_diff_cross']:.2e}; "
              f"min cosine between the two runtimes' descriptors {c['cosine_min']:.7f}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
