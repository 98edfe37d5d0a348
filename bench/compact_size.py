"""What `cfcd index compact` gives back after half of an index's images are removed.

    .venv/bin/python bench/compact_size.py --images 4000 --dim 2560

For each engine (a FAISS directory, a Milvus Lite ``.db``): ``--images`` random unit
descriptors of ``--dim`` dimensions (the default model's size) written as a `cfcd extract`
directory, `cfcd index build` from it, `cfcd index remove` of every other image, then
`cfcd index compact`, each a real command in its own process. Prints the bytes on disk after
the build, after the removal and after the compaction, the reduction the compaction made, and
whether 100 queries rank the remaining images exactly as before it (ids and scores).
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

from cfcd.index import Index
from cfcd.index.store import disk_bytes


def command(*args) -> str:
    out = subprocess.run([sys.executable, "-m", "cfcd", *map(str, args)], capture_output=True, text=True, check=False)
    if out.returncode:
        raise SystemExit(f"cfcd {' '.join(map(str, args))} failed: {out.stderr}")
    return out.stdout


def features(path: Path, n: int, dim: int) -> np.ndarray:
    x = np.random.default_rng(0).standard_normal((n, dim)).astype(np.float32)
    x /= np.linalg.norm(x, axis=1, keepdims=True)
    path.mkdir()
    np.save(path / "shard-00000.npy", x)
    model = {"name": "synthetic", "config": {"backbone": "none"}, "dim": dim}
    manifest = {"format": "cfcd-features", "version": 1, "model": model, "scales": [1.0], "max_side": None,
                "dtype": "float32", "count": n, "ids": [f"img{i}" for i in range(n)],
                "shards": [{"file": "shard-00000.npy", "start": 0, "count": n}], "failed": []}
    (path / "manifest.json").write_text(json.dumps(manifest))
    return x


def ranking(location, queries: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    index = Index.load(location)
    found = index.search(queries, k=10)
    index.close()
    return found.ids, found.scores


def one(location: Path, feats: Path, n: int, queries: np.ndarray) -> dict:
    command("index", "build", location, feats)
    built = disk_bytes(location)
    command("index", "remove", location, *[f"img{i}" for i in range(0, n, 2)])
    removed = disk_bytes(location)
    ids, scores = ranking(location, queries)
    start = time.perf_counter()
    report = json.loads(command("index", "compact", location, "--json"))
    seconds = time.perf_counter() - start
    after = disk_bytes(location)
    new_ids, new_scores = ranking(location, queries)
    same = bool((new_ids == ids).all() and np.allclose(new_scores, scores, atol=1e-5))
    return {"built": built, "removed": removed, "compacted": after, "reported": report["reclaimed"],
            "smaller": 1 - after / removed, "same": same, "seconds": seconds}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--images", type=int, default=4000)
    parser.add_argument("--dim", type=int, default=2560)
    args = parser.parse_args()
    print("| engine | images | after build | after removing half | after compact | smaller | same results | compact s |")
    print("|---|---|---|---|---|---|---|---|")
    with tempfile.TemporaryDirectory() as tmp:
        tmp = Path(tmp)
        x = features(tmp / "feats", args.images, args.dim)
        queries = x[1::2][:100] + 0.05 * np.random.default_rng(1).standard_normal((100, args.dim)).astype(np.float32)
        queries /= np.linalg.norm(queries, axis=1, keepdims=True)
        for engine, name in (("FAISS", "photos.idx"), ("Milvus Lite", "photos.db")):
            r = one(tmp / name, tmp / "feats", args.images, queries)
            mb = lambda b: f"{b / 1e6:.1f} MB"  # noqa: E731
            print(f"| {engine} | {args.images} | {mb(r['built'])} | {mb(r['removed'])} | {mb(r['compacted'])} "
                  f"| {100 * r['smaller']:.0f} % | {'yes' if r['same'] else 'NO'} | {r['seconds']:.1f} |")


if __name__ == "__main__":
    main()
