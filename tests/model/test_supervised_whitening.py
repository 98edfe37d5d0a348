"""Supervised (learned) whitening from labelled matching pairs
(``cfcd.model.whitening.learn_supervised_whitening``), its setting chosen on the labelled photos
alone (``cfcd.train.supervised.choose_supervised_whitening``), and the bench row that uses it
(``bench/train_cpu.py``, issue 22)."""

from __future__ import annotations


import numpy as np
import pytest
import torch

from cfcd import ExtractionSettings, Runtime, extract
from cfcd.model import CFCDNet, ModelConfig
from cfcd.model.whitening import (descriptors_from_vectors, learn_supervised_whitening, learn_whitening,
                                  supervised_whitenings, within_class_scatter)
from cfcd.train import supervised as supervised_module
from cfcd.train.supervised import choose_supervised_whitening
from cfcd.whiten import gem_vectors, learn_supervised_head
from samples import bench_script



def _nuisance_set(identities=30, photos=4, c=32, noise_dirs=3, seed=0):
    """Identity centres ~ N(0, I_c); every photo = its centre + strong noise along ``noise_dirs``
    orthonormal directions, the same for every seed (std 4, more than any identity direction) +
    weak isotropic noise (std 0.05), plus an offset. Returns (x (n, c), labels (n,), the noise directions)."""
    directions = np.linalg.qr(np.random.default_rng(100).normal(size=(c, noise_dirs)))[0].T  # (noise_dirs, c)
    rng = np.random.default_rng(seed)
    centres = rng.normal(size=(identities, c))
    labels = np.repeat(np.arange(identities), photos)
    x = (centres[labels] + 4.0 * rng.normal(size=(len(labels), noise_dirs)) @ directions
         + 0.05 * rng.normal(size=(len(labels), c)) + 3.0)
    return x, labels, directions


def _l2(x):
    return x / np.linalg.norm(x, axis=-1, keepdims=True)


def _positive_share(descriptors, labels):
    """Mean squared distance of same-identity pairs over that of all pairs (L2-normalised):
    small when photos of one identity are close compared with the rest."""
    d = _l2(descriptors)
    sq = ((d[:, None] - d[None]) ** 2).sum(-1)
    same = (labels[:, None] == labels[None]) & ~np.eye(len(labels), dtype=bool)
    other = ~np.eye(len(labels), dtype=bool)
    return sq[same].mean() / sq[other].mean()


def test_supervised_brings_photos_of_one_identity_closer_than_unsupervised():
    x, labels, directions = _nuisance_set()
    supervised = learn_supervised_whitening(x, labels, dim=8, shrinkage=0.01)
    unsupervised = learn_whitening(x, dim=8, power=0.5, shrinkage=1.0)
    # on identities neither head saw (new centres, the same nuisance directions)
    fresh, fresh_labels, same_directions = _nuisance_set(identities=40, seed=7)
    assert np.array_equal(same_directions, directions)
    sup, unsup = _positive_share(supervised(fresh), fresh_labels), _positive_share(unsupervised(fresh), fresh_labels)
    assert sup < 0.2 * unsup, (sup, unsup)
    # the unit rows of the unlabelled head span the nuisance directions (they have the most
    # variance: energy sqrt(3) if all three are kept); the supervised head's rows avoid them
    rows_sup, rows_uns = _l2(supervised.projection.numpy()), _l2(unsupervised.projection.numpy())
    assert np.linalg.norm(rows_uns @ directions.T) > 1.5
    assert np.linalg.norm(rows_sup @ directions.T) < 0.1


def test_the_formula_rows_whiten_the_shrunk_scatter_and_the_limit_is_pca():
    x, labels, _ = _nuisance_set(identities=12, c=16)
    scatter, pairs = within_class_scatter(x, labels)
    assert pairs == 12 * 6  # 4 photos per identity: 6 pairs each
    brute = sum(np.outer(x[i] - x[j], x[i] - x[j]) for i in range(len(x)) for j in range(i + 1, len(x))
                if labels[i] == labels[j]) / pairs
    assert np.allclose(scatter.numpy(), brute)
    s = 0.3
    w = learn_supervised_whitening(x, labels, dim=6, shrinkage=s, power=0.0)
    shrunk = scatter.numpy() + s * np.trace(scatter.numpy()) / 16 * np.eye(16)
    # power 0: W = R S_l^(-1/2) with R orthonormal rows, so W S_l W^T = I
    assert np.allclose(w.projection.numpy() @ shrunk @ w.projection.numpy().T, np.eye(6), atol=1e-8)
    # the rows are the top principal directions of the whitened training vectors, largest first
    y = w(x)
    assert np.allclose(y.mean(0), 0, atol=1e-9)
    assert np.allclose(np.cov(y.T), np.diag(w.variance.numpy()), atol=1e-8)
    assert torch.all(w.variance[:-1] >= w.variance[1:])
    # huge shrinkage: P1 -> I / sqrt(l), so the head is plain PCA of the vectors (up to scale)
    limit = learn_supervised_whitening(x, labels, dim=6, shrinkage=1e9, power=0.0)
    pca = learn_whitening(x, dim=6, power=0.0)
    assert np.allclose(np.abs(_l2(limit.projection.numpy()) @ pca.projection.numpy().T), np.eye(6), atol=1e-5)
    # one decomposition for the whole grid gives the heads of the single calls
    grid = supervised_whitenings(x, labels, 6, (0.1, 1.0), (0.0, 0.5))
    for (sh, p), head in grid.items():
        assert torch.allclose(head.projection, learn_supervised_whitening(x, labels, 6, sh, p).projection)


