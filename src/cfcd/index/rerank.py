"""Re-ranking for global descriptors: alpha query expansion and database-side augmentation.

Both are the standard post-processing of ROxford/RParis results (Radenovic et al., "Fine-tuning
CNN image retrieval with no human annotation", TPAMI 2018; Gordo et al., "End-to-end learning of
deep visual representations for image retrieval", IJCV 2017). Descriptors are L2-normalised
rows; similarities are inner products; neighbours with similarity <= 0 get weight 0.
"""

from __future__ import annotations

import numpy as np

DEFAULT_QE_ALPHA = 3.0
DEFAULT_DBA_ALPHA = 3.0


def weighted_sum(vectors: np.ndarray, sims: np.ndarray, alpha: float) -> np.ndarray:
    """normalize(sum_i w_i x_i) over the neighbour axis, w_i = s_i^alpha for s_i > 0, else 0.

    ``vectors`` (m, n, d), ``sims`` (m, n) -> (m, d) L2-normalised rows.
    """
    s = np.asarray(sims, dtype=np.float32)
    w = np.where(s > 0, np.maximum(s, 1e-12) ** alpha, 0.0).astype(np.float32)
    out = np.einsum("mn,mnd->md", w, vectors.astype(np.float32))
    norms = np.linalg.norm(out, axis=1, keepdims=True)
    return (out / np.maximum(norms, 1e-12)).astype(np.float32)


def alpha_query_expansion(queries: np.ndarray, neighbours: np.ndarray, sims: np.ndarray, alpha: float = DEFAULT_QE_ALPHA) -> np.ndarray:
    """alpha-QE: q' = normalize(q + sum_{i=1..n} max(s(q, x_i), 0)^alpha x_i).

    ``queries`` (m, d); ``neighbours`` (m, n, d), the top-n database vectors of each query;
    ``sims`` (m, n) their similarities to the query. The query itself takes weight 1 (its
    similarity to itself). alpha = 0 is average query expansion.
    """
    vecs = np.concatenate([queries[:, None, :], neighbours], axis=1)
    s = np.concatenate([np.ones((len(queries), 1), np.float32), sims], axis=1)
    return weighted_sum(vecs, s, alpha)


def database_augmentation(vectors: np.ndarray, n: int, alpha: float = DEFAULT_DBA_ALPHA, batch: int = 4096) -> np.ndarray:
    """alpha-DBA: x_i' = normalize(sum_{j in NN_n(x_i)} max(s(x_i, x_j), 0)^alpha x_j), where
    NN_n(x_i) are the n nearest database vectors of x_i, x_i itself included (weight 1).

    Exact k-NN over ``vectors`` (N, d): O(N^2 d) work, done in batches of rows with FAISS.
    """
    import faiss

    vectors = np.ascontiguousarray(vectors, dtype=np.float32)
    if n <= 1 or len(vectors) == 0:
        return vectors.copy()
    flat = faiss.IndexFlatIP(vectors.shape[1])
    flat.add(vectors)
    k = min(n, len(vectors))
    out = np.empty_like(vectors)
    for start in range(0, len(vectors), batch):
        rows = vectors[start:start + batch]
        sims, idx = flat.search(rows, k)
        neighbours, neighbour_sims = _without_self(vectors, sims, idx, start)
        out[start:start + batch] = alpha_query_expansion(rows, neighbours, neighbour_sims, alpha)
    return out


def _without_self(vectors, sims, idx, start):
    """The n - 1 nearest neighbours of rows start.. other than the row itself (which the
    expansion adds with weight 1, whatever order FAISS gave to exact duplicates)."""
    own = np.arange(start, start + len(idx))[:, None]
    others = idx != own
    order = np.argsort(~others, axis=1, kind="stable")[:, : idx.shape[1] - 1]
    neigh_idx = np.take_along_axis(idx, order, axis=1)
    valid = np.take_along_axis(others, order, axis=1) & (neigh_idx >= 0)
    neigh_sims = np.where(valid, np.take_along_axis(sims, order, axis=1), 0.0)
    return vectors[np.where(valid, neigh_idx, 0)], neigh_sims
