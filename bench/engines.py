"""FAISS vs Milvus Lite behind `cfcd.Index`: add rate, queries/s and recall@10 against exact.

    python bench/engines.py                    # 100k synthetic 512-d descriptors, 1000 queries
    python bench/engines.py --n 20000 --threads 1

Everything goes through `cfcd.Index` as `cfcd index build` / `cfcd search` use it: adding is
`Index.add` + `save` (FAISS: training, adding and writing a version; Milvus: inserting the rows
into the collection and publishing them, index building included), searching is
`Index.search` on the saved index loaded again, all queries in one call and, for latency, one
query per call. Descriptors are the clustered synthetic ones of bench/index_scale.py; the
reference for recall@10 is exact inner-product search over the same vectors.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import tempfile
import time

import numpy as np
from index_scale import clustered, recall_at

from cfcd.index import ImageRecord, Index

# (label, location suffix, factory, search note)
SETTINGS = [
    ("FAISS Flat (exact)", ".idx", "Flat", ""),
    ("FAISS HNSW32", ".idx", "HNSW32", "efSearch 16 (faiss default)"),
    ("Milvus Lite FLAT", ".db", "FLAT", ""),
    ("Milvus Lite HNSW M=32", ".db", "HNSW:M=32,efConstruction=200", "ef 128"),
    ("Milvus Lite IVF_FLAT", ".db", "IVF_FLAT:nlist={nlist}", "nprobe 16"),
]


def run(label: str, location: str, factory: str, x: np.ndarray, q: np.ndarray, exact: np.ndarray, k: int) -> dict:
    records = [ImageRecord(path=str(i)) for i in range(len(x))]  # names, not files: nothing to hash
    start = time.perf_counter()
    index = Index(x.shape[1], factory=factory, location=location)
    index.add(x, records)
    index.save(location)
    add_s = time.perf_counter() - start
    index.close()
    index = Index.load(location)
    start = time.perf_counter()
    ids = index.search(q, k).ids
    batch_qps = len(q) / (time.perf_counter() - start)
    single = q[:20]
    start = time.perf_counter()
    for row in single:
        index.search(row[None], k)
    single_ms = 1000 * (time.perf_counter() - start) / len(single)
    index.close()
    row = {"setting": label, "factory": factory, "add_s": add_s, "adds_per_s": len(x) / add_s, "batch_qps": batch_qps,
           "single_query_ms": single_ms, "recall@10": recall_at(ids, exact, k)}
    print(f"  {label:24s} add {row['adds_per_s']:8.0f}/s, {batch_qps:8.0f} queries/s batched, "
          f"{single_ms:6.1f} ms per single query, recall@10 {row['recall@10']:.3f}", flush=True)
    return row


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--n", type=int, default=100_000)
    p.add_argument("--dim", type=int, default=512)
    p.add_argument("--queries", type=int, default=1000)
    p.add_argument("--threads", type=int, default=0, help="FAISS OpenMP threads (default: all cores)")
    p.add_argument("--skip", default="", help="comma-separated setting labels to skip")
    p.add_argument("--json", help="write the results to this file")
    args = p.parse_args()

    import faiss

    if args.threads:
        faiss.omp_set_num_threads(args.threads)
    centres = np.random.default_rng(0).standard_normal((10_000, args.dim)).astype(np.float32)
    centres /= np.linalg.norm(centres, axis=1, keepdims=True)
    x, _ = clustered(args.n, args.dim, centres, seed=1)
    q, _ = clustered(args.queries, args.dim, centres, seed=2)
    exact = np.argsort(-(q @ x.T), axis=1, kind="stable")[:, :10]
    nlist = max(16, int(4 * np.sqrt(args.n)))
    env = {"faiss": faiss.__version__, "threads": faiss.omp_get_max_threads(), "cpus": os.cpu_count(),
           "command": "python " + " ".join(sys.argv)}
    print(f"{args.n} x {args.dim}-d, {args.queries} queries; faiss {env['faiss']}, {env['threads']} threads, {env['cpus']} CPUs")
    rows = []
    with tempfile.TemporaryDirectory() as tmp:
        for n, (label, suffix, factory, note) in enumerate(SETTINGS):
            if label in args.skip.split(","):
                continue
            rows.append({**run(label, os.path.join(tmp, f"bench{n}{suffix}"), factory.format(nlist=nlist), x, q, exact, 10),
                         "search": note})
    print(f"\n{args.n} x {args.dim}-d descriptors, {args.queries} queries, k=10")
    print("| engine, index | search | add + save (images/s) | queries/s (one call) | ms per single query | recall@10 vs exact |")
    print("|---|---|---:|---:|---:|---:|")
    for r in rows:
        print(f"| {r['setting']} (`{r['factory']}`) | {r['search'] or 'exact'} | {r['adds_per_s']:.0f} | {r['batch_qps']:.0f} | "
              f"{r['single_query_ms']:.1f} | {r['recall@10']:.3f} |")
    if args.json:
        with open(args.json, "w") as f:
            json.dump({"env": env, "n": args.n, "dim": args.dim, "queries": args.queries, "rows": rows}, f, indent=1)


if __name__ == "__main__":
    main()
