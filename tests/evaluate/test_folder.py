"""The folder-per-identity benchmark: leave-one-out AP and recall@1, pooled and per source."""

import math

import numpy as np
import pytest

from cfcd.evaluate import Descriptors, run
from cfcd.evaluate.benchmarks.folder import format_instance_report, leave_one_out, leave_one_out_gnd


def evaluate_leave_one_out(descriptors, identities, sources=None):
    return run(Descriptors(np.asarray(descriptors)), leave_one_out(range(len(identities)), identities, sources)).result


def on_circle(degrees):
    """Unit vectors at these angles: similarity falls with the angle between two images."""
    t = np.radians(degrees)
    return np.stack([np.cos(t), np.sin(t)], axis=1)


# Five images at 0, 5, 12, 60 and 70 degrees. Query by query, with itself removed:
#   0 (a): ranking 1 2 3 4, positive at rank 1               AP = (0 + 1/2) / 2         = 1/4
#   1 (b): ranking 0 2 3 4, positives at ranks 2, 3          AP = (1/3/2 + (1/3 + 2/4)/2) / 2 = 7/24
#   2 (a): ranking 1 0 3 4, positive at rank 1               AP = 1/4
#   3 (b): ranking 4 2 1 0, positives at ranks 0, 2          AP = (1 + (1/2 + 2/3)/2) / 2 = 19/24
#   4 (b): ranking 3 2 1 0, positives at ranks 0, 2          AP = 19/24
ANGLES = [0, 5, 12, 60, 70]
IDENTITIES = ["a", "b", "a", "b", "b"]
SOURCES = ["x", "x", "x", "y", "y"]
APS = [1 / 4, 7 / 24, 1 / 4, 19 / 24, 19 / 24]
RECALL1 = [0, 0, 0, 1, 1]


def test_leave_one_out_hand_computed():
    result = evaluate_leave_one_out(on_circle(ANGLES), IDENTITIES, SOURCES)
    np.testing.assert_allclose(result.aps, APS)
    np.testing.assert_array_equal(result.recall1, RECALL1)
    assert result.summary() == {"mAP": pytest.approx(57 / 120), "R@1": pytest.approx(2 / 5), "queries": 5}
    per_source = result.per_source()
    assert list(per_source) == ["x", "y"]
    assert per_source["x"] == {"mAP": pytest.approx(19 / 72), "R@1": 0.0, "queries": 3}
    assert per_source["y"] == {"mAP": pytest.approx(19 / 24), "R@1": 1.0, "queries": 2}


def test_report_lists_pooled_and_sources():
    report = format_instance_report(evaluate_leave_one_out(on_circle(ANGLES), IDENTITIES, SOURCES), "toy")
    lines = report.splitlines()
    assert lines[0] == "toy"
    assert lines[2].split() == ["pooled", "47.50", "40.00", "5"]
    assert lines[3].split() == ["x", "26.39", "0.00", "3"]
    assert lines[4].split() == ["y", "79.17", "100.00", "2"]


def test_gnd_excludes_the_query_itself():
    gnd = leave_one_out_gnd(["a", "b", "a", "c"])
    assert [g["ok"].tolist() for g in gnd] == [[2], [], [0], []]
    assert [g["junk"].tolist() for g in gnd] == [[0], [1], [2], [3]]


def test_singleton_identity_is_left_out():
    result = evaluate_leave_one_out(on_circle([0, 10, 90]), ["a", "a", "lonely"])
    assert math.isnan(result.aps[2]) and math.isnan(result.recall1[2])
    assert result.summary() == {"mAP": 1.0, "R@1": 1.0, "queries": 2}


def test_ties_rank_the_lower_index_first():
    # Images 1 and 2 are identical; only 2 shares the query's identity, so it ranks second.
    desc = on_circle([0, 30, 30])
    result = evaluate_leave_one_out(desc, ["a", "b", "a"])
    assert result.aps[0] == pytest.approx(1 / 4)
    assert result.recall1[0] == 0


def test_rejects_misshaped_descriptors():
    with pytest.raises(ValueError, match=r"2 database descriptors for 3 images"):
        evaluate_leave_one_out(np.zeros((2, 4)), ["a", "b", "c"])
