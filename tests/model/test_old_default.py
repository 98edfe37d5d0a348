"""Indexes and features directories made with a former default model keep working, or are
refused with the command that rebuilds them."""

import numpy as np
import pytest

from cfcd.index import Index, load_index_model
from cfcd.model import WeightsError, load_model, pretrained
from cfcd.model.load import load_described

# What cfcd wrote before models were stored by their own name: the alias "default".
OLD_DEFAULT = {"name": "default", "config": {"backbone": "mobilenet_v2", "dim": 0, "gem_p": 3.0, "gem_learnable": False},
               "dim": 1280}


@pytest.fixture
def mobilenet_installed():
    if not (pretrained.weights_dir() / pretrained.named()["mobilenet_v2-imagenet"].filename).is_file():
        pytest.skip("MobileNetV2 weights not installed (cfcd weights install)")


def test_the_default_is_stored_by_its_own_name(mobilenet_installed):
    if not (pretrained.weights_dir() / pretrained.named()["efficientnet_lite2-imagenet"].filename).is_file():
        pytest.skip("EfficientNet-Lite2 weights not installed (cfcd weights install all)")
    assert load_model("default").name == pretrained.DEFAULT_MODEL == "mobilenet_v2-imagenet+efficientnet_lite2-imagenet"


def test_an_index_of_the_former_default_by_name_loads_mobilenet_v2(mobilenet_installed):
    stored = {"name": "mobilenet_v2-imagenet", "config": OLD_DEFAULT["config"], "dim": 1280}
    model = load_described(stored)
    assert model.name == "mobilenet_v2-imagenet" and model.config.backbone == "mobilenet_v2"


def test_an_index_of_the_former_default_loads_that_model(mobilenet_installed):
    assert pretrained.DEFAULT_MODEL != "mobilenet_v2-imagenet"  # the default moved on
    x = np.eye(1280, dtype=np.float32)[:3]
    index = Index.build(x, ["a.jpg", "b.jpg", "c.jpg"], model=OLD_DEFAULT, settings={"scales": [1.0], "max_side": None})
    model = load_index_model(index)
    assert model.config.backbone == "mobilenet_v2" and model.name == "mobilenet_v2-imagenet"


def test_a_model_that_changed_is_refused_with_the_rebuild_command(mobilenet_installed):
    with pytest.raises(WeightsError, match="former default.*rebuild with --model"):
        load_described({**OLD_DEFAULT, "config": {**OLD_DEFAULT["config"], "backbone": "resnet50", "dim": 512}})
    changed = {"name": "mobilenet_v2-imagenet", "config": {**OLD_DEFAULT["config"], "gem_p": 4.0}}
    with pytest.raises(WeightsError, match="is now.*rebuild with --model mobilenet_v2-imagenet"):
        load_described(changed)
