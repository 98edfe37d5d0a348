"""Convolutional trunks by name: the part of a classification network up to its last stage.

Each trunk keeps the parameter names of its source library (torchvision or timm), so that
state dicts of those libraries load into ``CFCDNet.backbone`` key for key.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
import torchvision
from torch import nn

TORCHVISION_RESNETS = {"resnet50": torchvision.models.resnet50, "resnet101": torchvision.models.resnet101}
TIMM_PREFIX = "timm:"


class ResNetTrunk(nn.Module):
    """torchvision ResNet (v1.5: stride on the 3x3 conv) without avgpool and fc."""

    def __init__(self, resnet: torchvision.models.ResNet):
        super().__init__()
        for name in ("conv1", "bn1", "relu", "maxpool", "layer1", "layer2", "layer3", "layer4"):
            setattr(self, name, getattr(resnet, name))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = self.maxpool(self.relu(self.bn1(self.conv1(x))))
        return self.layer4(self.layer3(self.layer2(self.layer1(x))))


class MobileNetV2Trunk(nn.Module):
    """torchvision MobileNetV2 ``features`` (ends with the 1280-channel 1x1 conv + ReLU6)."""

    def __init__(self, mobilenet: torchvision.models.MobileNetV2):
        super().__init__()
        self.features = mobilenet.features

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.features(x)


class TimmTrunk(nn.Module):
    """Any timm model through its ``features_only`` API, last feature level only."""

    def __init__(self, name: str):
        super().__init__()
        try:
            import timm
        except ImportError as err:
            raise ImportError(f"backbone 'timm:{name}' needs timm: pip install 'cfcd[timm]'") from err
        self.body = timm.create_model(name, pretrained=False, features_only=True, out_indices=(-1,))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.body(x)[-1]


@dataclass(frozen=True)
class Backbone:
    module: nn.Module
    channels: int


def build_backbone(name: str) -> Backbone:
    """Randomly initialised trunk for ``name``: resnet50, resnet101, mobilenet_v2 or timm:<model>."""
    if name in TORCHVISION_RESNETS:
        return Backbone(ResNetTrunk(TORCHVISION_RESNETS[name](weights=None)), 2048)
    if name == "mobilenet_v2":
        return Backbone(MobileNetV2Trunk(torchvision.models.mobilenet_v2(weights=None)), 1280)
    if name.startswith(TIMM_PREFIX):
        trunk = TimmTrunk(name[len(TIMM_PREFIX):])
        return Backbone(trunk, trunk.body.feature_info.channels()[-1])
    known = ", ".join([*TORCHVISION_RESNETS, "mobilenet_v2", "timm:<name>"])
    raise ValueError(f"unknown backbone {name!r}; choose one of {known}")
