"""Batch samplers for one process or many: every rank computes the same global order for an
epoch and takes its own contiguous slice of each global batch.

- ``ShuffleBatchSampler`` (stage 1): a seeded permutation per epoch.
- ``TupleBatchSampler`` (stage 2): tuples [anchor, positive, negatives...] built by
  ``hard_negative_tuples`` (spec section 4); a rank's slice is a whole number of tuples, so a
  tuple never straddles two processes.

Both yield ``(index, seed)`` pairs: ``seed`` fixes the sample's augmentation. ``set_epoch(epoch,
start_step)`` positions the sampler anywhere in an epoch, which is how a run resumes mid-epoch.

A recipe names its sampler (``stageN.sampler``) from ``cfcd.train.registry.SAMPLERS``; each
entry is a factory ``make(inputs: SamplerInputs, **params)`` (``shuffle`` and ``tuples`` below)
whose keyword parameters are set in the recipe as ``sampler.<name>.<parameter>``
(docs/extending.md has a worked example).
"""

from __future__ import annotations

import logging
import random
from collections import Counter
from typing import Sequence

import torch
from torch.utils.data import Sampler

from ..errors import ConfigError, InputError
from .registry import SamplerInputs

log = logging.getLogger(__name__)

# Probabilities of the hard-negative sampler (spec section 4, official sampler).
P_CONFUSED_GIVEN_CORRECT = 0.5  # correct anchor: a negative slot takes an image of FP_c
P_CONFUSED_GIVEN_WRONG = 0.33  # misclassified anchor: a negative slot takes an image of FP_c ...
P_PREDICTED_GIVEN_WRONG = 0.5  # ... else, with this probability, an image of the predicted class


def sample_seed(seed: int, epoch: int, position: int) -> int:
    """The augmentation seed of the sample at ``position`` of the epoch's global order."""
    return ((seed * 1_000_003 + epoch) * 1_000_000_007 + position) % (2**63)


class _Pools:
    """Unused images per class for one pass of the tuple sampler (sampling without replacement).

    Lists are shuffled once and consumed from the end; an image taken through one list (its
    class, TP_c or FP_c) is marked used and skipped lazily in the others.
    """

    def __init__(self, labels: Sequence[int], predictions: Sequence[int] | None, rng: random.Random):
        self.labels = labels
        self.used = bytearray(len(labels))
        by_class: dict[int, list[int]] = {}
        for i, c in enumerate(labels):
            by_class.setdefault(c, []).append(i)
        self.pools = by_class
        self.count = {c: len(v) for c, v in by_class.items()}
        self.tp: dict[int, list[int]] = {}
        self.fp: dict[int, list[int]] = {}
        if predictions is not None:
            for i, (c, p) in enumerate(zip(labels, predictions)):
                (self.tp if c == p else self.fp).setdefault(p, []).append(i)
        for table in (self.pools, self.tp, self.fp):
            for c in sorted(table):
                rng.shuffle(table[c])
        # Anchor classes (>= 2 unused images) as a list with O(1) removal, in a deterministic order.
        self.anchors = sorted(c for c, n in self.count.items() if n >= 2)
        self._slot = {c: k for k, c in enumerate(self.anchors)}
        self.available = sorted(self.count)  # classes with >= 1 unused image
        self._avail_slot = {c: k for k, c in enumerate(self.available)}

    @staticmethod
    def _remove(items: list[int], slots: dict[int, int], c: int) -> None:
        k = slots.pop(c)
        last = items.pop()
        if last != c:
            items[k] = last
            slots[last] = k

    def has(self, items: list[int] | None) -> bool:
        while items and self.used[items[-1]]:
            items.pop()
        return bool(items)

    def take(self, items: list[int] | None) -> int | None:
        if not self.has(items):
            return None
        i = items.pop()
        self.used[i] = 1
        c = self.labels[i]
        self.count[c] -= 1
        if self.count[c] == 1:
            self._remove(self.anchors, self._slot, c)
        elif self.count[c] == 0:
            self._remove(self.available, self._avail_slot, c)
        return i


