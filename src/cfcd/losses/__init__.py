"""Training losses: the MadaCos classifier head and the stage-2 local triplet loss."""

from .local_triplet import LocalTripletLoss
from .madacos import MadaCos

__all__ = ["LocalTripletLoss", "MadaCos"]
