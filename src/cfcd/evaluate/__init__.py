"""Retrieval evaluation: benchmarks as data, one ``run``, revisitop's metrics.

    metrics.py        rank, compute_ap, compute_map, Easy / Medium / Hard (revisitop's conventions)
    benchmarks/       what to describe and how to score it: Revisited Oxford / Paris, folder sets
    descriptors.py    descriptors made elsewhere (--features), distractors
    runner.py         run(model or descriptors, benchmark) -> Evaluation

Names load on first use, so the command line can list the benchmarks without numpy.
"""

_METRICS = (
    "DEFAULT_CHUNK", "DEFAULT_KAPPAS", "PROTOCOLS", "ProtocolResult", "RevisitopResult", "compute_ap",
    "compute_map", "evaluate_revisitop", "format_report", "protocol_gnd", "rank",
)
_RUNNER = ("DEFAULT_TOPK", "Evaluation", "run")

__all__ = [*_METRICS, *_RUNNER, "Benchmark", "Descriptors", "open_benchmark"]


def __getattr__(name):
    if name in _METRICS:
        from . import metrics as module
    elif name in _RUNNER:
        from . import runner as module
    elif name == "Descriptors":
        from . import descriptors as module
    elif name in ("Benchmark", "open_benchmark"):
        from . import benchmarks as module
    else:
        raise AttributeError(f"module 'cfcd.evaluate' has no attribute {name!r}")
    return getattr(module, name)
