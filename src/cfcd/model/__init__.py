from .checkpoint import save_checkpoint
from .load import load_model, read_checkpoint
from .net import CFCDNet, LocalFeatures, ModelConfig
from .weights import WeightsError

__all__ = ["CFCDNet", "LocalFeatures", "ModelConfig", "WeightsError", "load_model", "read_checkpoint", "save_checkpoint"]
