"""Training losses as parts of a stage: classifier heads (MadaCos, ArcFace) and loss terms
(cross-entropy, the stage-2 local triplet loss); protocols in ``base``, names in ``registry``."""

from .arcface import ArcFace
from .base import CosineHead, LossTerm, StepOutputs
from .cross_entropy import CrossEntropy
from .local_triplet import LocalTripletLoss, local_triplet_loss
from .madacos import MadaCos

__all__ = ["ArcFace", "CosineHead", "CrossEntropy", "LocalTripletLoss", "LossTerm", "MadaCos", "StepOutputs",
           "local_triplet_loss"]
