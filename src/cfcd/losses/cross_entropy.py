"""Cross-entropy on the classifier head's logits: loss = mean_i -log softmax(z_i)[y_i].

The mean over this process's images; with equal shards, the mean over processes is the mean
over the global batch, as the loss-term contract asks (``cfcd.losses.base``).
"""

from __future__ import annotations

import torch
import torch.nn.functional as F

from .base import LossTerm, StepOutputs


class CrossEntropy(LossTerm):
    name = "cross_entropy"

    def forward(self, outputs: StepOutputs, labels: torch.Tensor) -> torch.Tensor:
        return F.cross_entropy(outputs.logits.float(), labels)
