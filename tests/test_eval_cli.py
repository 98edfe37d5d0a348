import json
import pickle

import numpy as np
import pytest
from PIL import Image

from cfcd.cli import main
from cfcd.data.revisitop import load_dataset
from cfcd.evaluate import evaluate_revisitop, rank
from cfcd.extraction import extract
from cfcd.model import load_model
from cfcd.settings import ExtractionSettings, Runtime
import samples

N_DB, DIM = 6, 8
# Query descriptors whose dot product with database image i (the basis vector e_i) is the
# value at i: query 0 ranks the database 0..5, query 1 ranks it 5..0. Dimension 6 only
# matters for the distractor e_6, which then outranks the database for query 0 alone.
QUERIES = np.array([[6, 5, 4, 3, 2, 1, 7, 0], [1, 2, 3, 4, 5, 6, 0, 0]], dtype=np.float32)
GND = [
    {"bbx": [4, 4, 36, 28], "easy": [0], "hard": [2], "junk": [1]},
    {"bbx": [8, 0, 40, 24], "easy": [3], "hard": [0], "junk": [4]},
]
# Hand-computed, in percent: (mAP, mP@1, mP@5, mP@10) per protocol.
#   query 0: every protocol puts its positives first: AP 1, P@k 1.
#   query 1, easy (junk 4, 0): 5 3 2 1 -> AP 1/4; pos [2]: P@1 0, P@5 = P@10 = 1/2
#   query 1, medium (junk 4):  5 3 2 1 0 -> AP 23/80; pos [2, 5]: P@1 0, P@5 = P@10 = 2/5
#   query 1, hard (junk 4, 3): 5 2 1 0 -> AP 1/8; pos [4]: P@1 0, P@5 = P@10 = 1/4
EXPECTED = {
    "easy": (62.5, 50.0, 75.0, 75.0),
    "medium": (100 * (1 + 23 / 80) / 2, 50.0, 70.0, 70.0),
    "hard": (56.25, 50.0, 62.5, 62.5),
}
# With the distractor e_6 query 0 ranks it first, before all of the database:
#   easy: positive at rank 1 -> AP 1/4, pos [2]: P@1 0, P@5 = P@10 = 1/2
EXPECTED_EASY_1M = (25.0, 0.0, 50.0, 50.0)


def write_revisitop(root, images):
    """``images``: name -> PIL image; the first N_DB are the database, the rest the queries."""
    folder = root / "roxford5k"
    (folder / "jpg").mkdir(parents=True)
    for name, img in images.items():
        img.save(folder / "jpg" / f"{name}.jpg", format="PNG")  # lossless, so crops are exact
    names = list(images)
    gnd = {"imlist": names[:N_DB], "qimlist": names[N_DB:], "gnd": GND}
    with open(folder / "gnd_roxford5k.pkl", "wb") as f:
        pickle.dump(gnd, f)
    return root


def noise(size, seed):
    rng = np.random.default_rng(seed)
    return Image.fromarray(rng.integers(0, 256, (size[1], size[0], 3), dtype=np.uint8))


@pytest.fixture
def revisitop_root(tmp_path):
    """Six database images; each query pastes a database image at its box into noise, so its
    crop is that image exactly: query 0 holds image 0 (easy), query 1 image 3 (easy)."""
    db = {f"db{i}": noise((32, 24), i) for i in range(N_DB)}
    queries = {}
    for q, (source, seed) in enumerate([("db0", 10), ("db3", 11)]):
        canvas = noise((48, 40), seed)
        canvas.paste(db[source], tuple(GND[q]["bbx"][:2]))
        queries[f"query{q}"] = canvas
    return write_revisitop(tmp_path / "data", {**db, **queries})


def results_of(path):
    return json.loads(path.read_text())


def table_row(out, protocol):
    line = next(line for line in out.splitlines() if line.startswith(protocol.capitalize()))
    return [float(v) for v in line.split()[1:5]]


