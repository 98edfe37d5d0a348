"""The searcher: a model and its extraction settings joined to an index.

Images go in, ranked images come out (``Searcher.search``); images go in and their
descriptors are added (``add_images``). The model is the index's own, rebuilt from the model
config stored with the index (backbone included), and queries are extracted with the index's
settings, so query and database descriptors are always made the same way. ``index`` is a
``cfcd.Index``; this module sits above it and the index never calls it.

>>> Searcher(Index.load("photos.idx")).search(["query.jpg", ("query.jpg", (120, 40, 480, 360))], k=10)
"""

from __future__ import annotations

from pathlib import Path
from typing import Sequence

import numpy as np

from ..errors import ConfigError
from . import rerank
from .identity import check_compatible
from .records import describe_file, new_positions
from .results import AddReport, SearchResult


def load_index_model(index):
    """The model that made ``index``'s descriptors: its stored name (weights) with its stored
    config's backbone (the weights' layout is not guessed), checked against the identity
    stored with the index."""
    from ..model.load import load_described

    if not index.model:
        raise ConfigError("this index was built from descriptors without a model description; pass the model explicitly")
    model = load_described(index.model)
    check_compatible(index, model)
    return model


def _settings(index, model, settings=None):
    """The extraction settings (``cfcd.settings.resolve``): ``settings`` over the index's
    stored ones over the defaults, checked against the index's."""
    from ..settings import resolve

    chosen = resolve(index.settings, settings, model)
    check_compatible(index, settings=chosen)
    return chosen


class Searcher:
    """Query images against ``index`` with ``model`` (default: the index's own)."""

    def __init__(self, index, model=None):
        self.index = index
        self.model = model if model is not None else load_index_model(index)
        check_compatible(index, self.model)

    def search(self, images: Sequence, k: int = 10, qe: int = 0, alpha: float = rerank.DEFAULT_QE_ALPHA,
               settings=None, runtime=None) -> SearchResult:
        """The k nearest indexed images of each query (paths, PIL images or
        (image, (x0, y0, x1, y1)) crops), extracted with the index's settings (``settings``
        may override them) and ``runtime`` (default: no progress bar)."""
        from ..extraction import extract
        from ..settings import Runtime

        chosen = _settings(self.index, self.model, settings)
        desc = extract(self.model, list(images), chosen, runtime or Runtime(progress=False))
        return self.index.search(desc, k, qe=qe, alpha=alpha)


def add_images(index, model, images: Sequence[str | Path], settings=None, runtime=None, copies: bool = True) -> AddReport:
    """Extract and add ``images`` (paths) to ``index``; only images whose content is not
    indexed yet are extracted; byte copies of indexed content are recorded as its other paths
    (``copies=False``: skipped, for files that are not kept). For an index opened with ``Index.edit``, the step is replayed
    (without extracting again) if another writer publishes first."""
    from ..extraction import extract, failed_rows

    settings = _settings(index, model, settings)
    check_compatible(index, model)
    recs = [describe_file(p) for p in images]
    keep, duplicates, repeated = new_positions(index.layers.catalogue, recs)
    report = AddReport(duplicates=duplicates, repeated=repeated)
    errors: dict[int, str] = {}
    desc = (extract(model, [recs[k].path for k in keep], settings, runtime, skip_errors=True, errors=errors) if keep
            else np.zeros((0, index.dim), np.float32))
    bad = set(failed_rows(desc).tolist())
    for row in sorted(bad):
        report.failed[keep[row]] = errors.get(row, f"{recs[keep[row]].path}: not a readable image")
    # A byte copy of an unreadable file is unreadable too, not "already indexed".
    for pos, first in list(report.repeated.items()):
        if first in report.failed:
            report.failed[pos] = f"{recs[pos].path}: same bytes as {report.failed[first]}"
            del report.repeated[pos]
    good = [row for row in range(len(keep)) if row not in bad]
    chosen = [keep[row] for row in good]
    desc = desc[good]
    base = AddReport(duplicates=dict(report.duplicates), repeated=dict(report.repeated), failed=dict(report.failed))

    def add(target) -> AddReport:
        inner = target.add(desc, [recs[p] for p in chosen], model=model, settings=settings, replay=False)
        out = AddReport(inner.added, dict(base.duplicates), dict(base.repeated), dict(base.failed))
        out.duplicates.update({chosen[pos]: i for pos, i in inner.duplicates.items()})
        out.repeated.update({chosen[pos]: chosen[first] for pos, first in inner.repeated.items()})
        out.paths.update({chosen[pos]: i for pos, i in inner.paths.items()})
        # Byte copies of indexed content (found before extracting) are recorded as its other paths.
        if copies:
            again = sorted({**base.duplicates, **base.repeated})
            out.paths.update({again[n]: i for n, i in target.add_paths([recs[p] for p in again], replay=False).items()})
        return out

    report.update_from(add(index))
    index.journal(lambda newer: report.update_from(add(newer)))
    return report
