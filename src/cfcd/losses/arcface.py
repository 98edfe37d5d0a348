"""ArcFace: additive angular margin (Deng et al., CVPR 2019), as a classifier head.

For embeddings x_i with labels y_i and class weights W_j, theta_{j,i} = arccos(cos_{j,i}):

    z_{j,i}   = s cos_{j,i}                    for j != y_i
    z_{y_i,i} = s cos(theta_{y_i,i} + m)       if theta_{y_i,i} + m <= pi
              = s (cos_{y_i,i} - m sin(m))     otherwise (keeps z decreasing in theta)
    loss      = cross_entropy(z, y)            (the stage's cross_entropy term)

with the paper's s = 64, m = 0.5. Unlike MadaCos, s and m are fixed.
"""

from __future__ import annotations

import math

import torch

from .base import CosineHead


class ArcFace(CosineHead):
    def __init__(self, embedding_dim: int, num_classes: int, scale: float = 64.0, margin: float = 0.5):
        super().__init__(embedding_dim, num_classes)
        self.scale = scale
        self.margin = margin

    def logits(self, embeddings: torch.Tensor, labels: torch.Tensor) -> torch.Tensor:
        cos = self.cosines(embeddings)
        target = cos.gather(1, labels[:, None])
        if self.training:
            # 1 - 1e-7 keeps the gradient of arccos finite at cos = +-1.
            theta = torch.acos(target.clamp(-1 + 1e-7, 1 - 1e-7))
            target = torch.where(theta + self.margin <= math.pi, torch.cos(theta + self.margin),
                                 target - self.margin * math.sin(self.margin))
        return self.scale * cos.scatter(1, labels[:, None], target)

    def logs(self) -> dict[str, float]:
        return {"scale": self.scale, "margin": self.margin}

    def extra_repr(self) -> str:
        return f"{super().extra_repr()}, scale={self.scale}, margin={self.margin}"
