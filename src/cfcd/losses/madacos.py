"""MadaCos: cosine softmax with a scale and a margin adapted to every batch (CFCD, ICCV 2023).

For embeddings x_i with labels y_i and class weights W_j:

    cos_{j,i} = <x_i / |x_i|, W_j / |W_j|>
    c~        = lower median of the target cosines c_i = cos_{y_i,i} over the global batch
                (all processes), i* its index
    s         = max( ln(K (1 - alpha) / alpha) / (1 - c~),  s_min )
    log B_i   = log sum_{j != y_i} exp(s cos_{j,i})
    m         = max( c~ - (log B_{i*} + ln(alpha / (1 - alpha))) / s,  0 )   (m = 0 in eval mode)
    z_{j,i}   = s cos_{j,i}  for j != y_i,      z_{y_i,i} = s (cos_{y_i,i} - m)
    loss      = cross_entropy(z, y)

m is the margin that gives the median sample a target softmax probability of exactly alpha:
exp(s (c~ - m)) / (exp(s (c~ - m)) + B_{i*}) = alpha. As training raises c~, s and m grow with it
(the paper's progressive increase; there is no schedule). s and m are statistics of the batch, not
functions of it: they are constants for the gradient, d z / d cos = s.

Defaults follow the paper's configs: alpha = 0.02, K = 9,999,999, s_min = 32. ``k="classes"``
sets K to the number of classes (B_i sums the other K - 1 classes' terms): with a
few dozen classes the paper's K makes s (and the margin) far larger than the batch needs
(docs/results.md, issue 22: the small-collection recipe uses it with s_min = 1).
"""

from __future__ import annotations

import math

import torch

from ..errors import ConfigError
from .base import CosineHead
from .distributed import all_gather_cat

# A median cosine of 1 (or just above, after rounding) would divide by zero or flip the sign of s.
_MIN_GAP = 1e-6


def madacos_scale(median: float, alpha: float = 0.02, k: float = 9_999_999, min_scale: float = 32.0) -> float:
    """The scale s from the median target cosine c~ (formula in the module docstring)."""
    return max(math.log(k * (1.0 - alpha) / alpha) / max(1.0 - median, _MIN_GAP), min_scale)


def madacos_margin(median: float, log_b: float, scale: float, alpha: float = 0.02) -> float:
    """The margin m from c~, log B of the median sample and s (formula in the module docstring)."""
    return max(median - (log_b + math.log(alpha / (1.0 - alpha))) / scale, 0.0)


def non_target_logsumexp(cos: torch.Tensor, labels: torch.Tensor, scale: float) -> torch.Tensor:
    """log B_i = log sum_{j != y_i} exp(s cos_{j,i}), per row of ``cos`` (B, num_classes).

    Computed in log space: a plain exp overflows float32 once s cos > 88, and s itself passes 88
    as soon as c~ passes about 0.77.
    """
    z = scale * cos
    z = z.scatter(1, labels[:, None], float("-inf"))
    return torch.logsumexp(z, dim=1)


def madacos_logits(cos: torch.Tensor, labels: torch.Tensor, scale: float, margin: float) -> torch.Tensor:
    """z = s cos with the target entries lowered to s (cos - m); d z / d cos = s."""
    margins = torch.zeros_like(cos).scatter(1, labels[:, None], margin)
    return scale * (cos - margins)


class MadaCos(CosineHead):
    """MadaCos classifier head: ``logits`` (also ``forward``) returns z, to feed to cross-entropy.

    Formulas in the module docstring. After each call, ``last_scale``, ``last_margin`` and
    ``last_median`` hold s, m and c~ of that (global) batch as floats; ``logs()`` returns them.
    """

    def __init__(
        self,
        embedding_dim: int,
        num_classes: int,
        alpha: float = 0.02,
        k: float | str = 9_999_999,
        min_scale: float = 32.0,
    ):
        if not 0.0 < alpha < 1.0:
            raise ConfigError(f"MadaCos alpha is a target probability and must lie in (0, 1), got {alpha}")
        if k == "classes":
            k = num_classes
        if isinstance(k, str) or not k > 0:
            raise ConfigError(f"MadaCos k must be a positive number or 'classes' (the number of classes), got {k!r}")
        if not min_scale > 0:
            raise ConfigError(f"MadaCos min_scale must be positive, got {min_scale!r}")
        super().__init__(embedding_dim, num_classes)
        self.alpha = alpha
        self.k = float(k)
        self.min_scale = min_scale
        self.last_scale = self.last_margin = self.last_median = float("nan")

    def logits(self, embeddings: torch.Tensor, labels: torch.Tensor) -> torch.Tensor:
        cos = self.cosines(embeddings)
        scale, margin, median = self._statistics(cos, labels)
        self.last_scale, self.last_margin, self.last_median = scale, margin, median
        return madacos_logits(cos, labels, scale, margin)

    def logs(self) -> dict[str, float]:
        return {"scale": self.last_scale, "margin": self.last_margin, "median_cos": self.last_median}

    @torch.no_grad()
    def _statistics(self, cos: torch.Tensor, labels: torch.Tensor) -> tuple[float, float, float]:
        """s, m and c~ of the global batch (float64: s cos reaches 1e4)."""
        cos = cos.double()
        targets = all_gather_cat(cos.gather(1, labels[:, None]).squeeze(1))
        median, index = targets.median(dim=0)
        median = median.item()
        scale = madacos_scale(median, self.alpha, self.k, self.min_scale)
        if not self.training:
            return scale, 0.0, median
        log_b = all_gather_cat(non_target_logsumexp(cos, labels, scale))[index].item()
        return scale, madacos_margin(median, log_b, scale, self.alpha), median

    def extra_repr(self) -> str:
        return f"{super().extra_repr()}, alpha={self.alpha}, k={self.k}, min_scale={self.min_scale}"
