"""Index settings at scale: build time, memory per image, queries/s and recall@10 vs exact.

    python bench/index_scale.py                 # 1M synthetic 512-d descriptors (long: HNSW build)
    python bench/index_scale.py --n 100000      # a quick run
    python bench/index_scale.py --real ../shared/data/instances-dev   # + re-ranking on real photos

Synthetic descriptors are clustered (unit vectors around 10k random centres), as real image
descriptors are; uniform random vectors would understate every approximate index. Queries are
new draws from the same distribution, not database vectors. Memory per image is the size of
the serialized FAISS index divided by n (what `cfcd index` writes and loads).
"""

from __future__ import annotations

import argparse
import os
import time

import numpy as np

from cfcd.index import ImageRecord, Index

# (label, factory, search parameters applied with faiss.ParameterSpace)
SETTINGS = [
    ("Flat (exact)", "Flat", ""),
    ("IVF-PQ64 nprobe=16", "IVF{nlist},PQ64", "nprobe=16"),
    ("IVF-PQ64 nprobe=64", "IVF{nlist},PQ64", "nprobe=64"),
    ("IVF-Flat nprobe=16", "IVF{nlist},Flat", "nprobe=16"),
    ("HNSW32 ef=64", "HNSW32", "efSearch=64"),
    ("HNSW32 ef=256", "HNSW32", "efSearch=256"),
]


def clustered(n: int, d: int, centres: np.ndarray, seed: int, noise: float = 0.6) -> np.ndarray:
    rng = np.random.default_rng(seed)
    out = np.empty((n, d), np.float32)
    for start in range(0, n, 100_000):
        m = min(100_000, n - start)
        x = centres[rng.integers(0, len(centres), m)] + noise / np.sqrt(d) * rng.standard_normal((m, d)).astype(np.float32)
        out[start:start + m] = x / np.linalg.norm(x, axis=1, keepdims=True)
    return out


def recall_at(approx: np.ndarray, exact: np.ndarray, k: int = 10) -> float:
    return float(np.mean([len(set(a[:k]) & set(e[:k])) / k for a, e in zip(approx, exact)]))


def bench(x: np.ndarray, q: np.ndarray, settings, k: int = 10) -> list[dict]:
    import faiss

    records = [ImageRecord(path=str(i)) for i in range(len(x))]  # names, not files: nothing to hash
    rows, exact, built = [], None, {}
    for label, factory, params in settings:
        factory = factory.format(nlist=max(16, int(4 * np.sqrt(len(x)))))
        if factory not in built:
            start = time.perf_counter()
            index = Index(x.shape[1], factory=factory)
            index.add(x, records)
            built[factory] = (index, time.perf_counter() - start, len(faiss.serialize_index(index.faiss)) / len(x))
        index, build_s, bytes_per = built[factory]
        if params:
            faiss.ParameterSpace().set_index_parameters(index.faiss, params)
        start = time.perf_counter()
        ids = index.faiss.search(q, k)[1]
        qps = len(q) / (time.perf_counter() - start)
        exact = ids if exact is None else exact
        rows.append({"setting": label, "factory": factory, "build_s": build_s, "bytes_per_image": bytes_per,
                     "qps": qps, "recall@10": recall_at(ids, exact, k)})
        print(f"  {label:22s} done", flush=True)
    return rows


def print_table(rows: list[dict], title: str) -> None:
    print(f"\n{title}")
    print(f"| setting | factory | build (s) | bytes / image | queries/s | recall@10 vs exact |")
    print("|---|---|---:|---:|---:|---:|")
    for r in rows:
        print(f"| {r['setting']} | `{r['factory']}` | {r['build_s']:.1f} | {r['bytes_per_image']:.0f} | "
              f"{r['qps']:.0f} | {r['recall@10']:.3f} |")


def real_descriptors(folder: str, cache: str) -> tuple[np.ndarray, list[str]]:
    """Descriptors of instances-dev with the README's reference settings, and identities."""
    from pathlib import Path

    from cfcd import extract, load_model
    from cfcd.data.images import list_images

    images = list_images(Path(folder) / "images")
    labels = [p.parent.name for p in images]
    if cache and os.path.exists(cache):
        return np.load(cache), labels
    x = extract(load_model("default"), images, scales=(0.7071, 1.0, 1.4142), max_side=512, num_workers=1)
    if cache:
        np.save(cache, x)
    return x, labels


def leave_one_out_map(x: np.ndarray, labels: list[str], qe: int = 0, dba: int = 0, alpha: float = 3.0) -> float:
    """mAP (revisitop AP) with every image a query against all the others (instances-dev
    protocol); DBA is recomputed without the query so nothing leaks from it."""
    from cfcd.evaluate import compute_map
    from cfcd.index.rerank import alpha_query_expansion, database_augmentation

    labels = np.asarray(labels)
    n = len(x)
    ranks = np.empty((n - 1, n), np.int64)
    gnd = []
    for i in range(n):
        others = np.delete(np.arange(n), i)
        db = database_augmentation(x[others], dba, alpha) if dba else x[others]
        query = x[i:i + 1]
        if qe:
            sims = db @ query[0]
            top = np.argsort(-sims, kind="stable")[:qe]
            query = alpha_query_expansion(query, db[top][None], sims[top][None], alpha)
        ranks[:, i] = np.argsort(-(db @ query[0]).astype(np.float64), kind="stable")
        gnd.append({"ok": np.flatnonzero(labels[others] == labels[i]), "junk": np.array([], np.int64)})
    return 100 * compute_map(ranks, gnd)[0]


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--n", type=int, default=1_000_000, help="synthetic database size (default 1M)")
    p.add_argument("--dim", type=int, default=512)
    p.add_argument("--queries", type=int, default=1000)
    p.add_argument("--skip", default="", help="comma-separated setting labels to skip (e.g. HNSW at 1M on a laptop)")
    p.add_argument("--real", help="instances-dev folder: also benchmark its real descriptors and re-ranking")
    p.add_argument("--cache", default="", help="file to cache the real descriptors in (.npy)")
    args = p.parse_args()

    import faiss

    print(f"faiss {faiss.__version__}, {faiss.omp_get_max_threads()} threads, {os.cpu_count()} CPUs")
    settings = [s for s in SETTINGS if s[0] not in args.skip.split(",")]
    centres = np.random.default_rng(0).standard_normal((10_000, args.dim)).astype(np.float32)
    centres /= np.linalg.norm(centres, axis=1, keepdims=True)
    x = clustered(args.n, args.dim, centres, seed=1)
    q = clustered(args.queries, args.dim, centres, seed=2)
    print_table(bench(x, q, settings), f"synthetic: {args.n} x {args.dim}-d, {args.queries} queries, k=10")

    if args.real:
        real, labels = real_descriptors(args.real, args.cache)
        small = [s for s in settings if "IVF" not in s[1] or len(real) >= 1000]
        print_table(bench(real, real, small), f"instances-dev: {len(real)} x {real.shape[1]}-d, every image a query")
        print("\nre-ranking on instances-dev (leave-one-out mAP, %):")
        print("| re-ranking | mAP |")
        print("|---|---:|")
        for label, kw in [("none", {}), ("alpha-QE n=2", {"qe": 2}), ("alpha-QE n=5", {"qe": 5}),
                          ("DBA n=2", {"dba": 2}), ("DBA n=2 + alpha-QE n=2", {"dba": 2, "qe": 2}),
                          ("DBA n=5 + alpha-QE n=5", {"dba": 5, "qe": 5})]:
            print(f"| {label} | {leave_one_out_map(real, labels, **kw):.2f} |")


if __name__ == "__main__":
    main()
