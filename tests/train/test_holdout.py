"""Splits by identity: the protocol's folds and the guard's held-back identities never share an
identity with the side that trains."""

from __future__ import annotations

import pytest

from cfcd.train.datasets import Samples
from cfcd.train.holdout import holdout_identities, identity_folds, source_folds


def _rows():
    # 3 sources with 5, 3 and 1 identities; identity i has 2 + i % 3 photos
    ids, sources = [], []
    for source, count in (("a", 5), ("b", 3), ("c", 1)):
        for i in range(count):
            ids += [f"{source}{i}"] * (2 + i % 3)
            sources += [source] * (2 + i % 3)
    return ids, sources


@pytest.mark.parametrize("k", [2, 3])
def test_folds_never_put_an_identity_on_both_sides(k):
    ids, sources = _rows()
    folds = identity_folds(ids, k, seed=4, sources=sources)
    assert len(folds) == k
    tests = [set(test) for _, test in folds]
    for train, test in folds:
        assert not set(train) & set(test)
        assert set(train) | set(test) == set(ids)
    assert set().union(*tests) == set(ids) and sum(map(len, tests)) == len(set(ids))  # test sides partition
    # every source's identities are spread: a fold gets ceil or floor of its share
    for source, count in (("a", 5), ("b", 3)):
        per_fold = [sum(i.startswith(source) for i in t) for t in tests]
        assert max(per_fold) - min(per_fold) <= 1 and sum(per_fold) == count
    assert identity_folds(ids, k, seed=4, sources=sources) == folds


def test_source_folds_hold_out_one_whole_source_each():
    ids, sources = _rows()
    ids, sources = ids + ["a0"], sources + ["c"]  # a0 also listed under c: it stays in its first source, a
    folds = source_folds(ids, sources)
    assert [name for name, _, _ in folds] == ["a", "b", "c"]
    for name, train, test in folds:
        assert not set(train) & set(test) and set(train) | set(test) == set(ids)
        assert set(test) == {i for i in ids if i.startswith(name)}
    with pytest.raises(ValueError, match="at least 2"):
        source_folds(["x", "y"], ["s", "s"])


def test_source_groups_hold_out_whole_sources_in_balanced_groups():
    ids = [f"{s}{n}" for s, count in (("a", 6), ("b", 1), ("c", 2), ("d", 3), ("e", 1), ("f", 5)) for n in range(count)]
    sources = [i[0] for i in ids]
    folds = source_folds(ids, sources, groups=2, seed=3)
    assert len(folds) == 2
    held = [set(name.split(", ")) for name, _, _ in folds]
    assert held[0] | held[1] == set("abcdef") and not held[0] & held[1]  # each source held out once
    for (name, train, test), group in zip(folds, held):
        assert set(test) == {i for i in ids if i[0] in group}  # whole sources only
        assert set(train) == set(ids) - set(test)
    sizes = sorted(len(test) for _, _, test in folds)
    assert sizes[1] - sizes[0] <= 6  # dealt to the lighter group: at most one source apart
    assert source_folds(ids, sources, groups=2, seed=3) == folds
    assert len(source_folds(ids, sources, groups=6)) == 6
    with pytest.raises(ValueError, match="groups"):
        source_folds(ids, sources, groups=7)


def test_folds_need_enough_identities():
    with pytest.raises(ValueError, match="at least 2"):
        identity_folds(["x", "y"], 1)
    with pytest.raises(ValueError, match="cannot fill"):
        identity_folds(["x", "x", "y"], 3)


def _samples(num_classes=10, per_class=3):
    paths, labels = [], []
    for c in range(num_classes):
        for k in range(per_class if c != 0 else 1):  # class 0 has a single photo: never held back
            paths.append(f"c{c}/{k}.jpg")
            labels.append(c)
    return Samples(paths, labels, [f"id{c}" for c in range(num_classes)])


def test_held_back_identities_are_whole_and_out_of_training():
    samples = _samples()
    train, held = holdout_identities(samples, 0.3, seed=1)
    held_ids = {samples.classes[y] for y in held.labels}
    assert len(held_ids) == 3 and "id0" not in held_ids
    assert not held_ids & set(train.classes)
    assert not {p.split("/")[0] for p in held.paths} & {p.split("/")[0] for p in train.paths}
    assert len(train) + len(held) == len(samples)
    # the training side is renumbered 0..K'-1 and its labels still name the right identity
    assert train.num_classes == 7 and sorted(set(train.labels)) == list(range(7))
    for path, y in zip(train.paths, train.labels):
        assert train.classes[y] == "id" + path.split("/")[0][1:]
    assert all(len([y for y in held.labels if y == c]) == 3 for c in set(held.labels))  # every photo of it
    assert holdout_identities(samples, 0.3, seed=1) == (train, held)


def test_holdout_off_when_zero_or_too_few():
    samples = _samples()
    for fraction in (0.0, 0.1):  # 0 and 1 identity: nothing held back
        train, held = holdout_identities(samples, fraction, seed=0)
        assert train is samples and len(held) == 0
    with pytest.raises(ValueError, match="holdout_fraction"):
        holdout_identities(samples, 1.0, seed=0)
