"""EfficientNet-Lite0/1/2 with their offline ImageNet weights give the descriptors of the
reference implementation (the PyPI package's own forward pass), recorded once in
tests/fixtures/efficientnet_lite_reference.npz by tests/fixtures/make_lite_reference.py."""

from pathlib import Path

import numpy as np
import pytest
import torch

from cfcd.data.images import to_tensor
from cfcd.extraction import extract
from cfcd.model import load_model, pretrained
from cfcd.settings import ExtractionSettings, Runtime
from make_lite_reference import hand_made_image

FIXTURE = Path(__file__).parents[1] / "fixtures" / "efficientnet_lite_reference.npz"
NAMES = ["efficientnet_lite0", "efficientnet_lite1", "efficientnet_lite2"]


@pytest.fixture(params=NAMES)
def lite(request):
    name = f"{request.param}-imagenet"
    if not (pretrained.weights_dir() / pretrained.named()[name].filename).is_file():
        pytest.skip(f"{name} weights not installed (cfcd weights install {name}; scripts/setup.sh installs them)")
    return request.param, load_model(name)


def test_offline_weights_give_the_reference_descriptor(lite):
    backbone, model = lite
    expected = np.load(FIXTURE)[backbone]
    assert model.config.backbone == backbone and model.output_dim == 1280
    with torch.no_grad():
        got = model(to_tensor(hand_made_image())[None])[0].numpy()
    np.testing.assert_allclose(got, expected, atol=2e-6)
    # the extraction path (BatchNorm folded into the convolutions, channels-last) agrees too
    fused = extract(model, [hand_made_image()], ExtractionSettings((1.0,), max_side=None), Runtime(progress=False))[0]
    assert float(fused @ expected) > 1 - 1e-5


def test_tensorflow_normalisation_is_carried_by_the_model(lite):
    _, model = lite
    assert torch.allclose(model.input_mean.flatten(), torch.full((3,), 127 / 255))
    assert torch.allclose(model.input_std.flatten(), torch.full((3,), 128 / 255))
