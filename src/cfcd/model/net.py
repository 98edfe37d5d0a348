"""CFCDNet: backbone -> GeM -> Linear(C, d) -> BatchNorm1d -> L2, plus the local view used in
stage-2 training (per-position descriptors and their parameter-free attention)."""

from __future__ import annotations

from dataclasses import asdict, dataclass, fields
from typing import NamedTuple

import torch
import torch.nn.functional as F
from torch import nn

from ..errors import ConfigError
from .backbones import build_backbone
from .pooling import GeM


@dataclass
class ModelConfig:
    """Everything needed to rebuild the network; saved in every checkpoint.

    ``dim = 0`` means no projection head: the descriptor is the L2-normalised GeM vector of
    the backbone (C-dimensional), which is how an ImageNet-only model is used before training.
    ``preparation`` names how images are resampled for this model (``cfcd.data.images``):
    ``official`` for official CFCD checkpoints, ``cfcd`` (the value of configs saved before
    the field existed) otherwise.
    """

    backbone: str = "resnet50"
    dim: int = 512
    gem_p: float = 3.0
    gem_learnable: bool = False
    preparation: str = "cfcd"

    def to_dict(self) -> dict:
        return asdict(self)

    @classmethod
    def from_dict(cls, data: dict) -> "ModelConfig":
        known = {f.name for f in fields(cls)}
        unknown = sorted(set(data) - known)
        if unknown:
            raise ConfigError(f"unknown model config keys {unknown}; known keys are {sorted(known)}")
        return cls(**data)


class LocalFeatures(NamedTuple):
    """Stage-2 view of the last feature map f4 (B, C, H, W)."""

    descriptors: torch.Tensor  # (B, H*W, C), L2-normalised per position
    attention: torch.Tensor  # (B, H*W), a(x) = sum_c |f4_c(x)|, before normalisation


def local_features(f4: torch.Tensor) -> LocalFeatures:
    """Per-position descriptors and attention a(x) = ||f4(x)||_1 of a feature map."""
    flat = f4.flatten(2).transpose(1, 2)  # (B, HW, C)
    return LocalFeatures(F.normalize(flat, dim=-1), flat.abs().sum(dim=-1))


class CFCDNet(nn.Module):
    def __init__(self, config: ModelConfig | None = None):
        super().__init__()
        self.config = config or ModelConfig()
        trunk = build_backbone(self.config.backbone)
        self.backbone = trunk.module
        self.backbone_channels = trunk.channels
        # The backbone's own input statistics; not saved, so checkpoint keys stay those of the layers.
        self.register_buffer("input_mean", torch.tensor(trunk.spec.mean).view(1, 3, 1, 1), persistent=False)
        self.register_buffer("input_std", torch.tensor(trunk.spec.std).view(1, 3, 1, 1), persistent=False)
        self.pool = GeM(self.config.gem_p, learnable=self.config.gem_learnable)
        if self.config.dim:
            self.fc = nn.Linear(trunk.channels, self.config.dim, bias=True)
            self.bn = nn.BatchNorm1d(self.config.dim)
        else:
            self.fc = self.bn = None

    @property
    def output_dim(self) -> int:
        return self.config.dim or self.backbone_channels

    def head(self, f4: torch.Tensor) -> torch.Tensor:
        """Global descriptor (B, d), L2-normalised, from the last feature map."""
        g = self.pool(f4)
        if self.fc is not None:
            g = self.bn(self.fc(g))
        return F.normalize(g, dim=-1)

    def normalize(self, x: torch.Tensor) -> torch.Tensor:
        """RGB [0, 1] -> the backbone's input convention, (x - mean) / std."""
        return (x - self.input_mean) / self.input_std

    def forward(self, x: torch.Tensor, with_local: bool = False):
        """``x`` (B, 3, H, W), RGB in [0, 1] (``cfcd.data.images.to_tensor``) -> descriptors (B, d),
        normalised with the backbone's own mean/std first.

        With ``with_local=True`` returns ``(descriptors, LocalFeatures)``.
        """
        f4 = self.backbone(self.normalize(x))
        g = self.head(f4)
        return (g, local_features(f4)) if with_local else g
