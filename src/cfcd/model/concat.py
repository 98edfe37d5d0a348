"""Several models as one: their descriptors side by side.

For member descriptors d_1 ... d_k (each L2-normalised), the descriptor is

    d = [d_1, ..., d_k] / sqrt(k)

and with multi-scale extraction each member's part is summed over the scales and
L2-normalised on its own before the parts are joined (``part_dims`` tells ``cfcd.extract``
where the parts are), so every member weighs the same whatever its scale agreement. This is
how ``cfcd.selection`` scores a candidate written ``A+B``, and what the default model is
(docs/results.md, "Model selection").

A concatenation is named by its members' names joined by ``+`` (``load_model`` builds it);
its config, stored with indexes and features, lists the members' configs.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import nn

from ..errors import ConfigError
from .net import ModelConfig

SEPARATOR = "+"


@dataclass(frozen=True)
class ConcatConfig:
    """The members' configs, in order; all members share one image preparation."""

    members: tuple[ModelConfig, ...]

    def __post_init__(self):
        if len(self.members) < 2:
            raise ConfigError("a concatenation needs at least two models")
        preparations = {m.preparation for m in self.members}
        if len(preparations) > 1:
            raise ConfigError(f"the models of a concatenation must share one image preparation, not {sorted(preparations)}")

    @property
    def preparation(self) -> str:
        return self.members[0].preparation

    @property
    def part_dims(self) -> tuple[int, ...]:
        from .registry import get

        return tuple(m.dim or get(m.backbone).channels for m in self.members)

    @property
    def dim(self) -> int:
        return sum(self.part_dims)

    def to_dict(self) -> dict:
        return {"members": [m.to_dict() for m in self.members]}

    @classmethod
    def from_dict(cls, data: dict) -> "ConcatConfig":
        unknown = sorted(set(data) - {"members"})
        if unknown:
            raise ConfigError(f"unknown concatenation config keys {unknown}")
        return cls(tuple(ModelConfig.from_dict(m) for m in data["members"]))


def config_from_dict(data: dict) -> ModelConfig | ConcatConfig:
    """A stored model config: one network's, or a concatenation's (a ``members`` list)."""
    return ConcatConfig.from_dict(data) if "members" in data else ModelConfig.from_dict(data)


def part_dims(model) -> tuple[int, ...]:
    """Where the separately normalised parts of ``model``'s descriptor are (one part for a
    single network)."""
    config = getattr(model, "config", None)
    dims = getattr(config, "part_dims", None)
    return tuple(dims) if dims else (int(getattr(model, "output_dim", None) or config.dim),)


def normalize_parts(x: torch.Tensor, parts: tuple[int, ...]) -> torch.Tensor:
    """Rows of ``x`` (..., sum(parts)) with each part L2-normalised, then divided by
    sqrt(number of parts), so that rows have unit norm: [p_1/|p_1|, ..., p_k/|p_k|] / sqrt(k)."""
    if len(parts) == 1:
        return F.normalize(x, dim=-1)
    return torch.cat([F.normalize(p, dim=-1) for p in x.split(list(parts), dim=-1)], dim=-1) / len(parts) ** 0.5


class ConcatNet(nn.Module):
    """Members' L2-normalised descriptors side by side, divided by sqrt(k) (unit norm)."""

    def __init__(self, members: list[nn.Module], name: str | None = None):
        super().__init__()
        self.members = nn.ModuleList(members)
        self.config = ConcatConfig(tuple(m.config for m in members))
        self.name = name or SEPARATOR.join(str(getattr(m, "name", "unnamed")) for m in members)

    @property
    def output_dim(self) -> int:
        return self.config.dim

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """RGB [0, 1] (B, 3, H, W) -> (B, sum of the members' dims)."""
        return normalize_parts(torch.cat([m(x) for m in self.members], dim=1), self.config.part_dims)
