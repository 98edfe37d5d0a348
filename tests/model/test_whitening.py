"""Heads learned without labels: PCA / whitening of GeM vectors folded into Linear -> BatchNorm1d
(``cfcd.model.whitening``), learned from photos (``cfcd.whiten``, ``cfcd whiten``)."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from cfcd import ExtractionSettings, Runtime, extract
from cfcd.cli import main
from cfcd.model import CFCDNet, ModelConfig, load_model, save_checkpoint
from cfcd.model.whitening import Moments, descriptors_from_vectors, learn_whitening, region_boxes, with_head
from cfcd.settings import WHITENING_SETTINGS
from cfcd.whiten import gem_vectors, learn_head

QUIET = Runtime(progress=False)


def _anisotropic(n=400, c=12, seed=0):
    rng = np.random.default_rng(seed)
    scales = np.geomspace(10, 0.1, c)
    rotation = np.linalg.qr(rng.normal(size=(c, c)))[0]
    return (rng.normal(size=(n, c)) * scales) @ rotation.T + 5.0


def test_full_whitening_gives_unit_covariance():
    x = _anisotropic()
    w = learn_whitening(x, dim=6, power=0.5, shrinkage=0.0)
    y = w(x)
    assert np.allclose(y.mean(0), 0, atol=1e-9)
    assert np.allclose(np.cov(y.T), np.eye(6), atol=1e-6)
    # the kept directions are the largest-variance ones, in decreasing order
    assert torch.all(w.variance[:-1] >= w.variance[1:])
    full = np.linalg.eigvalsh(np.cov(x.T))[::-1]
    assert np.allclose(w.variance.numpy(), full[:6], rtol=1e-8)


def test_pca_keeps_the_variance_and_shrinkage_softens_whitening():
    x = _anisotropic()
    pca = learn_whitening(x, dim=6, power=0.0)
    assert np.allclose(np.var(pca(x), axis=0, ddof=1), pca.variance.numpy())  # a rotation, no rescaling
    soft = learn_whitening(x, dim=6, power=0.5, shrinkage=1.0)
    var = np.var(soft(x), axis=0, ddof=1)
    eps = pca.variance.mean().item()
    assert np.allclose(var, pca.variance.numpy() / (pca.variance.numpy() + eps))  # lambda / (lambda + eps)


def test_moments_of_a_union_come_from_the_parts():
    x = _anisotropic(n=50)
    whole, parts = Moments.of(x), Moments.of(x[:7]) + Moments.of(x[7:30]) + Moments.of(x[30:])
    assert parts.count == 50
    assert torch.allclose(parts.mean, whole.mean) and torch.allclose(parts.scatter, whole.scatter)
    assert torch.allclose(whole.scatter / 49, torch.as_tensor(np.cov(x.T)))


def test_more_dimensions_than_vectors_stay_orthonormal_and_finite():
    x = _anisotropic(n=5, c=12)
    w = learn_whitening(x, dim=10, power=0.5, shrinkage=0.1)
    assert torch.isfinite(w.projection).all()
    rows = torch.nn.functional.normalize(w.projection, dim=1)
    assert torch.allclose(rows @ rows.T, torch.eye(10, dtype=torch.float64), atol=1e-8)


@pytest.mark.parametrize("kwargs, message", [
    ({"power": 0.7}, "power"), ({"shrinkage": -1}, "shrinkage"), ({"dim": 20}, "exceeds the 12 channels")])
def test_bad_settings_are_refused(kwargs, message):
    with pytest.raises(ValueError, match=message):
        learn_whitening(_anisotropic(), **{"dim": 6, **kwargs})
    with pytest.raises(ValueError, match="at least two vectors"):
        learn_whitening(_anisotropic()[:1], dim=6)


def test_region_boxes_cover_the_map():
    assert region_boxes(7, 9, (1,)) == [(0, 7, 0, 9)]
    boxes = region_boxes(12, 16, (2, 3))
    assert len(boxes) == 4 + 9
    assert {(b[0], b[2]) for b in boxes[:4]} == {(0, 0), (0, 5), (4, 0), (4, 5)}
    assert all(y1 <= 12 and x1 <= 16 and y1 - y0 in (8, 6) for y0, y1, x0, x1 in boxes)


@pytest.fixture
def trunk():
    """Head-less MobileNetV2 with random weights and batch-norm statistics from noise (so that
    images get different descriptors)."""
    torch.manual_seed(0)
    model = CFCDNet(ModelConfig("mobilenet_v2", dim=0))
    for m in model.modules():
        if isinstance(m, torch.nn.modules.batchnorm._BatchNorm):
            m.momentum = None
    with torch.no_grad():
        model.train()(torch.randn(8, 3, 64, 64))
    return model.eval()


def test_the_folded_head_is_the_whitening_of_gem(trunk, image_folder):
    paths = sorted(image_folder.rglob("*.jpg"))
    scales = (0.7071, 1.0)
    settings = ExtractionSettings(scales, max_side=None)
    glob, reg = gem_vectors(trunk, paths, settings, regions=(1, 2))
    assert glob.shape == (6, 2, 1280) and reg.shape == (6, 2, 5, 1280)
    assert np.allclose(reg[:, :, 0], glob, rtol=1e-5)  # the level-1 window is the whole map
    # no head: the same descriptors as cfcd.extract
    assert np.allclose(descriptors_from_vectors(glob), extract(trunk, paths, settings, QUIET), atol=1e-5)
    # with the learned head folded into Linear -> BatchNorm1d: extract gives L2(sum_s L2(W (g_s - mu)))
    model, w = learn_head(trunk, paths, dim=8, power=0.5, shrinkage=0.1, regions=(2,), settings=settings)
    assert model.config.dim == 8 and model.output_dim == 8 and trunk.fc is None
    got = extract(model, paths, settings, QUIET)
    assert np.allclose(got, descriptors_from_vectors(glob, w), atol=1e-4)
    assert not np.allclose(got[:, :8], descriptors_from_vectors(glob)[:, :8], atol=1e-2)


def test_with_head_keeps_the_backbone(trunk):
    w = learn_whitening(_anisotropic(n=50, c=1280), dim=4)
    model = with_head(trunk, w)
    for k, v in trunk.state_dict().items():
        assert torch.equal(model.state_dict()[k], v)
    assert torch.allclose(model.fc.weight.double(), w.projection.float().double())
    assert torch.allclose(model.fc.bias.double(), -(w.projection @ w.mean), rtol=1e-5, atol=1e-5)


def test_cli_writes_a_model_that_loads_everywhere(trunk, image_folder, tmp_path, capsys):
    src = tmp_path / "trunk.pt"
    save_checkpoint(src, trunk)
    out = tmp_path / "whitened.pt"
    assert main(["whiten", str(image_folder), "-o", str(out), "--model", str(src), "--dim", "8",
                 "--scales", "1", "--max-side", "0", "--regions", "2"]) == 0
    assert "learned from 6 photos" in capsys.readouterr().out
    model = load_model(out)
    assert model.config.dim == 8
    info = torch.load(out, weights_only=True)["whitening"]
    assert info["images"] == 6 and info["power"] == 0.5 and info["regions"] == [2]
    assert info["scales"] == [1.0] and info["max_side"] is None
    d = extract(model, sorted(image_folder.rglob("*.jpg")), ExtractionSettings((1.0,), max_side=None), QUIET)
    assert d.shape == (6, 8) and np.allclose(np.linalg.norm(d, axis=1), 1, atol=1e-5)


def test_cli_sees_the_photos_with_the_whitening_settings_unless_told(trunk, image_folder, tmp_path, monkeypatch):
    """cfcd whiten resolves its settings once (cfcd.settings.resolve over WHITENING_SETTINGS) and
    hands them to learn_head whole."""
    import cfcd.whiten

    seen = []
    monkeypatch.setattr(cfcd.whiten, "gem_vectors", lambda model, images, settings, *a, **k: seen.append(settings) or
                        gem_vectors(model, images[:2], ExtractionSettings((1.0,), 64), *a, **k))
    src = tmp_path / "trunk.pt"
    save_checkpoint(src, trunk)
    for extra in ([], ["--scales", "0.5,1", "--max-side", "300", "--max-working-side", "600"]):
        assert main(["whiten", str(image_folder), "-o", str(tmp_path / "w.pt"), "--model", str(src), "--dim", "4", *extra]) == 0
    assert seen == [WHITENING_SETTINGS.for_model(trunk), ExtractionSettings((0.5, 1.0), 300, 600, "cfcd")]
    info = torch.load(tmp_path / "w.pt", weights_only=True)["whitening"]
    assert info["scales"] == [0.5, 1.0] and info["max_side"] == 300


@pytest.mark.parametrize("argv, message", [
    (["missing-folder"], "missing-folder: no such file or folder"),
    (["{one}"], "1 image(s) found; a head needs at least two"),
    (["{folder}", "--regions", "2,x"], "--regions '2,x'"),
])
def test_cli_errors(image_folder, tmp_path, capsys, argv, message):
    one = sorted(image_folder.rglob("*.jpg"))[0]
    argv = [a.format(one=one, folder=image_folder) for a in argv]
    assert main(["whiten", *argv, "-o", str(tmp_path / "w.pt")]) == 2
    assert message in capsys.readouterr().err
    assert not (tmp_path / "w.pt").exists()
