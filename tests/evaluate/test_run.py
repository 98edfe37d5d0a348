"""cfcd.evaluate.run over benchmark objects: descriptors in, scored benchmark out."""

from __future__ import annotations

import numpy as np
import pytest

from cfcd.evaluate import Descriptors, run
from cfcd.evaluate.benchmarks.folder import leave_one_out
from cfcd.evaluate.benchmarks.revisitop import RevisitopBenchmark
from cfcd.sharded import ShardedArray

GND = [{"easy": [0], "hard": [2], "junk": [1]}, {"easy": [3], "hard": [0], "junk": [4]}]


def revisitop_toy() -> RevisitopBenchmark:
    return RevisitopBenchmark("toy", [f"db{i}.jpg" for i in range(6)], [("q0.jpg", (0, 0, 4, 4)), ("q1.jpg", (1, 1, 5, 5))], GND)


def random_descriptors(n, d, seed):
    x = np.random.default_rng(seed).normal(size=(n, d)).astype(np.float32)
    return x / np.linalg.norm(x, axis=1, keepdims=True)


def test_distractors_left_on_disk_rank_like_in_memory(tmp_path):
    db, queries = random_descriptors(6, 8, 0), random_descriptors(2, 8, 1)
    db[0], db[3] = queries[0], queries[1]  # each query's easy positive is itself
    distractors = random_descriptors(50, 8, 2)
    for k, part in enumerate(np.array_split(distractors, 3)):
        np.save(tmp_path / f"d{k}.npy", part)
    on_disk = ShardedArray([np.load(tmp_path / f"d{k}.npy", mmap_mode="r") for k in range(3)])
    given = Descriptors(db, queries, {"model": "toy"})
    streamed = run(given, revisitop_toy(), distractors=on_disk, topk=20)
    # The definition: distractors follow the database; the best 20 of the full sort.
    full = np.concatenate([db, distractors]).astype(np.float64)
    assert np.array_equal(streamed.ranks, np.argsort(-(full @ queries.T.astype(np.float64)), axis=0, kind="stable")[:20])
    in_memory = run(given, revisitop_toy(), distractors=distractors, topk=20)
    assert streamed.to_dict()["results"] == in_memory.to_dict()["results"]
    assert streamed.settings["distractors"] == 50 and streamed.settings["dataset"] == "toy+1M"
    assert streamed.result.protocols["easy"].aps.tolist() == [1.0, 1.0]


def test_leave_one_out_reuses_the_database_as_queries():
    x = np.repeat(np.eye(2, 4, dtype=np.float32), 3, axis=0)
    scored = run(Descriptors(x), leave_one_out([f"im{i}" for i in range(6)], ["a"] * 3 + ["b"] * 3))
    assert scored.ranks.shape == (6, 6)
    assert scored.to_dict()["results"]["pooled"] == {"mAP": 1.0, "R@1": 1.0, "queries": 6}
    assert "6 images of 2 identities" in scored.report()


def test_distractor_images_need_a_model_and_a_cache():
    given = Descriptors(random_descriptors(6, 8, 0), random_descriptors(2, 8, 1))
    with pytest.raises(ValueError, match="need a model"):
        run(given, revisitop_toy(), distractors=["a.jpg"])
    with pytest.raises(ValueError, match="need a model"):
        run(given, revisitop_toy(), settings={"scales": (1.0,)})


BENCHMARK_MODULE = '''
from cfcd.evaluate.benchmarks.revisitop import RevisitopBenchmark

def load(name, root, **options):
    groups = [line.split() for line in (root / "groups.txt").read_text().splitlines()]
    images = [p for g in groups for p in g[1:]]
    gnd, start = [], 0
    for g in groups:
        gnd.append({"easy": list(range(start, start + len(g) - 1)), "hard": [], "junk": []})
        start += len(g) - 1
    return RevisitopBenchmark(name, images, [g[0] for g in groups], gnd)
'''


def test_a_benchmark_is_one_module_and_one_registration(tmp_path, monkeypatch):
    from cfcd.evaluate import open_benchmark
    from cfcd.evaluate.benchmarks import BENCHMARKS

    (tmp_path / "holidays_like.py").write_text(BENCHMARK_MODULE)
    (tmp_path / "groups.txt").write_text("q0 a0 a1\nq1 b0\n")
    monkeypatch.syspath_prepend(str(tmp_path))
    if "holidays-like" not in BENCHMARKS:  # registered for the rest of this test process
        BENCHMARKS.register("holidays-like", "holidays_like:load")
    bench = open_benchmark("holidays-like", tmp_path)
    assert bench.images == ["a0", "a1", "b0"] and bench.queries == ["q0", "q1"]
    db = np.eye(3, 4, dtype=np.float32)
    queries = np.array([[0, 1, 0, 0], [0, 0, 1, 0]], dtype=np.float32)  # q0 finds a1 first, q1 finds b0
    scored = run(Descriptors(db, queries), bench)
    assert scored.to_dict()["results"]["easy"]["mAP"] == 1.0
