"""Generalized-mean (GeM) pooling, Radenovic et al., TPAMI 2018."""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn


def gem(x: torch.Tensor, p: torch.Tensor | float = 3.0, eps: float = 1e-6) -> torch.Tensor:
    """GeM over the spatial positions of ``x`` (B, C, H, W) -> (B, C).

    f_c = ( mean_{h,w} clamp(x_{c,h,w}, eps)^p )^(1/p)
    p = 1 is average pooling, p -> inf is max pooling.
    """
    return F.adaptive_avg_pool2d(x.clamp(min=eps).pow(p), 1).pow(1.0 / p).flatten(1)


class GeM(nn.Module):
    """GeM pooling with a fixed power (a buffer, saved with the model) or a learnable one."""

    def __init__(self, p: float = 3.0, learnable: bool = False, eps: float = 1e-6):
        super().__init__()
        self.eps = eps
        if learnable:
            self.p = nn.Parameter(torch.tensor([float(p)]))
        else:
            # Fixed p lives in the model config, not in state dicts (official ones have none).
            self.register_buffer("p", torch.tensor([float(p)]), persistent=False)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return gem(x, self.p, self.eps)

    def extra_repr(self) -> str:
        return f"p={self.p.item():.3f}, learnable={isinstance(self.p, nn.Parameter)}"
