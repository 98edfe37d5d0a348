"""The two shapes every training loss takes, so that a stage is a list of interchangeable parts.

- A **classifier head** turns embeddings into class logits: ``logits(embeddings, labels)``
  (training logits, margins included) and ``predict(embeddings) -> (class, score)`` (what the
  hard-negative table and the validation accuracy use). Its ``weight`` (num_classes, dim) is
  the ``classifier`` saved in checkpoints. ``logs()`` returns the values worth logging of the
  last batch (e.g. MadaCos' scale and margin).
- A **loss term** maps the step's outputs and labels to a scalar: ``term(outputs, labels)``.
  The contract that lets 1 and N processes train alike: every process returns a value whose
  MEAN OVER THE PROCESSES is the term's loss on the global batch (DDP averages gradients, so
  the gradients then match too). A mean over images already satisfies it (equal shards); a
  sum over images must be rescaled by the term itself. ``logs()`` returns that global value.

New ones are registered by name in ``cfcd.losses.registry``; see docs/extending.md.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import TYPE_CHECKING, ClassVar

import torch
import torch.nn.functional as F
from torch import nn

from .distributed import mean_over_processes

if TYPE_CHECKING:
    from ..model.net import LocalFeatures


@dataclass
class StepOutputs:
    """What one training step produced on this process, for the loss terms."""

    embeddings: torch.Tensor  # (B, d) global descriptors
    logits: torch.Tensor  # (B, num_classes) from the classifier head
    local: LocalFeatures | None = None  # only when a term asks for it (``needs_local``)
    tuple_size: int | None = None  # consecutive rows form tuples of this size (tuple samplers)


class LossTerm(nn.Module):
    """Base of the loss terms: subclasses set ``name`` and implement ``forward(outputs, labels)``
    under the contract of the module docstring."""

    name: ClassVar[str] = ""
    needs_local: ClassVar[bool] = False  # wants ``outputs.local`` (computing it costs memory)
    needs_tuples: ClassVar[bool] = False  # wants a tuple sampler (``outputs.tuple_size``)

    def __call__(self, outputs: StepOutputs, labels: torch.Tensor) -> torch.Tensor:
        value = super().__call__(outputs, labels)
        self._last = float(value.detach())
        return value

    def logs(self) -> dict[str, float]:
        """The last value on the global batch (a collective: every process must call it)."""
        return mean_over_processes({self.name: getattr(self, "_last", math.nan)})


class CosineHead(nn.Module):
    """Base of the cosine classifiers (MadaCos, ArcFace): class weights W (num_classes, dim),
    cos_{j,i} = <x_i / |x_i|, W_j / |W_j|>, prediction = the class of largest cosine."""

    def __init__(self, embedding_dim: int, num_classes: int):
        super().__init__()
        self.embedding_dim = embedding_dim
        self.num_classes = num_classes
        self.weight = nn.Parameter(torch.empty(num_classes, embedding_dim))
        self.reset_parameters()

    def reset_parameters(self) -> None:
        bound = 1.0 / math.sqrt(self.embedding_dim)
        nn.init.uniform_(self.weight, -bound, bound)

    def cosines(self, embeddings: torch.Tensor) -> torch.Tensor:
        # float32 even under autocast: with scales up to ~1e4, fp16 rounding of a cosine near 1
        # (~5e-4) would move a logit by several units.
        with torch.autocast(device_type=embeddings.device.type, enabled=False):
            return F.linear(F.normalize(embeddings.float(), dim=1), F.normalize(self.weight.float(), dim=1))

    def forward(self, embeddings: torch.Tensor, labels: torch.Tensor) -> torch.Tensor:
        return self.logits(embeddings, labels)

    def logits(self, embeddings: torch.Tensor, labels: torch.Tensor) -> torch.Tensor:
        raise NotImplementedError

    @torch.no_grad()
    def predict(self, embeddings: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """(class, cosine) of the nearest class weight, per row."""
        score, pred = self.cosines(embeddings).max(dim=1)
        return pred, score

    def logs(self) -> dict[str, float]:
        return {}

    def extra_repr(self) -> str:
        return f"embedding_dim={self.embedding_dim}, num_classes={self.num_classes}"
