"""A training stage = a batch sampler + a classifier head + weighted loss terms, built by name
from ``stageN.sampler``, ``stageN.head``, ``stageN.terms`` and ``loss.<name>`` (heads and terms:
``cfcd.losses.registry``; samplers: ``SAMPLERS`` below).

    loss = sum_k w_k term_k(outputs, labels)

The paper's two stages are recipes, not code: stage 1 = shuffle + madacos + {cross_entropy: 1},
stage 2 = tuples + madacos + {cross_entropy: 1, local_triplet: lambda}.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass

import torch
from torch import nn

from ..losses.base import LossTerm, StepOutputs
from ..losses.registry import build_head, build_term
from .config import StageConfig, TrainConfig
from .datasets import Samples
from .runtime import Runtime
from .samplers import ShuffleBatchSampler, TupleBatchSampler

log = logging.getLogger(__name__)


def shuffle_sampler(scfg: StageConfig, samples: Samples, predictions, rt: Runtime, seed: int):
    """A seeded permutation of all images per epoch."""
    return ShuffleBatchSampler(len(samples), scfg.batch_size, rt.rank, rt.world_size, seed)


def tuple_sampler(scfg: StageConfig, samples: Samples, predictions, rt: Runtime, seed: int):
    """Hard-negative tuples [anchor, positive, negatives...] from the stage-1 predictions."""
    if predictions is None and rt.main:
        log.warning("no hard-negative table; training on RANDOM tuples (run `cfcd hem` for hard negatives)")
    return TupleBatchSampler(samples.labels, predictions, scfg.tuple_size, scfg.batch_size, rt.rank,
                             rt.world_size, seed)


SAMPLERS = {"shuffle": shuffle_sampler, "tuples": tuple_sampler}


@dataclass
class Stage:
    sampler: object  # yields per-process batches of (index, seed); has set_epoch, steps_per_epoch
    head: nn.Module  # classifier head (cfcd.losses.base): logits, predict, weight, logs
    terms: list[tuple[float, LossTerm]]  # (weight, term); weight 0 leaves a term out

    @property
    def needs_local(self) -> bool:
        return any(term.needs_local for _, term in self.terms)

    @property
    def tuple_size(self) -> int | None:
        return getattr(self.sampler, "tuple_size", None)

    def loss(self, outputs: StepOutputs, labels: torch.Tensor) -> torch.Tensor:
        return sum(weight * term(outputs, labels) for weight, term in self.terms)

    def logs(self) -> dict[str, float]:
        """The last step's values on the global batch: the head's, each term's (unweighted) and
        ``loss``, their weighted sum. A collective: every process must call it."""
        out = dict(self.head.logs())
        total = 0.0
        for weight, term in self.terms:
            values = term.logs()
            total += weight * values[term.name]
            out.update(values)
        return {"loss": total, **out}


def build_stage(cfg: TrainConfig, number: int, samples: Samples, rt: Runtime, embedding_dim: int,
                predictions: list[int] | None = None) -> Stage:
    """Stage ``number`` of ``cfg`` over ``samples`` (``predictions``: the hard-negative table)."""
    key = f"stage{number}"
    scfg: StageConfig = getattr(cfg, key)
    if scfg.sampler not in SAMPLERS:
        raise ValueError(f"{key}.sampler = {scfg.sampler!r}; known samplers: {', '.join(SAMPLERS)}")
    sampler = SAMPLERS[scfg.sampler](scfg, samples, predictions, rt, cfg.run.seed + 1000 * number)
    head = build_head(scfg.head, embedding_dim, samples.num_classes, cfg.loss.get(scfg.head))
    terms = [(float(w), build_term(name, cfg.loss.get(name))) for name, w in scfg.terms.items() if w]
    if not terms:
        raise ValueError(f"{key}.terms: every term has weight 0; a stage needs a loss")
    for _, term in terms:
        if term.needs_tuples and getattr(sampler, "tuple_size", None) is None:
            raise ValueError(f"{key}.terms: {term.name} needs tuples; set {key}.sampler=tuples")
    return Stage(sampler, head, terms)
