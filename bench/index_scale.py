"""Index settings at scale: build time, memory per image, queries/s and recall@10 vs exact.

    python bench/index_scale.py                 # 1M synthetic 512-d descriptors (long: HNSW build)
    python bench/index_scale.py --n 100000      # a quick run
    python bench/index_scale.py --n 0 --real ../shared/data/instances-dev --cache /tmp/instdev.npy
                                                # only the real photos: ANN + re-ranking table

Synthetic descriptors are clustered (unit vectors around 10k random centres), as real image
descriptors are; uniform random vectors would understate every approximate index. Queries are
new draws from the same distribution, not database vectors. Memory per image is the size of
the serialized FAISS index divided by n (what `cfcd index` writes and loads; the SQLite
metadata comes on top). Build time is through `cfcd.Index` (training on its default sample of
up to 256k vectors, then adding with ids and metadata). `--threads 1` gives stable timings on
a machine shared with other jobs: OpenMP threads that must wait for a descheduled sibling at
every barrier can make a 2-thread run several times slower than a 1-thread one.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
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


def clustered(n: int, d: int, centres: np.ndarray, seed: int, noise: float = 0.6) -> tuple[np.ndarray, np.ndarray]:
    """n unit vectors around ``centres`` (a noise vector of norm ~``noise`` added to a random
    centre), and the centre of each."""
    rng = np.random.default_rng(seed)
    out = np.empty((n, d), np.float32)
    labels = np.empty(n, np.int64)
    for start in range(0, n, 100_000):
        m = min(100_000, n - start)
        labels[start:start + m] = rng.integers(0, len(centres), m)
        x = centres[labels[start:start + m]] + noise / np.sqrt(d) * rng.standard_normal((m, d)).astype(np.float32)
        out[start:start + m] = x / np.linalg.norm(x, axis=1, keepdims=True)
    return out, labels


def recall_at(approx: np.ndarray, exact: np.ndarray, k: int = 10) -> float:
    return float(np.mean([len(set(a[:k]) & set(e[:k])) / k for a, e in zip(approx, exact)]))


def bench(x: np.ndarray, q: np.ndarray, settings, k: int = 10, x_labels=None, q_labels=None) -> list[dict]:
    """One row per setting; the first setting must be exact (its results are the reference).
    With labels (the synthetic centres), also the share of the top-k from the query's own
    cluster: what retrieval needs, whereas recall@k vs exact also asks for the exact order of
    near-equal neighbours inside the cluster."""
    import faiss

    records = [ImageRecord(path=str(i)) for i in range(len(x))]  # names, not files: nothing to hash
    nlist = max(16, int(4 * np.sqrt(len(x))))
    factories = [factory.format(nlist=nlist) for _, factory, _ in settings]
    rows, exact, built = [], None, {}
    for pos, ((label, _, params), factory) in enumerate(zip(settings, factories)):
        if factory not in built:
            start = time.perf_counter()
            index = Index(x.shape[1], factory=factory)
            index._train(x)
            train_s = time.perf_counter() - start
            index.add(x, records)
            built[factory] = (index, train_s, time.perf_counter() - start, len(faiss.serialize_index(index.layers.vectors.faiss)) / len(x))
        index, train_s, build_s, bytes_per = built[factory]
        if params:
            faiss.ParameterSpace().set_index_parameters(index.layers.vectors.faiss, params)
        start = time.perf_counter()
        ids = index.layers.vectors.search(q, k)[1]
        qps = len(q) / (time.perf_counter() - start)
        exact = ids if exact is None else exact
        rows.append({"setting": label, "factory": factory, "train_s": train_s, "build_s": build_s,
                     "bytes_per_image": bytes_per, "qps": qps, "recall@10": recall_at(ids, exact, k)})
        if x_labels is not None:
            rows[-1]["same_cluster@10"] = float(np.mean((ids >= 0) & (x_labels[np.maximum(ids, 0)] == q_labels[:, None])))
        print(f"  {label:22s} build {build_s:7.1f} s (train {train_s:.1f} s), {qps:8.0f} queries/s, "
              f"recall@10 {rows[-1]['recall@10']:.3f}, same cluster {rows[-1].get('same_cluster@10', float('nan')):.3f}",
              flush=True)
        if factory not in factories[pos + 1:]:
            del built[factory]  # free it: at 1M a Flat or IVF-Flat index is 2 GB
    return rows


def print_table(rows: list[dict], title: str) -> None:
    print(f"\n{title}")
    cluster = "same_cluster@10" in rows[0]
    print("| setting | factory | build (s) | of which training (s) | bytes / image | queries/s | recall@10 vs exact |"
          + (" top-10 in query's cluster |" if cluster else ""))
    print("|---|---|---:|---:|---:|---:|---:|" + ("---:|" if cluster else ""))
    for r in rows:
        print(f"| {r['setting']} | `{r['factory']}` | {r['build_s']:.1f} | {r['train_s']:.1f} | "
              f"{r['bytes_per_image']:.0f} | {r['qps']:.0f} | {r['recall@10']:.3f} |"
              + (f" {r['same_cluster@10']:.3f} |" if cluster else ""))


def real_descriptors(folder: str, cache: str) -> tuple[np.ndarray, list[str]]:
    """Descriptors of instances-dev (in the manifest's order, as `cfcd eval` reads it) with the
    README's reference settings (default model, scales 0.7071/1/1.4142, long side 512), and
    the identities."""
    from cfcd import extract, load_model
    from cfcd.data.instances import load_instances
    from cfcd.settings import REFERENCE_SETTINGS, Runtime

    images = load_instances(folder)
    if cache and os.path.exists(cache):
        x = np.load(cache)
        if len(x) == len(images):
            return x, images.identities
    start = time.perf_counter()
    x = extract(load_model("mobilenet_v2-imagenet"), images.paths, REFERENCE_SETTINGS, Runtime(num_workers=1))
    print(f"extracted {len(x)} images in {time.perf_counter() - start:.0f} s")
    if cache:
        np.save(cache, x)
    return x, images.identities


def leave_one_out_map(x: np.ndarray, labels: list[str], qe: int = 0, dba: int = 0, alpha: float = 3.0) -> tuple[float, float]:
    """(mAP, recall@1) in % with every image a query against all the others: the instances-dev
    protocol of `cfcd eval` (`cfcd.evaluate.benchmarks.folder`). DBA is recomputed
    on the database without the query, so nothing of the query leaks into the database; QE
    expands the query with its top-``qe`` database images."""
    from cfcd.evaluate.benchmarks.folder import leave_one_out_gnd
    from cfcd.evaluate import compute_map
    from cfcd.index.rerank import alpha_query_expansion, database_augmentation

    n = len(x)
    sims = np.full((n, n), -np.inf)  # sims[:, i]: query i against the database; i itself is junk
    for i in range(n):
        others = np.delete(np.arange(n), i)
        db = database_augmentation(x[others], dba, alpha) if dba else x[others]
        query = x[i:i + 1]
        if qe:
            s = db @ query[0]
            top = np.argsort(-s, kind="stable")[:qe]
            query = alpha_query_expansion(query, db[top][None], s[top][None], alpha)
        sims[others, i] = db.astype(np.float64) @ query[0].astype(np.float64)
    ranks = np.argsort(-sims, axis=0, kind="stable")
    _, aps, _, prs = compute_map(ranks, leave_one_out_gnd(labels), kappas=(1,))
    keep = ~np.isnan(aps)
    return 100 * float(aps[keep].mean()), 100 * float(prs[keep, 0].mean())


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--n", type=int, default=1_000_000, help="synthetic database size (default 1M; 0: none)")
    p.add_argument("--dim", type=int, default=512)
    p.add_argument("--queries", type=int, default=1000)
    p.add_argument("--skip", default="", help="comma-separated setting labels to skip (e.g. HNSW at 1M on a laptop)")
    p.add_argument("--threads", type=int, default=0, help="FAISS OpenMP threads (default: all cores)")
    p.add_argument("--dba-time", type=int, default=0, metavar="N",
                   help="also time DBA (n=2) over the first N synthetic vectors (an exact all-k-NN: O(N^2 d))")
    p.add_argument("--real", help="instances-dev folder: also benchmark its real descriptors and re-ranking")
    p.add_argument("--cache", default="", help="file to cache the real descriptors in (.npy)")
    p.add_argument("--json", help="write all results to this file")
    args = p.parse_args()

    import faiss

    if args.threads:
        faiss.omp_set_num_threads(args.threads)
    env = {"faiss": faiss.__version__, "threads": faiss.omp_get_max_threads(), "cpus": os.cpu_count(),
           "command": "python " + " ".join(sys.argv)}
    print(f"faiss {env['faiss']}, {env['threads']} threads, {env['cpus']} CPUs")
    results: dict = {"env": env}
    settings = [s for s in SETTINGS if s[0] not in args.skip.split(",")]
    if args.n:
        centres = np.random.default_rng(0).standard_normal((10_000, args.dim)).astype(np.float32)
        centres /= np.linalg.norm(centres, axis=1, keepdims=True)
        x, x_labels = clustered(args.n, args.dim, centres, seed=1)
        q, q_labels = clustered(args.queries, args.dim, centres, seed=2)
        rows = bench(x, q, settings, x_labels=x_labels, q_labels=q_labels)
        results["synthetic"] = {"n": args.n, "dim": args.dim, "queries": args.queries, "rows": rows}
        print_table(rows, f"synthetic: {args.n} x {args.dim}-d, {args.queries} queries, k=10")
        if args.dba_time:
            from cfcd.index.rerank import database_augmentation

            m = min(args.dba_time, args.n)
            start = time.perf_counter()
            database_augmentation(x[:m], 2)
            results["synthetic"]["dba"] = {"n": m, "seconds": time.perf_counter() - start}
            print(f"\nDBA n=2 over {m} vectors: {results['synthetic']['dba']['seconds']:.1f} s")
        del x

    if args.real:
        real, labels = real_descriptors(args.real, args.cache)
        small = [s for s in settings if "IVF" not in s[1] or len(real) >= 1000]
        rows = bench(real, real, small)
        results["real"] = {"n": len(real), "rows": rows, "rerank": []}
        print_table(rows, f"instances-dev: {len(real)} x {real.shape[1]}-d, every image a query")
        print("\nre-ranking on instances-dev (leave-one-out, %):")
        print("| re-ranking | mAP | recall@1 |")
        print("|---|---:|---:|")
        for label, kw in [("none", {}), ("alpha-QE n=2", {"qe": 2}), ("alpha-QE n=5", {"qe": 5}),
                          ("DBA n=2", {"dba": 2}), ("DBA n=5", {"dba": 5}),
                          ("DBA n=2 + alpha-QE n=2", {"dba": 2, "qe": 2}),
                          ("DBA n=5 + alpha-QE n=5", {"dba": 5, "qe": 5})]:
            m, r1 = leave_one_out_map(real, labels, **kw)
            results["real"]["rerank"].append({"rerank": label, **kw, "mAP": m, "R@1": r1})
            print(f"| {label} | {m:.2f} | {r1:.2f} |", flush=True)
    if args.json:
        with open(args.json, "w") as f:
            json.dump(results, f, indent=1)


if __name__ == "__main__":
    main()
