import pytest
import torch
import torch.nn.functional as F

from cfcd.model import CFCDNet, ModelConfig
from cfcd.model.net import local_features
from cfcd.model.pooling import GeM, gem


def test_gem_matches_its_formula():
    x = torch.rand(2, 3, 4, 5) - 0.2  # negatives are clamped
    p = 3.0
    expected = (x.clamp(min=1e-6) ** p).mean(dim=(2, 3)) ** (1 / p)
    assert torch.allclose(gem(x, p), expected, atol=1e-6)
    assert torch.allclose(gem(x.abs() + 0.1, 1.0), (x.abs() + 0.1).mean(dim=(2, 3)), atol=1e-6)


def test_gem_fixed_or_learnable():
    fixed, learnable = GeM(3.0), GeM(3.0, learnable=True)
    assert "p" not in fixed.state_dict() and not list(fixed.parameters())
    assert [n for n, _ in learnable.named_parameters()] == ["p"]
    x = torch.rand(1, 2, 3, 3)
    learnable(x).sum().backward()
    assert learnable.p.grad is not None


def test_global_descriptor_and_local_view():
    torch.manual_seed(0)
    model = CFCDNet(ModelConfig(backbone="mobilenet_v2", dim=24)).eval()
    x = torch.randn(3, 3, 64, 96)
    g, local = model(x, with_local=True)
    assert g.shape == (3, 24) and torch.allclose(g.norm(dim=1), torch.ones(3))
    f4 = model.backbone(model.normalize(x))
    assert local.descriptors.shape == (3, 2 * 3, 1280)
    assert torch.allclose(local.descriptors.norm(dim=-1), torch.ones(3, 6), atol=1e-5)
    # attention is the L1 norm of the raw activations, before normalisation
    assert torch.allclose(local.attention, f4.abs().sum(dim=1).flatten(1))
    assert torch.allclose(model(x), g)
    assert torch.allclose(g, F.normalize(model.bn(model.fc(gem(f4))), dim=-1), atol=1e-6)


def test_headless_model_uses_backbone_width():
    model = CFCDNet(ModelConfig(backbone="mobilenet_v2", dim=0)).eval()
    assert model.output_dim == 1280 and model.fc is None
    assert model(torch.randn(1, 3, 32, 32)).shape == (1, 1280)


def test_local_features_of_known_map():
    f4 = torch.tensor([[[[3.0, 0.0]], [[-4.0, 1.0]]]])  # (1, C=2, H=1, W=2)
    local = local_features(f4)
    assert torch.allclose(local.attention, torch.tensor([[7.0, 1.0]]))
    assert torch.allclose(local.descriptors, torch.tensor([[[0.6, -0.8], [0.0, 1.0]]]))


def test_unknown_backbone_and_config_keys():
    with pytest.raises(ValueError, match="unknown backbone 'vgg16'"):
        CFCDNet(ModelConfig(backbone="vgg16"))
    with pytest.raises(ValueError, match=r"unknown model config keys \['depth'\]"):
        ModelConfig.from_dict({"backbone": "resnet50", "depth": 50})


def test_the_model_normalises_its_unit_range_input_with_its_backbone_statistics():
    from cfcd.model.registry import IMAGENET_MEAN, IMAGENET_STD

    torch.manual_seed(0)
    model = CFCDNet(ModelConfig(backbone="mobilenet_v2", dim=0)).eval()
    x = torch.rand(1, 3, 40, 56)
    mean, std = torch.tensor(IMAGENET_MEAN).view(1, 3, 1, 1), torch.tensor(IMAGENET_STD).view(1, 3, 1, 1)
    with torch.no_grad():
        assert torch.allclose(model(x), F.normalize(gem(model.backbone((x - mean) / std)), dim=-1), atol=1e-6)
    # the statistics are buffers that are not saved: checkpoint keys are those of the layers
    assert not any(k.startswith("input_") for k in model.state_dict())
    assert {n for n, _ in model.named_buffers()} >= {"input_mean", "input_std"}
