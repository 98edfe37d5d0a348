"""Every weights layout cfcd reads gives the same outputs as its source model."""

import numpy as np
import pytest
import torch
import torch.nn.functional as F
import torchvision
from refmodels import OfficialCFCD, PyclsResNet, bgr_input, randomize_batchnorm

from cfcd.model import CFCDNet, ModelConfig, WeightsError, load_model, read_checkpoint, save_checkpoint
from cfcd.model.pooling import gem
from cfcd.model.registry import IMAGENET_MEAN, IMAGENET_STD


def rgb_batch(n=2, h=64, w=80, seed=0):
    return torch.from_numpy(np.random.default_rng(seed).integers(0, 256, (n, h, w, 3), dtype=np.uint8))


def rgb_input(rgb_uint8):
    """cfcd's model input: RGB in [0, 1]."""
    return rgb_uint8.permute(0, 3, 1, 2).float() / 255.0


def imagenet(x):
    """What torchvision / timm reference networks take: ImageNet-normalised RGB."""
    return (x - torch.tensor(IMAGENET_MEAN).view(1, 3, 1, 1)) / torch.tensor(IMAGENET_STD).view(1, 3, 1, 1)


@pytest.mark.parametrize("variant", ["deploy", "stage1", "stage2-no-prefix", "bare-state-dict"])
def test_official_cfcd_checkpoint(tmp_path, variant):
    torch.manual_seed(1)
    official = randomize_batchnorm(OfficialCFCD(depth=50, dim=512, num_classes=0 if variant == "deploy" else 7))
    state = official.state_dict()
    if variant == "stage2-no-prefix":
        state = {k.removeprefix("globalmodel."): v for k, v in state.items()}
    path = tmp_path / "model.pyth"
    if variant == "bare-state-dict":  # no model_state key: the official infer.py accepts it too
        torch.save(state, path)
    else:
        torch.save({"epoch": 50, "model_state": state, "optimizer_state": {}, "cfg": "MODEL:\n  DEPTH: 50\n"}, path)

    model = load_model(path)
    assert model.config == ModelConfig(backbone="resnet50", dim=512, gem_p=3.0, preparation="official")
    pixels = rgb_batch()
    with torch.no_grad():
        expected = official(bgr_input(pixels))
        got = model(rgb_input(pixels))
    assert torch.allclose(got, expected, atol=1e-5)

    converted = read_checkpoint(path)
    if variant == "deploy":
        assert converted.classifier is None
    else:
        assert torch.equal(converted.classifier, official.desc_cls.weight.data)


def test_official_resnet101_is_recognised(tmp_path):
    official = OfficialCFCD(depth=101, dim=512)
    path = tmp_path / "r101.pyth"
    torch.save({"model_state": official.state_dict()}, path)
    assert load_model(path).config.backbone == "resnet101"


def test_pycls_imagenet_resnet(tmp_path):
    torch.manual_seed(2)
    trunk = randomize_batchnorm(PyclsResNet(50))
    state = {**trunk.state_dict(), "head.fc.weight": torch.randn(1000, 2048), "head.fc.bias": torch.randn(1000)}
    path = tmp_path / "R-50-1x64d_dds_8gpu.pyth"
    torch.save({"epoch": 100, "model_state": state}, path)
    model = load_model(path)
    assert model.config.dim == 0  # backbone only: descriptor = GeM of the trunk
    pixels = rgb_batch(seed=3)
    with torch.no_grad():
        expected = F.normalize(gem(trunk(bgr_input(pixels))), dim=-1)
        got = model(rgb_input(pixels))
    assert torch.allclose(got, expected, atol=1e-5)


@pytest.mark.parametrize("name", ["resnet50", "mobilenet_v2"])
def test_torchvision_state_dict(tmp_path, name):
    torch.manual_seed(3)
    net = randomize_batchnorm(getattr(torchvision.models, name)(weights=None))
    path = tmp_path / f"{name}.pth"
    torch.save(net.state_dict(), path)
    model = load_model(path)
    assert model.config.backbone == name
    x = rgb_input(rgb_batch(seed=4))
    trunk = torch.nn.Sequential(*list(net.children())[:-2]) if name == "resnet50" else net.features
    with torch.no_grad():
        assert torch.allclose(model(x), F.normalize(gem(trunk(imagenet(x))), dim=-1), atol=1e-5)


