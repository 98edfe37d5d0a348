"""cfcd: single-stage image retrieval with CFCD compact descriptors (ICCV 2023)."""

from .model import CFCDNet, ModelConfig, load_model

__version__ = "0.1.0"


def __getattr__(name):
    # Heavier parts (FAISS, extraction workers) load on first use, keeping `import cfcd` fast.
    if name == "extract":
        from .extraction import extract

        return extract
    if name == "Index":
        from .index import Index

        return Index
    raise AttributeError(f"module 'cfcd' has no attribute {name!r}")


__all__ = ["CFCDNet", "Index", "ModelConfig", "extract", "load_model"]
