"""Load pickles that hold only data: ground-truth files and descriptor dumps.

``pickle.load`` runs whatever callable a file names, so a downloaded ``gnd_*.pkl`` or a
features ``.pkl`` could execute code. ``load_pickle`` resolves only the globals that plain
containers, numbers and numpy arrays need, and refuses every other one before it is called.
"""

from __future__ import annotations

import pickle
from pathlib import Path

import numpy as np

from .errors import InputError

# (module, name) pairs a data pickle may reference, numpy's under its 1.x module names.
ALLOWED_GLOBALS = frozenset(
    {("builtins", name) for name in ("bool", "bytearray", "bytes", "complex", "dict", "float", "frozenset",
                                       "int", "list", "set", "slice", "str", "tuple")}
    | {
        ("collections", "OrderedDict"),
        ("_codecs", "encode"),  # bytes in protocol-2 pickles written by Python 3
        ("numpy", "ndarray"),
        ("numpy", "dtype"),
        ("numpy.core.multiarray", "_reconstruct"),
        ("numpy.core.multiarray", "scalar"),
        ("numpy.core.numeric", "_frombuffer"),  # protocol 5
    }
)

_NUMPY_CORE = "numpy._core" if hasattr(np, "_core") else "numpy.core"


class UnsafePickleError(InputError):
    """A pickle that references a global outside ``ALLOWED_GLOBALS``; nothing of it was run."""


class RestrictedUnpickler(pickle.Unpickler):
    """An unpickler whose ``find_class`` resolves only ``ALLOWED_GLOBALS``."""

    def __init__(self, file, source: str):
        super().__init__(file)
        self.source = source

    def find_class(self, module: str, name: str):
        canonical = "builtins" if module == "__builtin__" else module
        if canonical.startswith("numpy._core"):
            canonical = "numpy.core" + canonical[len("numpy._core"):]
        if (canonical, name) not in ALLOWED_GLOBALS:
            raise UnsafePickleError(
                f"{self.source}: refused to load global {module}.{name}; a data pickle holds only "
                "lists, dicts, numbers and numpy arrays, so this file is of another kind or malicious "
                "(do not open it with pickle)"
            )
        if canonical.startswith("numpy.core"):
            canonical = _NUMPY_CORE + canonical[len("numpy.core"):]
        return super().find_class(canonical, name)


def load_pickle(path: str | Path):
    """Unpickle ``path`` with ``RestrictedUnpickler``; errors name the file."""
    path = Path(path)
    with open(path, "rb") as f:
        try:
            return RestrictedUnpickler(f, str(path)).load()
        except UnsafePickleError:
            raise
        except Exception as err:  # a truncated or foreign file fails in many ways inside pickle
            raise InputError(f"{path}: not a readable pickle ({type(err).__name__}: {err}); download or write it again") from err
