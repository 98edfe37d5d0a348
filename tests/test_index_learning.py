"""End to end on real photos (bench/index_learning.py): `cfcd index build` on instances-dev
searches the raw descriptors by default, and with --learn learns a projection from the
collection's own descriptors (no labels) of the dimension the rule gives, and searches
through it (it is opt-in: issue 29's protocol found it losing on some collections)."""

from __future__ import annotations

import json

import pytest

from cfcd.cli import main
from cfcd.index import projection as learning
from samples import bench_script



def bench_module():
    return bench_script("index_learning")


@pytest.mark.slow
def test_an_index_of_real_photos_learns_from_them_when_asked(instances_dev, tmp_path, capsys):
    out = bench_module().run(instances_dev, tmp_path)
    learned, raw = out["learned"], out["default"]
    n = raw["pooled"]["queries"]
    assert n == learned["index"]["images"] == 238  # 241 files; strecha_castle holds 3 byte-identical pairs
    assert raw["index"]["projection"] is None and raw["index"]["learn"] is False
    assert learned["index"]["projection"]["dim"] == learning.choose(n)[0] and learned["index"]["projection"]["learned_from"] == n
    assert learned["pooled"]["mAP"] != raw["pooled"]["mAP"]  # it searches another space
    capsys.readouterr()
    assert main(["index", "info", str(tmp_path / "learned")]) == 0
    assert f"learned projection 2560 -> {learning.choose(n)[0]}-d" in capsys.readouterr().out
    query = instances_dev / "images" / "evd_adam" / sorted(p.name for p in (instances_dev / "images" / "evd_adam").iterdir())[0]
    assert main(["search", str(tmp_path / "learned"), str(query), "-k", "3", "--json"]) == 0
    hits = json.loads(capsys.readouterr().out)[0]["results"]
    assert hits[0]["path"] == str(query.resolve()) and hits[0]["score"] == pytest.approx(1.0, abs=1e-4)
