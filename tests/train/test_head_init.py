"""How stage 1 starts: the projection head (stage1.head_init) and the classifier (stage1.classifier_init)."""

from __future__ import annotations

import copy

import torch
import torch.nn.functional as F
from tinytrain import tiny_overrides

from cfcd.model.checkpoint import atomic_save, make_checkpoint
from cfcd.train.config import load_config
from cfcd.train.engine import StageTrainer, training_data
from cfcd.train.head_init import pca_components
from cfcd.train.predict import EvalImages, batch_gem_vectors, descriptors, gem_features
from cfcd.train.runtime import init_runtime
from cfcd.whiten import learn_head


def _trainer(class_folder, tmp_path, *extra):
    cfg = load_config("cpu-mobilenet", tiny_overrides(class_folder, tmp_path / "run") + list(extra))
    train, val = training_data(cfg)
    rt = init_runtime("cpu")
    return cfg, rt, train, StageTrainer(cfg, 1, rt, train, val)


def test_pca_head_is_the_projection_of_gem(class_folder, tmp_path):
    # 24 images, dim 16: every row is a principal direction of the centred GeM vectors.
    cfg, rt, train, trainer = _trainer(class_folder, tmp_path, "model.dim=16", "stage1.head_init=pca")
    assert trainer.fresh_head
    rng = torch.get_rng_state()
    trainer.init_head()
    assert torch.equal(rng, torch.get_rng_state())  # the training RNG stream is untouched
    model = trainer.model.eval()
    w = model.fc.weight.detach().double()
    assert torch.allclose(w @ w.T, torch.eye(16, dtype=torch.float64), atol=1e-5)
    assert torch.equal(model.bn.weight, torch.ones(16)) and torch.equal(model.bn.bias, torch.zeros(16))
    assert torch.equal(model.bn.running_mean, torch.zeros(16)) and torch.equal(model.bn.running_var, torch.ones(16))

    feats, errors = gem_features(model, train, cfg.data.image_size, 8, rt, progress=False)
    assert not errors and feats.shape == (len(train), model.backbone_channels)
    components, mean = pca_components(feats, 16)
    # rows = the top principal directions, in order of decreasing variance
    centred = feats - mean
    var = (centred @ components.T).square().sum(dim=0)
    assert torch.all(var[:-1] >= var[1:] - 1e-9)
    top = torch.linalg.svd(centred, full_matrices=False).S[:16].square()
    assert torch.allclose(var, top, rtol=1e-6)
    assert torch.allclose(model.fc.weight.double(), components, atol=1e-6)
    assert torch.allclose(model.fc.bias.double(), -components @ mean, atol=1e-5)

    # the model's descriptor = L2-normalised PCA projection of its GeM vector
    x = torch.stack([EvalImages(train, [i], cfg.data.image_size)[0][1] for i in range(6)])
    with torch.no_grad():
        got = model(x).double()
        g = batch_gem_vectors(model, x).double()
    want = F.normalize((g - mean) @ components.T, dim=1)
    assert torch.allclose(got, want, atol=1e-4)


def test_pca_head_pads_with_orthonormal_rows_when_dim_exceeds_the_images(class_folder, tmp_path):
    _, _, train, trainer = _trainer(class_folder, tmp_path, "model.dim=40", "stage1.head_init=pca")
    trainer.init_head()
    w = trainer.model.fc.weight.detach().double()
    assert len(train) < 40
    assert torch.allclose(w @ w.T, torch.eye(40, dtype=torch.float64), atol=1e-5)


def test_random_head_and_loaded_head_are_left_alone(class_folder, tmp_path, monkeypatch):
    calls = []
    monkeypatch.setattr(StageTrainer, "init_head", lambda self: calls.append(self))
    # random: train() keeps PyTorch's init
    _, _, _, trainer = _trainer(class_folder, tmp_path, "stage1.head_init=random", "stage1.epochs=0")
    before = trainer.model.fc.weight.detach().clone()
    trainer.train()
    assert not calls and torch.equal(before, trainer.model.fc.weight)
    # pca, but stage1.init is a checkpoint that has fc/bn of the same shape: its head is kept
    ckpt = tmp_path / "init.pt"
    atomic_save(make_checkpoint(trainer.model), ckpt)
    _, _, _, loaded = _trainer(class_folder, tmp_path / "b", "stage1.head_init=pca", f"stage1.init={ckpt}", "stage1.epochs=0")
    assert not loaded.fresh_head and torch.equal(before, loaded.model.fc.weight)
    loaded.train()
    assert not calls
    # pca on a fresh head: train() calls it once
    _, _, _, fresh = _trainer(class_folder, tmp_path / "c", "stage1.head_init=pca", "stage1.epochs=0")
    fresh.train()
    assert calls == [fresh]


def test_pca_components_orthonormal_and_seeded():
    x = torch.randn(5, 12, dtype=torch.float64)
    a, mean = pca_components(x, 10, seed=3)
    b, _ = pca_components(x, 10, seed=3)
    assert torch.equal(a, b)
    assert torch.allclose(a @ a.T, torch.eye(10, dtype=torch.float64), atol=1e-10)
    assert torch.allclose(mean, x.mean(0))


def test_whiten_head_is_learn_heads_whitening_of_the_training_photos(class_folder, tmp_path):
    _, _, train, trainer = _trainer(class_folder, tmp_path, "model.dim=16", "stage1.head_init=whiten")
    reference = trainer.model.eval()
    _, whitening = learn_head(copy.deepcopy(reference), list(train.paths), dim=16)
    rng = torch.get_rng_state()
    trainer.init_head()
    assert torch.equal(rng, torch.get_rng_state())
    w = whitening.projection
    assert torch.allclose(trainer.model.fc.weight.double(), w, atol=1e-6)
    assert torch.allclose(trainer.model.fc.bias.double(), -w @ whitening.mean, atol=1e-5)
    assert torch.equal(trainer.model.bn.running_var, torch.ones(16))


def test_classifier_from_means_is_each_class_mean_descriptor(class_folder, tmp_path):
    cfg, rt, train, trainer = _trainer(class_folder, tmp_path, "model.dim=16", "stage1.classifier_init=means")
    assert trainer.fresh_classifier
    random_rows = trainer.head.weight.detach().clone()
    rng = torch.get_rng_state()
    trainer.init_classifier()
    assert torch.equal(rng, torch.get_rng_state())
    model = trainer.model.eval()
    x = torch.stack([EvalImages(train, [i], cfg.data.image_size)[0][1] for i in range(len(train))])
    with torch.no_grad():
        d = model(x).double()
    labels = torch.as_tensor(train.labels)
    for j in range(train.num_classes):
        want = F.normalize(d[labels == j].mean(0), dim=0)
        assert torch.allclose(trainer.head.weight[j].double(), want, atol=1e-5), j
    assert d.norm(dim=1).min() > 0.99 and not torch.allclose(trainer.head.weight, random_rows)
    rows, descs, errors = descriptors(model, train, cfg.data.image_size, 5, rt, progress=False)
    assert rows == list(range(len(train))) and not errors and torch.allclose(descs, d, atol=1e-5)


def test_a_bad_classifier_init_is_a_config_error_naming_it(class_folder, tmp_path):
    import pytest
    from cfcd.errors import ConfigError
    with pytest.raises(ConfigError, match="classifier_init.*'mean'"):
        _trainer(class_folder, tmp_path, "stage1.classifier_init=mean")