def test_features_hand_computed(revisitop_root, tmp_path, capsys):
    np.save(tmp_path / "db.npy", np.eye(N_DB, DIM, dtype=np.float32))
    np.save(tmp_path / "q.npy", QUERIES)
    out_json = tmp_path / "res.json"
    argv = ["eval", "--dataset", "roxford5k", "--root", str(revisitop_root), "--features", str(tmp_path / "db.npy"),
            "--query-features", str(tmp_path / "q.npy"), "--json", str(out_json)]
    assert main(argv) == 0
    out = capsys.readouterr().out
    results = results_of(out_json)
    for protocol, (mAP, p1, p5, p10) in EXPECTED.items():
        got = results["results"][protocol]
        assert [got["mAP"], got["mP@1"], got["mP@5"], got["mP@10"]] == pytest.approx([mAP / 100, p1 / 100, p5 / 100, p10 / 100])
        assert got["queries"] == 2
        assert table_row(out, protocol) == pytest.approx([mAP, p1, p5, p10], abs=0.005)
    assert "cfcd eval: roxford5k" in out
    assert f"model: descriptors from {tmp_path / 'db.npy'}" in out
    assert results["settings"]["distractors"] == 0


def test_features_in_one_container(revisitop_root, tmp_path):
    # A revisitop-style .mat file: X and Q hold d x n matrices.
    from scipy.io import savemat

    savemat(tmp_path / "feats.mat", {"X": np.eye(N_DB, DIM).T, "Q": QUERIES.T})
    out_json = tmp_path / "res.json"
    main(["eval", "--dataset", "roxford5k", "--root", str(revisitop_root), "--features", str(tmp_path / "feats.mat"),
          "--json", str(out_json)])
    assert results_of(out_json)["results"]["hard"]["mAP"] == pytest.approx(0.5625)


@pytest.mark.parametrize("topk", [None, 3])
def test_distractors_follow_the_database(revisitop_root, tmp_path, topk):
    np.save(tmp_path / "db.npy", np.eye(N_DB, DIM, dtype=np.float32))
    np.save(tmp_path / "q.npy", QUERIES)
    np.save(tmp_path / "distractors.npy", np.eye(1, DIM, 6, dtype=np.float32))
    out_json = tmp_path / "res.json"
    argv = ["eval", "--dataset", "roxford5k", "--root", str(revisitop_root), "--features", str(tmp_path / "db.npy"),
            "--query-features", str(tmp_path / "q.npy"), "--distractors", str(tmp_path / "distractors.npy"),
            "--json", str(out_json)] + (["--topk", str(topk)] if topk else [])
    assert main(argv) == 0
    results = results_of(out_json)
    easy = results["results"]["easy"]
    # With top 3 only, query 1's easy positive (rank 3 of 5 3 2 1 ...) is still in the list.
    assert [easy["mAP"], easy["mP@1"], easy["mP@5"], easy["mP@10"]] == pytest.approx([v / 100 for v in EXPECTED_EASY_1M])
    assert results["settings"]["distractors"] == 1
    assert results["settings"]["dataset"] == "roxford5k+1M"


@pytest.fixture
def tiny_checkpoint(tmp_path):
    return samples.tiny_checkpoint(tmp_path / "tiny.pt")


def test_model_crops_queries(revisitop_root, tiny_checkpoint, tmp_path, capsys):
    out_json, cache = tmp_path / "res.json", tmp_path / "cache"
    argv = ["eval", "--dataset", "roxford5k", "--root", str(revisitop_root), "--model", str(tiny_checkpoint),
            "--scales", "1", "--workers", "0", "--cache-dir", str(cache), "--json", str(out_json)]
    assert main(argv) == 0
    out = capsys.readouterr().out
    # The cropped queries are database images 0 and 3 exactly: their easy positives rank first.
    easy = results_of(out_json)["results"]["easy"]
    assert [easy["mAP"], easy["mP@1"]] == [1.0, 1.0]
    assert table_row(out, "easy")[:2] == [100.0, 100.0]
    assert f"model: {tiny_checkpoint}" in out
    assert "scales: 1.0" in out and "max_side: None" in out
    assert "crop: queries cropped to their box" in out
    # The descriptors written to --cache-dir evaluate to the same numbers, with the same header.
    again = tmp_path / "again.json"
    assert main(["eval", "--dataset", "roxford5k", "--root", str(revisitop_root), "--features", str(cache),
                 "--json", str(again)]) == 0
    assert results_of(again) == results_of(out_json)


