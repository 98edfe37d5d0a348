"""cfcd: single-stage image retrieval with CFCD compact descriptors (ICCV 2023)."""

__version__ = "0.1.0"

__all__ = ["CFCDNet", "ExtractionSettings", "Index", "ModelConfig", "PAPER_SETTINGS", "Runtime", "extract", "load_model"]


def __getattr__(name):
    # Every part loads on first use (PEP 562): `import cfcd` and `cfcd --help` stay free of
    # torch, torchvision and FAISS, which take seconds to import.
    if name in ("CFCDNet", "ModelConfig", "load_model"):
        from . import model as module
    elif name in ("ExtractionSettings", "PAPER_SETTINGS", "Runtime"):
        from . import settings as module
    elif name == "extract":
        from . import extraction as module
    elif name == "Index":
        from . import index as module
    else:
        raise AttributeError(f"module 'cfcd' has no attribute {name!r}")
    return getattr(module, name)
