"""A concatenation of models is one model: its descriptor, its name, its stored identity, ONNX."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from cfcd import ExtractionSettings, Runtime, extract
from cfcd.extraction import describe_model, same_model
from cfcd.index import Index, load_index_model
from cfcd.model import CFCDNet, ModelConfig, WeightsError, load_model, pretrained, save_checkpoint
from cfcd.model.concat import ConcatConfig, ConcatNet, config_from_dict
from cfcd.model.load import load_described, weights_path
from cfcd.whiten import learn_head

QUIET = Runtime(progress=False)
SETTINGS = ExtractionSettings((0.7071, 1.0, 1.4142), max_side=64)


@pytest.fixture
def members(tmp_path):
    """Two small random models with other backbones and dimensions, saved as files."""
    torch.manual_seed(0)
    a = CFCDNet(ModelConfig(backbone="mobilenet_v2", dim=32)).eval()
    b = CFCDNet(ModelConfig(backbone="efficientnet_lite0", dim=0)).eval()
    paths = [tmp_path / "a.pt", tmp_path / "b.pt"]
    for model, path in zip((a, b), paths):
        save_checkpoint(path, model)
    return [load_model(p) for p in paths], paths


class WidthCode(torch.nn.Module):
    """A descriptor that changes with the input width, so that its scales disagree (a random
    network's barely do) and its multi-scale sum is shorter than the other model's."""

    config = ModelConfig(backbone="mobilenet_v2", dim=8)

    def forward(self, x):
        return torch.nn.functional.one_hot(torch.full((x.shape[0],), x.shape[-1] % 8), 8).float()


def test_each_model_part_is_summed_over_scales_and_normalised_on_its_own(members, image_folder):
    (a, _), _ = members
    b = WidthCode()
    images = sorted(image_folder.rglob("*.jpg"))
    got = extract(ConcatNet([a, b]), images, SETTINGS, QUIET)
    parts = [extract(m, images, SETTINGS, QUIET) for m in (a, b)]
    assert got.shape == (len(images), 32 + 8)
    np.testing.assert_allclose(got, np.hstack(parts) / np.sqrt(2), atol=1e-5)
    np.testing.assert_allclose(np.linalg.norm(got, axis=1), 1.0, atol=1e-5)


def test_a_name_of_files_joined_by_plus_is_their_concatenation_and_is_stored_as_such(members, image_folder):
    (a, b), paths = members
    name = f"{paths[0]}+{paths[1]}"
    model = load_model(name)
    assert isinstance(model, ConcatNet) and model.name == name and model.output_dim == 32 + 1280
    stored = describe_model(model)
    assert stored["config"] == {"members": [a.config.to_dict(), b.config.to_dict()]}
    assert isinstance(config_from_dict(stored["config"]), ConcatConfig)
    # an index keeps the identity: the model it loads gives the descriptors it holds
    images = sorted(image_folder.rglob("*.jpg"))
    x = extract(model, images, SETTINGS, QUIET)
    index = Index.build(x, [str(p) for p in images], model=stored, settings=SETTINGS)
    again = load_index_model(index)
    assert same_model(describe_model(again), stored)
    np.testing.assert_allclose(extract(again, images, SETTINGS, QUIET), x, atol=1e-6)
    # a member that changed is refused with the rebuild command
    save_checkpoint(paths[1], CFCDNet(ModelConfig(backbone="efficientnet_lite0", dim=16)))
    with pytest.raises(WeightsError, match="rebuild with --model"):
        load_described(stored)


def test_onnx_export_keeps_the_parts(members, image_folder, tmp_path):
    from cfcd.export import export_onnx

    (a, b), _ = members
    model = ConcatNet([a, b])
    path = export_onnx(model, tmp_path / "ab.onnx", example_size=(64, 64))
    onnx_model = load_model(path)
    assert onnx_model.config == model.config and onnx_model.output_dim == model.output_dim
    images = sorted(image_folder.rglob("*.jpg"))
    np.testing.assert_allclose(extract(onnx_model, images, SETTINGS, QUIET), extract(model, images, SETTINGS, QUIET), atol=1e-4)


def test_what_a_concatenation_cannot_be_is_said(members):
    (a, b), paths = members
    with pytest.raises(WeightsError, match="load the models of a concatenation by name"):
        load_model(f"{paths[0]}+{paths[1]}", backbone="timm:resnet18")
    with pytest.raises(WeightsError, match="no single weights file; name one of its models"):
        weights_path("default")
    with pytest.raises(ValueError, match="at least two"):
        ConcatConfig((a.config,))
    with pytest.raises(ValueError, match="a head is learned on one network's GeM vectors; name one network"):
        learn_head(ConcatNet([a, b]), ["photo.jpg"])
    official = ModelConfig(backbone="mobilenet_v2", dim=0, preparation="official")
    with pytest.raises(ValueError, match="share one image preparation"):
        ConcatConfig((a.config, official))


def test_the_default_model_is_mobilenet_v2_beside_efficientnet_lite2():
    names = pretrained.members("default")
    assert names == ["mobilenet_v2-imagenet", "efficientnet_lite2-imagenet"]
    if not all((pretrained.weights_dir() / pretrained.named()[n].filename).is_file() for n in names):
        pytest.skip("ImageNet weights not installed (cfcd weights install all)")
    model = load_model("default")
    assert model.name == pretrained.DEFAULT_MODEL and model.config.part_dims == (1280, 1280)
    assert [m.config.backbone for m in model.members] == ["mobilenet_v2", "efficientnet_lite2"]