def test_timm_state_dict(tmp_path):
    timm = pytest.importorskip("timm")
    torch.manual_seed(4)
    net = randomize_batchnorm(timm.create_model("resnet18", pretrained=False))
    path = tmp_path / "timm_resnet18.pth"
    torch.save({"state_dict": net.state_dict()}, path)
    model = load_model(path, backbone="timm:resnet18")
    x = rgb_input(rgb_batch(seed=5))
    with torch.no_grad():
        assert torch.allclose(model(x), F.normalize(gem(net.forward_features(imagenet(x))), dim=-1), atol=1e-5)


def test_cfcd_checkpoint_round_trip_with_classifier(tmp_path):
    torch.manual_seed(5)
    model = randomize_batchnorm(CFCDNet(ModelConfig(backbone="mobilenet_v2", dim=16, gem_p=4.0, gem_learnable=True)))
    model.pool.p.data.fill_(3.5)
    classifier = torch.randn(9, 16)
    save_checkpoint(tmp_path / "ck.pt", model, classifier, class_map={"a": 0}, epoch=3)
    loaded = load_model(tmp_path / "ck.pt")
    x = rgb_input(rgb_batch(seed=6))
    with torch.no_grad():
        assert torch.allclose(loaded(x), model(x), atol=1e-6)
    converted = read_checkpoint(tmp_path / "ck.pt")
    assert torch.equal(converted.classifier, classifier)
    assert converted.extra["class_map"] == {"a": 0} and converted.extra["epoch"] == 3


@pytest.mark.parametrize("arch", ["vgg11", "efficientnet_b0", "densenet121", "mobilenet_v3_small"])
def test_other_classification_networks_are_not_misread(tmp_path, arch):
    """Their keys start with ``features.`` like MobileNetV2's; the registry's layouts tell them apart."""
    with torch.device("meta"):
        keys = getattr(torchvision.models, arch)().state_dict().keys()
    torch.save({k: torch.zeros(1) for k in keys}, tmp_path / f"{arch}.pth")
    with pytest.raises(WeightsError, match="cannot tell the backbone.*fit no registered backbone.*pass backbone="):
        load_model(tmp_path / f"{arch}.pth")


def test_resnet_depth_and_layout_come_from_the_registry(tmp_path):
    with torch.device("meta"):
        keys = torchvision.models.resnet101().state_dict().keys()
    state = {k: torch.zeros(1) for k in keys}
    torch.save(state, tmp_path / "r101.pth")
    # Keys of a ResNet-101, shapes of nothing: no backbone matches exactly.
    with pytest.raises(WeightsError, match="fit no registered backbone"):
        load_model(tmp_path / "r101.pth")


def test_a_stored_config_decides_the_backbone(tmp_path):
    """A cfcd checkpoint is built from its config, whatever its keys look like."""
    model = CFCDNet(ModelConfig(backbone="mobilenet_v2", dim=8))
    ckpt = tmp_path / "ck.pt"
    save_checkpoint(ckpt, model)
    obj = torch.load(ckpt, weights_only=True)
    obj["config"]["backbone"] = "resnet50"
    torch.save(obj, ckpt)
    with pytest.raises(WeightsError, match="do not (match|fit) the resnet50 model"):
        load_model(ckpt)


def test_mismatched_keys_are_listed(tmp_path):
    state = torchvision.models.resnet50(weights=None).state_dict()
    state.pop("layer4.2.conv3.weight")
    state["layer9.extra.weight"] = torch.zeros(1)
    path = tmp_path / "broken.pth"
    torch.save(state, path)
    with pytest.raises(WeightsError, match=r"broken.pth.*missing keys: backbone.layer4.2.conv3.weight.*unexpected keys: backbone.layer9"):
        load_model(path, backbone="resnet50")
    with pytest.raises(WeightsError, match="cannot tell the backbone.*pass backbone="):
        load_model(path)


def test_shape_mismatch_is_an_error_not_a_silent_filter(tmp_path):
    state = torchvision.models.resnet50(weights=None).state_dict()
    state["layer1.0.conv1.weight"] = torch.zeros(3, 3, 1, 1)
    torch.save(state, tmp_path / "shape.pth")
    with pytest.raises(WeightsError, match="shape.pth"):
        load_model(tmp_path / "shape.pth", backbone="resnet50")
    with pytest.raises(WeightsError, match="fit no registered backbone"):
        load_model(tmp_path / "shape.pth")


def test_bad_sources(tmp_path):
    with pytest.raises(WeightsError, match="neither a weights file nor a known model name"):
        load_model(tmp_path / "missing.pth")
    (tmp_path / "junk.pth").write_bytes(b"not a checkpoint")
    with pytest.raises(WeightsError, match="junk.pth: not a readable PyTorch weights file"):
        load_model(tmp_path / "junk.pth")
