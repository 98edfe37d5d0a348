"""A training stage = a batch sampler + a classifier head + weighted loss terms, built by name
from ``stageN.sampler`` with ``sampler.<name>``, and ``stageN.head``, ``stageN.terms`` with
``loss.<name>`` (heads and terms: ``cfcd.losses.registry``; samplers: ``cfcd.train.registry``).

    loss = sum_k w_k term_k(outputs, labels)

The paper's two stages are recipes, not code: stage 1 = shuffle + madacos + {cross_entropy: 1},
stage 2 = tuples + madacos + {cross_entropy: 1, local_triplet: lambda}.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
from torch import nn

from ..errors import ConfigError
from ..losses.base import LossTerm, StepOutputs
from ..losses.registry import build_head, build_term
from .config import StageConfig, TrainConfig
from .datasets import Samples
from .runtime import TrainProcess
from .registry import SAMPLERS, SamplerInputs


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


def build_stage(cfg: TrainConfig, number: int, samples: Samples, rt: TrainProcess, embedding_dim: int,
                predictions: list[int] | None = None) -> Stage:
    """Stage ``number`` of ``cfg`` over ``samples`` (``predictions``: the hard-negative table)."""
    key = f"stage{number}"
    scfg: StageConfig = getattr(cfg, key)
    inputs = SamplerInputs(samples.labels, predictions, scfg.batch_size, rt.rank, rt.world_size,
                           cfg.run.seed + 1000 * number)
    sampler = SAMPLERS.build(scfg.sampler, inputs, params=cfg.sampler.get(scfg.sampler), where=f"sampler.{scfg.sampler}")
    head = build_head(scfg.head, embedding_dim, samples.num_classes, cfg.loss.get(scfg.head))
    terms = [(float(w), build_term(name, cfg.loss.get(name))) for name, w in scfg.terms.items() if w]
    if not terms:
        raise ConfigError(f"{key}.terms: every term has weight 0; a stage needs a loss")
    for _, term in terms:
        if term.needs_tuples and getattr(sampler, "tuple_size", None) is None:
            raise ConfigError(f"{key}.terms: {term.name} needs tuples; set {key}.sampler=tuples")
    return Stage(sampler, head, terms)
