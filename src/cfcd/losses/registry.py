"""Classifier heads and loss terms by name: what a recipe's ``stageN.head`` and ``stageN.terms``
refer to, and where ``loss.<name>.<parameter>`` settings go.

Each entry is registered as ``"module:Class"`` (``cfcd.registry.Registry``), imported on first
use. A new loss is one file under ``cfcd/losses/`` plus one ``register`` line here
(docs/extending.md). A head is built as
``Class(embedding_dim, num_classes, **params)``, a term as ``Class(**params)``; the parameters'
defaults are the constructor's.
"""

from __future__ import annotations

from ..registry import Registry

HEADS = Registry("head", home="cfcd.losses.registry")
HEADS.register("madacos", "cfcd.losses.madacos:MadaCos")
HEADS.register("arcface", "cfcd.losses.arcface:ArcFace")

TERMS = Registry("loss term", home="cfcd.losses.registry")
TERMS.register("cross_entropy", "cfcd.losses.cross_entropy:CrossEntropy")
TERMS.register("local_triplet", "cfcd.losses.local_triplet:LocalTripletLoss")

# A head's first two parameters (embedding_dim, num_classes) are filled by the builder, not by settings.
_HEAD_ARGS = 2


def parameters(kind: str, name: str) -> dict[str, object]:
    """The settable parameters of a registered head or term and their defaults."""
    return HEADS.parameters(name, skip=_HEAD_ARGS) if kind == "head" else TERMS.parameters(name)


def check_params(kind: str, name: str, params: dict) -> None:
    if kind == "head":
        HEADS.check_params(name, params, skip=_HEAD_ARGS, where=f"loss.{name}")
    else:
        TERMS.check_params(name, params, where=f"loss.{name}")


def build_head(name: str, embedding_dim: int, num_classes: int, params: dict | None = None):
    """The head ``name`` with ``params`` (from ``loss.<name>``)."""
    return HEADS.build(name, embedding_dim, num_classes, params=params, where=f"loss.{name}")


def build_term(name: str, params: dict | None = None):
    """The loss term ``name`` with ``params`` (from ``loss.<name>``)."""
    return TERMS.build(name, params=params, where=f"loss.{name}")
