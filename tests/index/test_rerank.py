"""alpha-QE and alpha-DBA against their formulas."""

from __future__ import annotations

import numpy as np

from cfcd.index.rerank import alpha_query_expansion, database_augmentation


def normed(x):
    return x / np.linalg.norm(x, axis=-1, keepdims=True)


def test_alpha_qe_formula():
    rng = np.random.default_rng(0)
    q = normed(rng.standard_normal((2, 8))).astype(np.float32)
    nb = normed(rng.standard_normal((2, 3, 8))).astype(np.float32)
    sims = np.array([[0.9, 0.5, -0.2], [0.7, 0.0, 0.3]], np.float32)
    out = alpha_query_expansion(q, nb, sims, alpha=3.0)
    expect = normed(q + np.einsum("mn,mnd->md", np.where(sims > 0, sims, 0) ** 3, nb))
    assert np.allclose(out, expect, atol=1e-6)
    avg = alpha_query_expansion(q, nb, sims, alpha=0.0)  # average QE over positive neighbours
    assert np.allclose(avg[0], normed(q[0] + nb[0, 0] + nb[0, 1]), atol=1e-6)


def test_dba_formula_and_identity():
    rng = np.random.default_rng(1)
    x = normed(rng.standard_normal((30, 8))).astype(np.float32)
    assert np.array_equal(database_augmentation(x, n=1), x)
    out = database_augmentation(x, n=3, alpha=2.0, batch=7)
    sims = x @ x.T
    for i in (0, 13, 29):
        order = [j for j in np.argsort(-sims[i], kind="stable") if j != i][:2]
        w = np.maximum(sims[i, order], 0) ** 2
        assert np.allclose(out[i], normed(x[i] + (w[:, None] * x[order]).sum(0)), atol=1e-5)


def test_dba_pulls_near_duplicates_together():
    rng = np.random.default_rng(2)
    base = normed(rng.standard_normal((10, 16)))
    x = normed(np.concatenate([base, base + 0.3 * rng.standard_normal((10, 16))])).astype(np.float32)
    out = database_augmentation(x, n=2, alpha=1.0)
    before = (x[:10] * x[10:]).sum(1)
    after = (out[:10] * out[10:]).sum(1)
    assert (after > before).all()
