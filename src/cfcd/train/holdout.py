"""Splits by identity: every photo of an identity lands on one side, never both.

Two uses. ``identity_folds`` makes the k folds of the training protocol (train on the other
folds' identities, evaluate leave-one-out on this fold's, swap), spreading each source's
identities over the folds; ``source_folds`` its leave-one-source-out variant (test on one
source's identities, train on every other source's). ``holdout_identities`` takes a fraction of a training set's
identities out of training (``data.holdout_fraction``) so that ``cfcd train`` can score the
starting and the trained model on identities training never saw (``cfcd.train.guard``).
Both depend only on their inputs and the seed.
"""

from __future__ import annotations

import random
from typing import Sequence

from ..errors import ConfigError, InputError
from .datasets import Samples

# Leave-one-out needs a positive for every query: an identity is held back only if it has this
# many photos, and at least this many identities are held back (else none are).
MIN_PHOTOS = 2
MIN_IDENTITIES = 2


def identity_folds(identities: Sequence[str], k: int, seed: int = 0,
                   sources: Sequence[str] | None = None) -> list[tuple[list[str], list[str]]]:
    """``k`` (train identities, test identities) pairs; the test sides partition the distinct
    ``identities`` and each train side is every other identity. With ``sources`` (one per entry
    of ``identities``), each source's identities are shuffled and dealt round-robin so that
    every fold gets its share of every source; the identity's first source counts."""
    if k < 2:
        raise ConfigError(f"identity folds: k = {k}; need at least 2 folds")
    source_of: dict[str, str] = {}
    for n, identity in enumerate(identities):
        source_of.setdefault(identity, sources[n] if sources is not None else "")
    if len(source_of) < k:
        raise InputError(f"identity folds: {len(source_of)} identities cannot fill {k} folds")
    rng = random.Random(seed)
    dealt: list[str] = []
    for source in sorted(set(source_of.values())):
        group = sorted(i for i, s in source_of.items() if s == source)
        rng.shuffle(group)
        dealt.extend(group)
    tests = [sorted(dealt[f::k]) for f in range(k)]
    return [(sorted(i for i in source_of if i not in set(test)), test) for test in tests]


def source_folds(identities: Sequence[str], sources: Sequence[str], groups: int | None = None,
                 seed: int = 0) -> list[tuple[str, list[str], list[str]]]:
    """Leave-one-source-out: one ``(sources, train identities, test identities)`` per source, in
    sorted order; the test side is that source's identities, the train side every identity of
    the other sources. An identity belongs to its first source (as in ``identity_folds``).

    With ``groups`` = K, the sources are shuffled with ``seed`` and dealt into K groups, each
    source to the group with the fewest identities so far, and one fold holds out each group
    (leave-one-group-of-sources-out: K trainings instead of one per source)."""
    if len(sources) != len(identities):
        raise ValueError(f"source folds: {len(sources)} sources for {len(identities)} identities")
    source_of: dict[str, str] = {}
    for identity, source in zip(identities, sources):
        source_of.setdefault(identity, source)
    names = sorted(set(source_of.values()))
    if len(names) < 2:
        raise InputError(f"source folds: {len(names)} source(s); leave-one-source-out needs at least 2")
    members = {name: sorted(i for i, s in source_of.items() if s == name) for name in names}
    if groups is None:
        held = [[name] for name in names]
    else:
        if not 2 <= groups <= len(names):
            raise ConfigError(f"source folds: {groups} groups of {len(names)} sources; need 2 to {len(names)}")
        order = list(names)
        random.Random(seed).shuffle(order)
        held = [[] for _ in range(groups)]
        for name in order:  # the lightest group takes the next source
            min(held, key=lambda g: sum(len(members[n]) for n in g)).append(name)
        held = [sorted(g) for g in held]
    out = []
    for group in held:
        test = sorted(i for name in group for i in members[name])
        out.append((", ".join(group), sorted(i for i in source_of if source_of[i] not in group), test))
    return out


def holdout_identities(samples: Samples, fraction: float, seed: int) -> tuple[Samples, Samples]:
    """(training samples, held-back samples): ``round(fraction x K)`` of the K classes, drawn
    with ``seed`` among those with >= ``MIN_PHOTOS`` photos, are held back whole. None are when
    ``fraction`` is 0, or when fewer than ``MIN_IDENTITIES`` would be held back or fewer than 2
    classes would remain to train on. The training side is renumbered 0..K'-1 over its own
    classes (the classifier has no rows for held-back ones); the held-back side keeps the
    original ids and class list."""
    if not 0 <= fraction < 1:
        raise ConfigError(f"data.holdout_fraction must be in [0, 1), got {fraction}")
    empty = Samples([], [], samples.classes)
    count = round(fraction * samples.num_classes)
    if count < MIN_IDENTITIES or samples.num_classes - count < 2:
        return samples, empty
    sizes: dict[int, int] = {}
    for label in samples.labels:
        sizes[label] = sizes.get(label, 0) + 1
    eligible = sorted(c for c, n in sizes.items() if n >= MIN_PHOTOS)
    if len(eligible) < count:
        return samples, empty
    held = set(random.Random(seed).sample(eligible, count))
    kept = [c for c in range(samples.num_classes) if c not in held]
    remap = {c: n for n, c in enumerate(kept)}
    train = [i for i, y in enumerate(samples.labels) if y not in held]
    back = [i for i, y in enumerate(samples.labels) if y in held]
    return (Samples([samples.paths[i] for i in train], [remap[samples.labels[i]] for i in train],
                    [samples.classes[c] for c in kept]),
            Samples([samples.paths[i] for i in back], [samples.labels[i] for i in back], samples.classes))
