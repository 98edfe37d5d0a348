"""Class-balanced batches: P classes x K images of each (``per_class`` = K) in every batch.

In a shuffled batch of a small labelled collection most images have no other image of their
class beside them; here every image has K - 1 (P x K sampling, Hermans et al., "In Defense of
the Triplet Loss", 2017). A class with fewer than K images repeats its images to fill a group.
"""

from __future__ import annotations

import random
from typing import Sequence

from ..errors import ConfigError
from .registry import SamplerInputs
from .samplers import SlicedBatchSampler, sample_seed


class BalancedBatchSampler(SlicedBatchSampler):
    """Groups of ``per_class`` images of one class, in a seeded order per epoch; a process's
    batch is a whole number of groups. An epoch has about as many images as the training set."""

    def __init__(self, labels: Sequence[int], per_class: int, global_batch: int, rank=None, world_size=None,
                 seed: int = 0):
        if per_class < 2:
            raise ConfigError(f"sampler.balanced.per_class = {per_class}: a group needs at least 2 images of a class")
        self.unit = per_class
        super().__init__(global_batch, rank, world_size, seed)
        self.labels = list(labels)
        self.per_class = per_class
        if len(self.labels) < global_batch:
            raise ConfigError(f"{len(self.labels)} training images are fewer than one global batch of {global_batch}")

    def plan(self, epoch: int) -> list[int]:
        rng = random.Random(sample_seed(self.seed, epoch, -3))
        by_class: dict[int, list[int]] = {}
        for i, label in enumerate(self.labels):
            by_class.setdefault(label, []).append(i)
        k = self.per_class
        groups = []
        for members in by_class.values():
            rng.shuffle(members)
            count = max(1, len(members) // k)
            filled = (members * -(-count * k // len(members)))[: count * k]
            groups += [filled[g * k:(g + 1) * k] for g in range(count)]
        rng.shuffle(groups)
        return [i for group in groups for i in group]


def balanced(inputs: SamplerInputs, per_class: int = 4) -> BalancedBatchSampler:
    """The registered factory: ``stageN.sampler: balanced`` with ``sampler.balanced.per_class``."""
    return BalancedBatchSampler(inputs.labels, per_class, inputs.global_batch, inputs.rank, inputs.world_size,
                                inputs.seed)
