"""bench/transductive.py: its shortcut (one eigendecomposition for the whole d x s grid) gives
the projection of ``learn_whitening`` itself."""

from __future__ import annotations


import numpy as np
import pytest

from cfcd.model.whitening import learn_whitening
from samples import bench_script



@pytest.fixture(scope="module")
def bench_module():
    return bench_script("transductive")


def test_grid_projections_equal_learn_whitening(bench_module):
    x = bench_module.l2(np.random.default_rng(0).standard_normal((40, 64)) + 2.0)
    pairs = [(8, 0.25), (16, 1.0), (32, 8.0)]
    ws = bench_module.projections(x, pairs)
    for d, s in pairs:
        ref = learn_whitening(x, dim=d, power=0.5, shrinkage=s)
        np.testing.assert_allclose(ws[(d, s)](x), ref(x), rtol=1e-9, atol=1e-12)

