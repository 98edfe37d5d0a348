"""Classifier heads and loss terms by name: what a recipe's ``stageN.head`` and ``stageN.terms``
refer to, and where ``loss.<name>.<parameter>`` settings go.

Each entry is ``name: "module:Class"``, imported on first use. A new loss is one file under
``cfcd/losses/`` plus one line here (docs/extending.md). A head is built as
``Class(embedding_dim, num_classes, **params)``, a term as ``Class(**params)``; the parameters'
defaults are the constructor's.
"""

from __future__ import annotations

import importlib
import inspect

HEADS = {
    "madacos": "cfcd.losses.madacos:MadaCos",
    "arcface": "cfcd.losses.arcface:ArcFace",
}

TERMS = {
    "cross_entropy": "cfcd.losses.cross_entropy:CrossEntropy",
    "local_triplet": "cfcd.losses.local_triplet:LocalTripletLoss",
}

# Filled by the constructor, not by settings.
_HEAD_ARGS = ("embedding_dim", "num_classes")


def _resolve(table: dict[str, str], kind: str, name: str):
    if name not in table:
        raise ValueError(f"unknown {kind} {name!r}; registered: {', '.join(sorted(table))} (cfcd.losses.registry)")
    module, _, attr = table[name].partition(":")
    return getattr(importlib.import_module(module), attr)


def parameters(kind: str, name: str) -> dict[str, object]:
    """The settable parameters of a registered head or term and their defaults."""
    cls = _resolve(HEADS, "head", name) if kind == "head" else _resolve(TERMS, "loss term", name)
    return {p.name: p.default for p in list(inspect.signature(cls).parameters.values())
            if p.name not in _HEAD_ARGS and p.kind is p.POSITIONAL_OR_KEYWORD}


def check_params(kind: str, name: str, params: dict) -> None:
    known = parameters(kind, name)
    unknown = sorted(set(params) - set(known))
    if unknown:
        raise ValueError(f"loss.{name}.{unknown[0]}: {name} has no such parameter; "
                         f"its parameters: {', '.join(known) or 'none'}")


def build_head(name: str, embedding_dim: int, num_classes: int, params: dict | None = None):
    """The head ``name`` with ``params`` (from ``loss.<name>``)."""
    check_params("head", name, params or {})
    return _resolve(HEADS, "head", name)(embedding_dim, num_classes, **(params or {}))


def build_term(name: str, params: dict | None = None):
    """The loss term ``name`` with ``params`` (from ``loss.<name>``)."""
    check_params("term", name, params or {})
    return _resolve(TERMS, "loss term", name)(**(params or {}))
