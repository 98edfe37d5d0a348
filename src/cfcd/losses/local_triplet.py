"""Stage-2 local triplet loss with attention-constrained matching (CFCD, ICCV 2023).

The batch is a sequence of tuples of T images [anchor, positive, T-2 negatives]. Per tuple, with
L2-normalised local descriptors Q (anchor), P (positive), N_t (negatives) of H*W positions each,
and a_P the positive's attention:

    D[i, j]   = |Q_i - P_j|                          (Euclidean)
    i(j)      = argmin_i D[i, j]
    keep (i(j), j) iff   (a) j = argmin_j' D[i(j), j']                  (mutual nearest neighbour)
                         (b) D[i(j), j] / (second-smallest of D[:, j]) <= ratio   (Lowe, 0.9)
                         (c) j is among the floor(HW/2) positions of largest a_P  (prominent)
    n_t(q)    = argmin_{n in N_t} |q - n|            (searched on detached features)
    L         = lambda * sum_{kept (q, p)} sum_t max(0, |q - p|^2 - |q - n_t(q)|^2 + mu)

with mu = 0.1; a tuple with no kept pair contributes 0; L sums (not averages) over tuples.

As a stage's loss term (``LocalTripletLoss``) lambda is the term's weight in the stage
(``stage2.terms.local_triplet``) and L over the global batch of B images is normalised to
L * norm_images / B: the official 8 x 16 runs summed L over each GPU's 16 images and DDP averaged
the 8 GPUs, i.e. (global sum) / 8 = (global sum) * 16 / 128, so norm_images = 16 reproduces
them on any number of processes.

lambda: the official configs set LAMDA: 0.05, but the official loss class ignores the configured
value and builds its triplet term with its default weight 1.0, so the released models were trained
with lambda = 1.0. The recipes use 1.0 to reproduce them; 0.05 is what the configs say.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F

from ..errors import ConfigError
from .base import LossTerm, StepOutputs


def prominent_mask(attention: torch.Tensor) -> torch.Tensor:
    """Boolean mask (..., HW) of the floor(HW/2) positions of largest attention."""
    top = attention.topk(attention.shape[-1] // 2, dim=-1).indices
    return torch.zeros_like(attention, dtype=torch.bool).scatter(-1, top, True)


@torch.no_grad()
def match_pairs(
    anchor: torch.Tensor, positive: torch.Tensor, positive_attention: torch.Tensor, ratio: float = 0.9
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """Kept pairs (conditions (a)-(c) of the module docstring) of G tuples at once.

    ``anchor``, ``positive``: (G, HW, C); ``positive_attention``: (G, HW). Returns index tensors
    ``(tuple, anchor_position, positive_position)``, one entry per kept pair.
    """
    d = torch.cdist(anchor, positive)  # (G, HW anchor, HW positive)
    two = d.topk(2, dim=1, largest=False)  # the two nearest anchor positions of each column j
    best_i = two.indices[:, 0]
    columns = torch.arange(d.shape[2], device=d.device)
    mutual = d.argmin(dim=2).gather(1, best_i) == columns
    # A division, as in the formula: two zero distances (0/0) fail the test.
    distinctive = two.values[:, 0] / two.values[:, 1] <= ratio
    g, j = (mutual & distinctive & prominent_mask(positive_attention)).nonzero(as_tuple=True)
    return g, best_i[g, j], j


@torch.no_grad()
def nearest_negatives(anchor: torch.Tensor, negatives: torch.Tensor) -> torch.Tensor:
    """For every anchor position and negative image, the nearest position of that negative.

    ``anchor``: (G, HW, C); ``negatives``: (G, T-2, HW', C). Returns (G, HW, T-2) indices.
    """
    g, t, hw, c = negatives.shape
    d = torch.cdist(anchor, negatives.reshape(g, t * hw, c))
    return d.view(g, -1, t, hw).argmin(dim=-1)


def split_tuples(
    local_descriptors: torch.Tensor, attention: torch.Tensor, tuple_size: int
) -> tuple[torch.Tensor, torch.Tensor]:
    """(B, HW, C), (B, HW) -> (G, T, HW, C), (G, T, HW): consecutive rows form one tuple."""
    b, hw, c = local_descriptors.shape
    if tuple_size < 3:
        raise ConfigError(f"a tuple is [anchor, positive, negatives...]: tuple_size must be >= 3, got {tuple_size}")
    if b % tuple_size:
        raise ConfigError(
            f"batch of {b} images is not a whole number of tuples of {tuple_size}; "
            "make the per-process batch size a multiple of the tuple size"
        )
    if hw < 2:
        raise ConfigError(f"the ratio test needs at least 2 local descriptors per image, got {hw}")
    if attention.shape != (b, hw):
        raise ValueError(f"attention must have shape {(b, hw)} to match the descriptors, got {tuple(attention.shape)}")
    return local_descriptors.reshape(-1, tuple_size, hw, c), attention.reshape(-1, tuple_size, hw)


def local_triplet_loss(
    local_descriptors: torch.Tensor,
    attention: torch.Tensor,
    margin: float = 0.1,
    weight: float = 1.0,
    ratio: float = 0.9,
    tuple_size: int = 8,
) -> torch.Tensor:
    """L of the module docstring, summed over all tuples of the batch (a scalar)."""
    tuples, att = split_tuples(local_descriptors, attention, tuple_size)
    anchor, positive, negatives = tuples[:, 0], tuples[:, 1], tuples[:, 2:]
    g, i, j = match_pairs(anchor, positive, att[:, 1], ratio)
    q, p = anchor[g, i], positive[g, j]  # (K, C)
    t = torch.arange(negatives.shape[1], device=negatives.device)
    n = negatives[g[:, None], t, nearest_negatives(anchor, negatives)[g, i]]  # (K, T-2, C)
    d_pos = (q - p).pow(2).sum(-1)
    d_neg = (q[:, None] - n).pow(2).sum(-1)
    # With no kept pair this is a sum over nothing: 0, still attached to the graph.
    return weight * F.relu(d_pos[:, None] - d_neg + margin).sum()


class LocalTripletLoss(LossTerm):
    """The local triplet loss as a stage's loss term (formulas and the lambda note in the module
    docstring; lambda is the term's weight in the stage).

    Reads ``outputs.local`` (descriptors (B, HW, C), L2-normalised per position, and attention
    (B, HW), from ``cfcd.model.net.local_features``) grouped in tuples of ``outputs.tuple_size``.
    Returns this process's sum times norm_images / (its batch size): the mean of that over W
    processes of equal batches b is (global sum) * norm_images / (W b), the module docstring's
    normalised L, so gradients do not depend on W.
    """

    name = "local_triplet"
    needs_local = True
    needs_tuples = True

    def __init__(self, margin: float = 0.1, ratio: float = 0.9, norm_images: int = 16):
        super().__init__()
        self.margin = margin
        self.ratio = ratio
        self.norm_images = norm_images

    def forward(self, outputs: StepOutputs, labels: torch.Tensor) -> torch.Tensor:
        if outputs.local is None or not outputs.tuple_size:
            raise ConfigError("the local_triplet term needs local features in tuples: use it in a stage with sampler = tuples")
        local = outputs.local
        total = local_triplet_loss(local.descriptors.float(), local.attention.float(), self.margin, 1.0,
                                   self.ratio, outputs.tuple_size)
        return total * (self.norm_images / local.descriptors.shape[0])

    def extra_repr(self) -> str:
        return f"margin={self.margin}, ratio={self.ratio}, norm_images={self.norm_images}"
