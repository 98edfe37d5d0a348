"""Training losses as parts of a stage: classifier heads (MadaCos, ArcFace) and loss terms
(cross-entropy, the stage-2 local triplet loss); protocols in ``base``, names in ``registry``."""

__all__ = ["ArcFace", "CosineHead", "CrossEntropy", "LocalTripletLoss", "LossTerm", "MadaCos", "StepOutputs",
           "local_triplet_loss"]

_HOMES = {"ArcFace": "arcface", "CosineHead": "base", "CrossEntropy": "cross_entropy", "LossTerm": "base",
          "LocalTripletLoss": "local_triplet", "local_triplet_loss": "local_triplet", "MadaCos": "madacos",
          "StepOutputs": "base"}


def __getattr__(name):
    # Loaded on first use, so that listing the registered names (``cfcd train --help``) loads no torch.
    if name not in _HOMES:
        raise AttributeError(f"module 'cfcd.losses' has no attribute {name!r}")
    from importlib import import_module

    return getattr(import_module(f".{_HOMES[name]}", __name__), name)
