"""Batch samplers by name: what a recipe's ``stageN.sampler`` refers to, and where its
``sampler.<name>.<parameter>`` settings go.

Each entry is a factory ``make(inputs: SamplerInputs, **params)`` registered as
``"module:function"`` (``cfcd.registry.Registry``) and imported on first use, so listing the
names (``cfcd train --help``, error messages) loads no torch. A new sampler is one file plus one
``register`` line here (docs/extending.md).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Sequence

from ..registry import Registry


@dataclass(frozen=True)
class SamplerInputs:
    """What every sampler is built from: the training images' class labels, the hard-negative
    table (each image's predicted class, or None), the global batch size, this process's rank
    and the number of processes, and the stage's seed."""

    labels: Sequence[int]
    predictions: Sequence[int] | None
    global_batch: int
    rank: int
    world_size: int
    seed: int


SAMPLERS = Registry("sampler", home="cfcd.train.registry")
SAMPLERS.register("shuffle", "cfcd.train.samplers:shuffle")
SAMPLERS.register("tuples", "cfcd.train.samplers:tuples")
SAMPLERS.register("balanced", "cfcd.train.balanced:balanced")
