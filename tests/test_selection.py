"""Leave-one-source-out model selection (cfcd.selection) and its descriptor cache."""

import csv
import json

import numpy as np
import pytest
import torch

from cfcd.cli import main
from cfcd.data.instances import load_instances
from cfcd.evaluate import open_benchmark
from cfcd.evaluate.benchmarks.folder import InstanceResult
from cfcd.extraction import extract
from cfcd.model import CFCDNet, ModelConfig, save_checkpoint
from cfcd.selection import Candidate, DescriptorCache, format_selection, leave_one_source_out, run_selection
from cfcd.settings import ExtractionSettings, Runtime
from samples import make_image


def test_candidate_spec_round_trip():
    c = Candidate.parse("a+b@512:0.7071,1")
    assert c == Candidate(("a", "b"), ExtractionSettings((0.7071, 1.0), 512))
    assert Candidate.parse(c.name) == c
    assert Candidate.parse("m") == Candidate(("m",), ExtractionSettings((1.0,), None))
    assert Candidate.parse("m@orig:1").settings.max_side is None
    assert Candidate.parse("default").models == ("mobilenet_v2-imagenet", "efficientnet_lite2-imagenet")
    official = Candidate.parse("m@512:1~official")
    assert official.settings.preparation == "official" and Candidate.parse(official.name) == official
    for bad in ("m@x:1", "m:0", "m:1,a", "@512", "m:1~pillow"):
        with pytest.raises(ValueError, match="candidate"):
            Candidate.parse(bad)


def result(aps_by_source: dict) -> InstanceResult:
    """Per-query APs given per source; recall@1 = 1 where AP > 0.5."""
    sources = [s for s, aps in aps_by_source.items() for _ in aps]
    aps = np.array([a for v in aps_by_source.values() for a in v], dtype=float)
    return InstanceResult(aps, (aps > 0.5).astype(float), sources)


def test_each_held_out_group_is_scored_by_the_choice_made_without_it():
    # "wide" wins x and y by a little, loses evd by a lot; "deep" wins evd. Groups are equal-weighted:
    # x has 4 queries, y 1, evd 1.
    results = {
        "wide": result({"x": [0.9] * 4, "y": [0.8], "evd": [0.1]}),
        "deep": result({"x": [0.8] * 4, "y": [0.7], "evd": [0.9]}),
    }
    sel = leave_one_source_out(results)
    folds = {f.group: f for f in sel.folds}
    # without x: deep (0.7+0.9)/2 > wide (0.8+0.1)/2; deep scores 0.8 on x
    assert folds["x"].chosen == "deep" and folds["x"].held_out["mAP"] == pytest.approx(0.8)
    assert folds["x"].best == "wide"
    assert folds["y"].chosen == "deep" and folds["y"].held_out["mAP"] == pytest.approx(0.7)
    # without evd: wide wins on x and y, and scores 0.1 on evd although deep had 0.9 there
    assert folds["evd"].chosen == "wide" and folds["evd"].held_out["mAP"] == pytest.approx(0.1)
    assert folds["evd"].best == "deep" and folds["evd"].best_held_out["mAP"] == pytest.approx(0.9)
    assert sel.held_out["pooled"]["mAP"] == pytest.approx((4 * 0.8 + 0.7 + 0.1) / 6)
    assert sel.held_out["hard"]["mAP"] == pytest.approx(0.1)
    assert sel.chosen == "deep"  # macro over all: deep (0.8+0.7+0.9)/3 > wide (0.9+0.8+0.1)/3


def test_only_eligible_candidates_are_chosen_the_others_are_still_scored():
    results = {
        "wide": result({"x": [0.9] * 4, "y": [0.8], "evd": [0.1]}),
        "deep": result({"x": [0.8] * 4, "y": [0.7], "evd": [0.9]}),
    }
    sel = leave_one_source_out(results, eligible=["wide"])  # deep is too slow, say
    assert sel.chosen == "wide" and {f.chosen for f in sel.folds} == {"wide"}
    assert {f.group: f.best for f in sel.folds}["evd"] == "deep"  # hindsight still sees every candidate
    assert "`deep` (not eligible)" in format_selection(sel) and "`wide` **(chosen)**" in format_selection(sel)
    with pytest.raises(ValueError, match="no candidates"):
        leave_one_source_out(results, eligible=[])


def test_ties_go_to_the_first_candidate_and_twins_are_held_out_together():
    same = {"phototourism-samples": [0.5], "phototourism-sacre-coeur": [0.5], "evd": [0.5]}
    sel = leave_one_source_out({"cheap": result(same), "costly": result(same)})
    assert sel.groups == ["phototourism", "evd"]
    assert {f.chosen for f in sel.folds} == {"cheap"} and sel.chosen == "cheap"


def test_needs_two_sources_and_the_same_images():
    with pytest.raises(ValueError, match="two sources"):
        leave_one_source_out({"a": result({"all": [0.5, 0.5]})})
    with pytest.raises(ValueError, match="other images"):
        leave_one_source_out({"a": result({"x": [1], "y": [1]}), "b": result({"y": [1], "x": [1]})})


