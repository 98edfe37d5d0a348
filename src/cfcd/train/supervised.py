"""How the supervised whitening of a small labelled collection is set (issue 22): the
shrinkage and power of ``cfcd.model.whitening.learn_supervised_whitening`` chosen on the labelled
photos alone, by inner identity folds (``cfcd.train.holdout.identity_folds``) scored
leave-one-out. ``bench/train_cpu.py`` calls it on each fold's training side."""

from __future__ import annotations

from typing import Sequence

import numpy as np

from ..evaluate import run as evaluate_run
from ..evaluate.benchmarks.folder import leave_one_out
from ..evaluate.descriptors import Descriptors
from ..model.whitening import descriptors_from_vectors, supervised_whitenings
from ..whiten import labelled_vectors
from .holdout import identity_folds

# The grid ``choose_supervised_whitening`` searches: shrinkage l of the within-identity scatter
# (relative to its mean eigenvalue) and the power of the PCA step (0: rotation, 0.5: whitened).
SUPERVISED_SHRINKAGES = (0.03, 0.1, 0.3, 1.0, 3.0, 10.0)
SUPERVISED_POWERS = (0.0, 0.5)


def loo_aps(descriptors: np.ndarray, labels: Sequence[str]) -> np.ndarray:
    """Per-query leave-one-out APs (revisitop AP, as ``cfcd eval`` on a folder) of ``descriptors``
    (n, d) with identity ``labels``; NaN for a photo without a positive."""
    names = [str(n) for n in range(len(labels))]
    return evaluate_run(Descriptors(descriptors), leave_one_out(names, [str(y) for y in labels])).result.aps


def choose_supervised_whitening(glob: np.ndarray, labels: Sequence[str], groups: Sequence[str] | None = None,
                                reg: np.ndarray | None = None, dim: int = 512,
                                shrinkages: Sequence[float] = SUPERVISED_SHRINKAGES,
                                powers: Sequence[float] = SUPERVISED_POWERS, folds: int = 2,
                                seed: int = 0) -> tuple[dict, dict[tuple[float, float], float]]:
    """``({"shrinkage", "power"}, {(shrinkage, power): inner mAP %})``: the setting of
    ``learn_supervised_whitening`` chosen on these labelled photos alone. Their identities are
    split into ``folds`` inner folds (``cfcd.train.holdout.identity_folds``, each ``groups``
    value, e.g. a source, spread over them); for each, the head is learned on the other folds'
    photos and scored leave-one-out on this fold's; per-query APs are pooled. The best mean wins;
    a tie (within 0.01) goes to the larger shrinkage, then the lower power (the head closer to
    the unlabelled one). ``glob`` (n, S, C) and ``reg`` (n, S, R, C) are the photos' raw GeM
    vectors as ``gem_vectors`` returns them; nothing outside them is read."""
    labels = [str(y) for y in labels]
    aps: dict[tuple[float, float], list[np.ndarray]] = {(s, p): [] for s in shrinkages for p in powers}
    for train_ids, test_ids in identity_folds(labels, folds, seed, groups):
        train = np.flatnonzero(np.isin(labels, train_ids))
        test = np.flatnonzero(np.isin(labels, test_ids))
        x, y, extra = labelled_vectors(glob[train], [labels[n] for n in train], None if reg is None else reg[train])
        for setting, head in supervised_whitenings(x, y, dim, shrinkages, powers, unlabelled=extra).items():
            aps[setting].append(loo_aps(descriptors_from_vectors(glob[test], head), [labels[n] for n in test]))
    scores = {k: 100 * float(np.nanmean(np.concatenate(v))) for k, v in aps.items()}
    top = max(scores.values())
    s, p = max((k for k, v in scores.items() if v >= top - 0.01), key=lambda k: (k[0], -k[1]))
    return {"shrinkage": s, "power": p}, scores
