"""Benchmarks by name. Adding one = a module with ``load(name, root, **options) -> Benchmark``
and one ``BENCHMARKS.register`` line here (see docs/evaluation.md#adding-a-benchmark)."""

from __future__ import annotations

from ...registry import Registry
from .base import Benchmark

# name -> the ``load`` function of its module (imported on use: listing the names for the
# command line costs nothing).
BENCHMARKS = Registry("benchmark", home="cfcd.evaluate.benchmarks")
BENCHMARKS.register("roxford5k", "cfcd.evaluate.benchmarks.revisitop:load")
BENCHMARKS.register("rparis6k", "cfcd.evaluate.benchmarks.revisitop:load")
BENCHMARKS.register("folder", "cfcd.evaluate.benchmarks.folder:load")

__all__ = ["BENCHMARKS", "Benchmark", "open_benchmark"]


def open_benchmark(name: str, root, **options) -> Benchmark:
    """The benchmark ``name`` read from ``root`` (its data folder; for ``folder``, the set itself)."""
    return BENCHMARKS.get(name)(name, root, **options)