def hard_negative_tuples(
    labels: Sequence[int],
    predictions: Sequence[int] | None,
    tuple_size: int,
    num_tuples: int,
    seed: int,
) -> list[list[int]]:
    """``num_tuples`` tuples of image indices [anchor, positive, tuple_size - 2 negatives].

    ``predictions[i]`` is the stage-1 top-1 class of image i (``None``: random tuples, no hard
    negatives). TP_c = images of c predicted c, FP_c = images of other classes predicted c.
    - anchor class c uniform among classes with >= 2 unused images; anchor a random image of c;
    - a correctly classified: positive = another image of c; each negative slot takes an image of
      FP_c with probability 0.5;
    - a misclassified as c': positive = an image of TP_c if any is left, else another image of c;
      each negative slot takes an image of FP_c with probability 0.33, else with probability 0.5
      an image of c';
    - slots still empty take one image each from random other classes (distinct while there are
      enough of them).
    Images are drawn without replacement; when no anchor class is left, every pool is refilled.
    Deterministic in ``seed``.
    """
    if tuple_size < 3:
        raise ConfigError(f"a tuple is [anchor, positive, negatives...]: tuple_size must be >= 3, got {tuple_size}")
    if predictions is not None and len(predictions) != len(labels):
        raise ValueError(f"{len(predictions)} predictions for {len(labels)} images")
    sizes = Counter(labels)
    if len(sizes) < 2 or max(sizes.values()) < 2:
        raise InputError("tuples need at least 2 classes and a class with at least 2 images")
    rng = random.Random(seed)
    pools = _Pools(labels, predictions, rng)
    tuples: list[list[int]] = []
    fresh = True
    while len(tuples) < num_tuples:
        if not pools.anchors:
            pools, fresh = _Pools(labels, predictions, rng), True
        built = _one_tuple(pools, predictions, tuple_size, rng)
        if built is None:
            if fresh:
                raise InputError(f"too few images or classes to fill a tuple of {tuple_size} images")
            pools, fresh = _Pools(labels, predictions, rng), True
            continue
        tuples.append(built)
        fresh = False
    return tuples


def _one_tuple(pools: _Pools, predictions, tuple_size: int, rng: random.Random) -> list[int] | None:
    c = rng.choice(pools.anchors)
    anchor = pools.take(pools.pools[c])
    predicted = c if predictions is None else predictions[anchor]
    if predicted == c or not pools.has(pools.tp.get(c)):
        positive = pools.take(pools.pools[c])
    else:
        positive = pools.take(pools.tp[c])
    negatives: list[int] = []
    if predictions is not None:
        for _ in range(tuple_size - 2):
            n = None
            if predicted == c:
                if rng.random() < P_CONFUSED_GIVEN_CORRECT:
                    n = pools.take(pools.fp.get(c))
            elif rng.random() < P_CONFUSED_GIVEN_WRONG and pools.has(pools.fp.get(c)):
                n = pools.take(pools.fp[c])
            elif rng.random() < P_PREDICTED_GIVEN_WRONG:
                n = pools.take(pools.pools.get(predicted))
            if n is not None:
                negatives.append(n)
    while len(negatives) < tuple_size - 2:
        others = [k for k in pools.available if k != c]
        if not others:
            return None
        need = tuple_size - 2 - len(negatives)
        for k in rng.sample(others, min(need, len(others))):
            negatives.append(pools.take(pools.pools[k]))
    return [anchor, positive, *negatives]


def _dist_defaults(rank: int | None, world_size: int | None) -> tuple[int, int]:
    if rank is not None and world_size is not None:
        return rank, world_size
    if torch.distributed.is_available() and torch.distributed.is_initialized():
        return torch.distributed.get_rank(), torch.distributed.get_world_size()
    return 0, 1


