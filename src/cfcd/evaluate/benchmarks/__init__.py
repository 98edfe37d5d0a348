"""Benchmarks by name. Adding one = a module here with ``load(name, root, **options) ->
Benchmark`` and its line in ``BENCHMARKS`` (see docs/extending.md)."""

from __future__ import annotations

import importlib

from .base import Benchmark

# name -> the module that loads it, relative to this package or absolute (imported on use:
# listing the names for the command line costs nothing).
BENCHMARKS = {
    "roxford5k": ".revisitop",
    "rparis6k": ".revisitop",
    "folder": ".folder",
}

__all__ = ["BENCHMARKS", "Benchmark", "open_benchmark"]


def open_benchmark(name: str, root, **options) -> Benchmark:
    """The benchmark ``name`` read from ``root`` (its data folder; for ``folder``, the set itself)."""
    if name not in BENCHMARKS:
        raise ValueError(f"unknown benchmark {name!r}; choose one of {', '.join(BENCHMARKS)}")
    return importlib.import_module(BENCHMARKS[name], __name__).load(name, root, **options)