def test_model_without_crop_matches_the_library(revisitop_root, tiny_checkpoint, tmp_path):
    out_json = tmp_path / "res.json"
    assert main(["eval", "--dataset", "roxford5k", "--root", str(revisitop_root), "--model", str(tiny_checkpoint),
                 "--scales", "1,0.5", "--workers", "0", "--no-crop", "--json", str(out_json)]) == 0
    results = results_of(out_json)
    assert results["settings"]["crop"] == "queries uncropped (full image)"
    data = load_dataset(revisitop_root, "roxford5k")
    model = load_model(tiny_checkpoint)
    # The protocol's preparation is the official extractor's, whatever the model's.
    settings = ExtractionSettings((1, 0.5), max_side=None, preparation="official")
    db = extract(model, data.images, settings, Runtime(progress=False))
    queries = extract(model, data.queries, settings, Runtime(progress=False))
    expected = evaluate_revisitop(rank(queries.astype(np.float64), db.astype(np.float64)), data.gnd).to_dict()
    for protocol, values in expected.items():
        assert results["results"][protocol] == pytest.approx(values)


def test_images_folder_with_features(image_folder, tmp_path, capsys):
    # Six images, identities g0 (rows 0-2) and g1 (rows 3-5) in sorted order; one descriptor per
    # identity gives AP 1 everywhere.
    desc = np.repeat(np.eye(2, 4, dtype=np.float32), 3, axis=0)
    np.save(tmp_path / "desc.npy", desc)
    out_json = tmp_path / "res.json"
    assert main(["eval", "--images", str(image_folder), "--features", str(tmp_path / "desc.npy"), "--json", str(out_json)]) == 0
    assert results_of(out_json)["results"]["pooled"] == {"mAP": 1.0, "R@1": 1.0, "queries": 6}
    out = capsys.readouterr().out
    assert "pooled" in out and "6 images of 2 identities" in out


def test_images_folder_with_model_and_cache(image_folder, tiny_checkpoint, tmp_path):
    out_json, cache = tmp_path / "res.json", tmp_path / "cache"
    common = ["eval", "--images", str(image_folder)]
    assert main(common + ["--model", str(tiny_checkpoint), "--scales", "1", "--workers", "0", "--cache-dir", str(cache),
                          "--json", str(out_json)]) == 0
    again = tmp_path / "again.json"
    assert main(common + ["--features", str(cache), "--json", str(again)]) == 0
    assert results_of(again) == results_of(out_json)
    assert results_of(again)["settings"]["model"] == str(tiny_checkpoint)


@pytest.mark.parametrize(
    "extra, message",
    [
        (["--model", "x.pt", "--features", "f.npy"], "either --model or --features"),
        (["--query-features", "q.npy"], "goes with --features"),
        (["--features", "missing.npy", "--query-features", "q.npy"], "missing.npy"),
    ],
)
def test_user_errors(revisitop_root, extra, message, capsys):
    assert main(["eval", "--dataset", "roxford5k", "--root", str(revisitop_root)] + extra) == 2
    assert message in capsys.readouterr().err


def test_1m_extraction_needs_a_cache(revisitop_root, tiny_checkpoint, capsys):
    assert main(["eval", "--dataset", "roxford5k", "--root", str(revisitop_root), "--model", str(tiny_checkpoint),
                 "--scales", "1", "--workers", "0", "--distractors", "revisitop1m"]) == 2
    assert "--cache-dir" in capsys.readouterr().err


@pytest.mark.slow
@pytest.mark.parametrize("options, expected", [
    # the set's reference point: ImageNet MobileNetV2, GeM p=3, long side 512, three scales
    (["--model", "mobilenet_v2-imagenet", "--scales", "0.7071,1,1.4142", "--max-side", "512"], (85.79, 85.89)),
    # the default model and settings, the protocol's choice (docs/results.md, "Model selection")
    (["--model", "default"], (87.58, 87.55)),  # the full decode's: photos <= 1024 px are decoded whole (issue 29)
])
def test_instances_dev_reference(instances_dev, tmp_path, capsys, options, expected):
    out_json = tmp_path / "res.json"
    assert main(["eval", "--images", str(instances_dev / "images"), *options, "--json", str(out_json)]) == 0
    pooled = results_of(out_json)["results"]["pooled"]
    assert (round(100 * pooled["mAP"], 2), round(100 * pooled["R@1"], 2)) == expected
    assert pooled["queries"] == 241
    assert "pooled" in capsys.readouterr().out