class SlicedBatchSampler(Sampler):
    """Per-rank batches of ``(index, seed)`` cut from the epoch's global order. A sampler is a
    subclass whose ``plan(epoch)`` returns that order (the same on every rank: draw it from
    ``sample_seed(self.seed, epoch, ...)``); ``unit`` > 1 keeps groups of that many whole."""

    unit = 1  # a rank's batch must be a whole number of these

    def __init__(self, global_batch: int, rank: int | None = None, world_size: int | None = None, seed: int = 0):
        self.rank, self.world_size = _dist_defaults(rank, world_size)
        if global_batch % (self.world_size * self.unit):
            raise ConfigError(
                f"global batch {global_batch} does not split into {self.world_size} process(es) x a multiple of "
                f"{self.unit}; choose a batch size divisible by {self.world_size * self.unit}"
            )
        self.global_batch = global_batch
        self.batch_size = global_batch // self.world_size
        self.seed = seed
        self.epoch = 0
        self.start_step = 0
        self._cache: tuple[int, list[int]] | None = None

    def plan(self, epoch: int) -> list[int]:
        raise NotImplementedError

    def order(self, epoch: int) -> list[int]:
        """The global order of ``epoch`` (identical on every rank), cut to whole global batches."""
        if self._cache is None or self._cache[0] != epoch:
            order = self.plan(epoch)
            self._cache = (epoch, order[: len(order) // self.global_batch * self.global_batch])
        return self._cache[1]

    def steps_per_epoch(self) -> int:
        return len(self.order(self.epoch)) // self.global_batch

    def set_epoch(self, epoch: int, start_step: int = 0) -> None:
        self.epoch, self.start_step = epoch, start_step

    def __len__(self) -> int:
        return max(0, self.steps_per_epoch() - self.start_step)

    def __iter__(self):
        order = self.order(self.epoch)
        for step in range(self.start_step, len(order) // self.global_batch):
            begin = step * self.global_batch + self.rank * self.batch_size
            yield [(order[p], sample_seed(self.seed, self.epoch, p)) for p in range(begin, begin + self.batch_size)]


class ShuffleBatchSampler(SlicedBatchSampler):
    """Stage 1: a permutation of all images per epoch, seeded by (seed, epoch)."""

    def __init__(self, num_samples: int, global_batch: int, rank=None, world_size=None, seed: int = 0):
        super().__init__(global_batch, rank, world_size, seed)
        if num_samples < global_batch:
            raise ConfigError(f"{num_samples} training images are fewer than one global batch of {global_batch}")
        self.num_samples = num_samples

    def plan(self, epoch: int) -> list[int]:
        generator = torch.Generator().manual_seed(sample_seed(self.seed, epoch, -1))
        return torch.randperm(self.num_samples, generator=generator).tolist()


class TupleBatchSampler(SlicedBatchSampler):
    """Stage 2: hard-negative tuples (``hard_negative_tuples``), as many images per epoch as
    the training set has, in whole global batches."""

    def __init__(
        self,
        labels: Sequence[int],
        predictions: Sequence[int] | None,
        tuple_size: int,
        global_batch: int,
        rank=None,
        world_size=None,
        seed: int = 0,
    ):
        self.unit = tuple_size
        super().__init__(global_batch, rank, world_size, seed)
        self.labels = list(labels)
        self.predictions = None if predictions is None else list(predictions)
        self.tuple_size = tuple_size
        if len(self.labels) < global_batch:
            raise ConfigError(f"{len(self.labels)} training images are fewer than one global batch of {global_batch}")

    def plan(self, epoch: int) -> list[int]:
        num_tuples = len(self.labels) // self.global_batch * self.global_batch // self.tuple_size
        tuples = hard_negative_tuples(
            self.labels, self.predictions, self.tuple_size, num_tuples, sample_seed(self.seed, epoch, -2)
        )
        return [i for t in tuples for i in t]


def shuffle(inputs: SamplerInputs) -> ShuffleBatchSampler:
    """A seeded permutation of all images per epoch (stage 1)."""
    return ShuffleBatchSampler(len(inputs.labels), inputs.global_batch, inputs.rank, inputs.world_size, inputs.seed)


def tuples(inputs: SamplerInputs, tuple_size: int = 8) -> TupleBatchSampler:
    """Hard-negative tuples of ``tuple_size``: [anchor, positive, tuple_size - 2 negatives] (stage 2)."""
    if inputs.predictions is None and inputs.rank == 0:
        log.warning("no hard-negative table; training on RANDOM tuples (run `cfcd hem` for hard negatives)")
    return TupleBatchSampler(inputs.labels, inputs.predictions, tuple_size, inputs.global_batch, inputs.rank,
                             inputs.world_size, inputs.seed)