@pytest.fixture(scope="module")
def sourced_set(tmp_path_factory):
    """Six small images of three identities from two sources, with a manifest, tiny random
    weights, and a descriptor cache folder shared by the tests below (extraction is slow here)."""
    tmp = tmp_path_factory.mktemp("selection")
    root = tmp / "set"
    rows = []
    for i in range(6):
        ident = f"id{i // 2}"
        path = make_image(root / "images" / ident / f"{i}.jpg", size=(60 + 4 * i, 48), seed=i // 2 * 10 + i % 2)
        rows.append({"path": str(path.relative_to(root)), "identity": ident, "source": "evd" if i < 2 else "strecha"})
    with open(root / "manifest.csv", "w", newline="") as f:
        w = csv.DictWriter(f, ["path", "identity", "source"])
        w.writeheader()
        w.writerows(rows)
    torch.manual_seed(0)
    save_checkpoint(tmp / "tiny.pt", CFCDNet(ModelConfig(backbone="mobilenet_v2", dim=16)).eval())
    return root, tmp / "tiny.pt", tmp / "cache"


def test_cached_scales_sum_to_the_multi_scale_descriptor(sourced_set):
    root, weights, cache_dir = sourced_set
    data = load_instances(root)
    cache = DescriptorCache(data.paths, cache_dir, progress=False)
    cand = Candidate((str(weights),), ExtractionSettings((0.7071, 1.0), 48))
    got, seconds = cache.descriptors(cand)
    from cfcd.model import load_model

    expected = extract(load_model(weights), data.paths, ExtractionSettings((0.7071, 1.0), max_side=48), Runtime(progress=False))
    np.testing.assert_allclose(got, expected, atol=1e-5)
    assert seconds > 0
    assert len(list(cache_dir.rglob("*.npy"))) == 2
    # A second cache over the same folder reads the vectors back without loading the model.
    again = DescriptorCache(data.paths, cache_dir, progress=False)
    np.testing.assert_array_equal(again.descriptors(cand)[0], got)
    # Two models concatenated: each half is its model's descriptor over sqrt(2).
    both, _ = again.descriptors(Candidate((str(weights), str(weights)), ExtractionSettings((1.0,), 48)))
    single, _ = again.descriptors(Candidate((str(weights),), ExtractionSettings((1.0,), 48)))
    np.testing.assert_allclose(both, np.concatenate([single, single], axis=1) / np.sqrt(2), atol=1e-6)
    assert again._models == {}


def test_run_selection_and_cli(sourced_set, tmp_path, capsys):
    root, weights, cache_dir = sourced_set
    bench = open_benchmark("folder", root)
    cands = [Candidate.parse(f"{weights}@48:1"), Candidate.parse(f"{weights}@48:0.7071,1")]
    sel, seconds = run_selection(bench, cands, DescriptorCache(bench.images, cache_dir, progress=False))
    assert sel.groups == ["evd", "strecha"] and set(seconds) == {c.name for c in cands}
    out_json = tmp_path / "sel.json"
    assert main(["eval", "--images", str(root), "--select", *(c.name for c in cands),
                 "--cache-dir", str(cache_dir), "--json", str(out_json)]) == 0
    out = capsys.readouterr().out
    assert "| held-out group |" in out and f"`{sel.chosen}` **(chosen)**" in out
    assert json.loads(out_json.read_text())["chosen"] == sel.chosen
    assert main(["eval", "--dataset", "roxford5k", "--select", cands[0].name]) == 2
    assert "--select goes with --images" in capsys.readouterr().err


def test_select_on_shapes_judges_candidates_on_collections_of_both_sets(sourced_set, tmp_path, capsys):
    from cfcd.evaluate import Descriptors, run

    root, weights, cache_dir = sourced_set
    other = tmp_path / "other"
    rows = [("path", "identity", "source")]
    for i in range(8):
        ident = f"o{i // 2}" if i < 6 else ""  # two distractors
        path = make_image(other / "images" / (ident or "_distractors") / f"{i}.jpg", size=(56, 44 + 2 * i), seed=50 + i)
        rows.append((str(path.relative_to(other)), ident, "elsewhere"))
    with open(other / "manifest.csv", "w", newline="") as f:
        csv.writer(f).writerows(rows)
    cands = [Candidate.parse(f"{weights}@48:1"), Candidate.parse(f"{weights}@48:0.7071,1")]
    out_json = tmp_path / "shapes.json"
    assert main(["eval", "--images", str(root), "--select", *(c.name for c in cands), "--shapes", str(other),
                 "--cache-dir", str(cache_dir), "--json", str(out_json)]) == 0
    printed = capsys.readouterr().out
    assert "| candidate | pooled mean |" in printed and f"`{cands[0].name}` (baseline)" in printed
    saved = json.loads(out_json.read_text())
    assert saved["chosen"] in {c.name for c in cands} and set(saved["held_out"]) == {"set", "other"}
    # the whole-set cell is the set's own leave-one-out mAP with the cached descriptors
    cache = DescriptorCache(load_instances(root).paths, cache_dir, progress=False)
    expected = run(Descriptors(cache.descriptors(cands[1])[0]), open_benchmark("folder", root)).result.summary()["mAP"]
    assert saved["scores"][cands[1].name]["whole"]["set"]["mAP"] == pytest.approx(expected)