@pytest.mark.parametrize("shrinkage", [0.0, 1e-6, 0.1, 10.0])
def test_fewer_pairs_than_dimensions_stay_finite(shrinkage):
    # 3 identities of 2 photos in 64 dimensions: S has rank 3
    rng = np.random.default_rng(1)
    x, labels = rng.normal(size=(6, 64)) + 1.0, np.array([0, 0, 1, 1, 2, 2])
    extra = rng.normal(size=(10, 64))
    for power in (0.0, 0.5):
        w = learn_supervised_whitening(x, labels, dim=16, shrinkage=shrinkage, power=power, unlabelled=extra)
        assert w.projection.shape == (16, 64)
        assert torch.isfinite(w.projection).all() and torch.isfinite(w.mean).all()
        assert np.isfinite(descriptors_from_vectors(x[:, None], w)).all()


def test_degenerate_inputs():
    x = np.ones((4, 8))
    w = learn_supervised_whitening(x, [0, 0, 1, 1], dim=2, shrinkage=0.0)  # identical pairs: S = 0
    assert torch.isfinite(w.projection).all()
    with pytest.raises(ValueError, match="matching pair"):
        learn_supervised_whitening(np.eye(4), [0, 1, 2, 3], dim=2)
    with pytest.raises(ValueError, match="labels for"):
        learn_supervised_whitening(np.eye(4), [0, 1], dim=2)
    with pytest.raises(ValueError, match="shrinkage"):
        learn_supervised_whitening(np.eye(4), [0, 0, 1, 1], dim=2, shrinkage=-1)


def test_the_choice_never_scores_on_identities_it_learned_from(monkeypatch):
    x, labels, _ = _nuisance_set(identities=12, c=16)
    glob = x.reshape(-1, 1, 16)
    identities = [f"id{y}" for y in labels]
    groups = ["a" if y % 2 else "b" for y in labels]
    learned, scored = [], []
    real_learn, real_score = supervised_module.supervised_whitenings, supervised_module.loo_aps

    def spy_learn(vectors, labels_, *args, **kwargs):
        learned.append(set(labels_))
        return real_learn(vectors, labels_, *args, **kwargs)

    def spy_score(descriptors, labels_):
        scored.append(set(labels_))
        return real_score(descriptors, labels_)

    monkeypatch.setattr(supervised_module, "supervised_whitenings", spy_learn)
    monkeypatch.setattr(supervised_module, "loo_aps", spy_score)
    chosen, scores = choose_supervised_whitening(glob, identities, groups, dim=4, shrinkages=(0.01, 100.0),
                                                 powers=(0.0,))
    assert len(learned) == 2 and len(scored) == 4  # 2 inner folds, 2 settings scored in each
    for fold, seen in enumerate(learned):
        for tested in scored[2 * fold:2 * fold + 2]:
            assert tested and not (tested & seen)
    assert set(scores) == {(0.01, 0.0), (100.0, 0.0)} and chosen["shrinkage"] == 0.01  # the nuisance needs the labels


@pytest.fixture(scope="module")
def bench():
    return bench_script("train_cpu")


def test_the_bench_row_reads_the_training_photos_only(bench):
    x, labels, _ = _nuisance_set(identities=12, c=16)
    n = len(x)
    rng = np.random.default_rng(2)
    glob = np.stack([x, x + 0.01 * rng.normal(size=x.shape)], axis=1)  # (n, 2 scales, 16)
    reg = rng.normal(size=(n, 2, 3, 16)) + 3.0
    identities = [f"id{y}" for y in labels]
    sources = ["s0" if y < 6 else "s1" for y in labels]
    train = [i for i in range(n) if labels[i] % 3]  # 8 identities; the other 4 are the test side
    grid = {"dim": 4, "shrinkages": (0.1, 1.0), "powers": (0.0,)}
    poisoned_glob, poisoned_reg = glob.copy(), reg.copy()
    test = [i for i in range(n) if i not in train]
    poisoned_glob[test], poisoned_reg[test] = np.nan, np.nan  # any use of a test photo would show
    head, chosen, _ = bench.supervised_head(poisoned_glob, poisoned_reg, identities, sources, train, **grid)
    assert torch.isfinite(head.projection).all()
    reference, same, _ = bench.supervised_head(glob, reg, identities, sources, train, **grid)
    assert chosen == same and torch.equal(head.projection, reference.projection)


def test_the_folded_head_is_the_supervised_whitening_of_gem(image_folder):
    torch.manual_seed(0)
    trunk = CFCDNet(ModelConfig("mobilenet_v2", dim=0))
    for m in trunk.modules():
        if isinstance(m, torch.nn.modules.batchnorm._BatchNorm):
            m.momentum = None
    with torch.no_grad():
        trunk.train()(torch.randn(8, 3, 64, 64))
    trunk.eval()
    paths = sorted(image_folder.rglob("*.jpg"))
    labels = [p.parent.name for p in paths]  # two identities of three photos
    settings = ExtractionSettings((0.7071, 1.0), max_side=None)
    model, w = learn_supervised_head(trunk, paths, labels, dim=8, shrinkage=0.1, power=0.0, regions=(2,),
                                     settings=settings)
    assert model.config.dim == 8
    glob, _ = gem_vectors(trunk, paths, settings)
    got = extract(model, paths, settings, Runtime(progress=False))
    assert np.allclose(got, descriptors_from_vectors(glob, w), atol=1e-4)
