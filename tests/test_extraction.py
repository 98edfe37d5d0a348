from dataclasses import replace
import os
import subprocess
import sys

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from PIL import Image
from refmodels import OfficialCFCD, bgr_input, randomize_batchnorm

import cfcd
from cfcd.data.decoding import ImageError, load_image
from cfcd.data.images import to_tensor
from cfcd.extraction import extract_to_dir, failed_rows, load_features
from cfcd.settings import CFCD_SCALES, PAPER_SETTINGS, ExtractionSettings, Runtime
from cfcd.model import save_checkpoint


ONE_SCALE = ExtractionSettings((1.0,), max_side=None)
QUIET = Runtime(progress=False)


def manual_descriptor(model, img: Image.Image, scales, max_side=None):
    """The definition: per-scale L2-normalised outputs, summed, L2-normalised."""
    w, h = img.size
    f = max_side / max(w, h) if max_side else 1.0
    acc = 0
    for s in scales:
        size = (max(32, round(w * f * s)), max(32, round(h * f * s)))
        x = to_tensor(img.resize(size, Image.BILINEAR) if size != img.size else img)[None]
        with torch.no_grad():
            acc = acc + F.normalize(model(x), dim=-1)[0]
    return F.normalize(acc, dim=0).numpy()


def test_multiscale_matches_definition(tiny_model, image_folder):
    paths = sorted(image_folder.rglob("*.jpg"))
    scales = (0.7071, 1.0, 1.4142)
    got = cfcd.extract(tiny_model, paths, ExtractionSettings(scales, max_side=80), QUIET)
    expected = np.stack([manual_descriptor(tiny_model, load_image(p), scales, 80) for p in paths])
    assert got.dtype == np.float32 and got.shape == (6, 32)
    assert np.abs(got - expected).max() < 1e-5
    assert np.allclose(np.linalg.norm(got, axis=1), 1, atol=1e-5)


def test_batching_and_workers_do_not_change_results(tiny_model, image_folder):
    paths = sorted(image_folder.rglob("*.jpg"))
    settings = ExtractionSettings((0.5, 1.0), max_side=None)
    one = cfcd.extract(tiny_model, paths, settings, Runtime(batch_size=1, progress=False))
    many = cfcd.extract(tiny_model, paths, settings, Runtime(batch_size=8, num_workers=2, progress=False))
    assert np.abs(one - many).max() < 1e-5


def test_query_crop_and_pil_inputs(tiny_model, image_folder):
    path = sorted(image_folder.rglob("*.jpg"))[0]
    bbox = (3.4, 5.0, 41.6, 40.2)
    cropped = load_image(path).crop((3, 5, 42, 40))
    a, b = cfcd.extract(tiny_model, [(path, bbox), cropped], ONE_SCALE, QUIET)
    assert np.abs(a - b).max() < 1e-6
    with pytest.raises(ImageError, match="empty crop box"):
        cfcd.extract(tiny_model, [(path, (10, 10, 5, 20))], runtime=QUIET)


def test_unreadable_image_raises_or_is_skipped(tiny_model, image_folder):
    bad = image_folder / "bad.jpg"
    bad.write_bytes(b"garbage")
    paths = [*sorted(image_folder.rglob("im*.jpg")), bad]
    with pytest.raises(ImageError, match="bad.jpg"):
        cfcd.extract(tiny_model, paths, ONE_SCALE, QUIET)
    desc = cfcd.extract(tiny_model, paths, ONE_SCALE, QUIET, skip_errors=True)
    assert failed_rows(desc).tolist() == [6]


def test_shards_resume_without_redoing_finished_work(tiny_model, image_folder, tmp_path):
    paths = sorted(image_folder.rglob("*.jpg"))
    out = tmp_path / "feats"
    extract_to_dir(tiny_model, paths, out, shard_size=4, settings=ONE_SCALE, runtime=QUIET)
    ids, full, manifest = load_features(out)
    assert ids == [str(p) for p in paths] and full.shape == (6, 32)
    assert [s["count"] for s in manifest["shards"]] == [4, 2] and manifest["scales"] == [1.0]
    assert manifest["model"]["name"] == "tiny-test"

    first = out / "shard-00000.npy"
    stamp = first.stat().st_mtime_ns
    (out / "shard-00001.npy").unlink()  # as if the run had been killed before the last shard
    extract_to_dir(tiny_model, paths, out, shard_size=4, settings=ONE_SCALE, runtime=QUIET)
    assert first.stat().st_mtime_ns == stamp
    assert np.array_equal(load_features(out)[1], full)

    with pytest.raises(ValueError, match="other images or settings"):
        extract_to_dir(tiny_model, paths, out, shard_size=4, settings=ExtractionSettings((0.5,), max_side=None), runtime=QUIET)


def test_incomplete_directory_is_reported(tmp_path):
    (tmp_path / "manifest.json.partial").write_text("{}")
    with pytest.raises(FileNotFoundError, match="incomplete: rerun it to resume"):
        load_features(tmp_path)


def test_float16_shards(tiny_model, image_folder, tmp_path):
    paths = sorted(image_folder.rglob("*.jpg"))
    extract_to_dir(tiny_model, paths, tmp_path / "f16", dtype="float16", settings=ONE_SCALE, runtime=QUIET)
    assert np.load(tmp_path / "f16" / "shard-00000.npy").dtype == np.float16
    assert load_features(tmp_path / "f16")[1].dtype == np.float32


def test_cli_extract_resolves_the_settings_once(tiny_model, image_folder, tmp_path, monkeypatch):
    """`cfcd extract` resolves its settings in one place; extract_to_dir and extract take them as
    resolved (issue 19.3: it ran three times)."""
    import cfcd.extraction
    import cfcd.settings
    from cfcd.cli import main

    calls = []
    original = cfcd.settings.resolve

    def counted(*args, **kwargs):
        calls.append(args)
        return original(*args, **kwargs)

    monkeypatch.setattr(cfcd.settings, "resolve", counted)
    monkeypatch.setattr(cfcd.extraction, "resolve", counted)
    ckpt = tmp_path / "tiny.pt"
    save_checkpoint(ckpt, tiny_model)
    assert main(["extract", str(image_folder), "-o", str(tmp_path / "f"), "--model", str(ckpt), "--scales", "1",
                 "--max-side", "0", "--shard-size", "2"]) == 0
    assert len(calls) == 1
    assert load_features(tmp_path / "f")[2]["scales"] == [1.0]
    calls.clear()  # the library alone, without settings: resolved once too
    cfcd.extract(tiny_model, sorted(image_folder.rglob("*.jpg"))[:1], runtime=QUIET)
    extract_to_dir(tiny_model, sorted(image_folder.rglob("*.jpg"))[:2], tmp_path / "g", runtime=QUIET, shard_size=1)
    assert len(calls) == 2


def run_cli(*args, env_extra=None):
    env = {**os.environ, "OMP_NUM_THREADS": "1", **(env_extra or {})}
    return subprocess.run([sys.executable, *args], capture_output=True, text=True, env=env, timeout=600)


def test_torchrun_shards_merge_into_the_single_process_result(tiny_model, image_folder, tmp_path):
    ckpt = tmp_path / "tiny.pt"
    save_checkpoint(ckpt, tiny_model)
    common = ["extract", str(image_folder), "--model", str(ckpt), "--scales", "1.0", "--shard-size", "2", "--workers", "0"]
    single = run_cli("-m", "cfcd", *common, "-o", str(tmp_path / "one"))
    assert single.returncode == 0, single.stderr
    multi = run_cli("-m", "torch.distributed.run", "--nproc-per-node", "2", "-m", "cfcd", *common, "-o", str(tmp_path / "two"))
    assert multi.returncode == 0, multi.stderr
    ids1, x1, m1 = load_features(tmp_path / "one")
    ids2, x2, m2 = load_features(tmp_path / "two")
    assert ids1 == ids2 and np.array_equal(x1, x2) and m1 == m2
    assert len(m1["shards"]) == 3


def test_cli_reports_bad_input_without_traceback(tmp_path):
    result = run_cli("-m", "cfcd", "extract", str(tmp_path / "nowhere"), "-o", str(tmp_path / "o"))
    assert result.returncode == 2
    assert "nowhere: neither a folder of images nor a list file" in result.stderr
    assert "Traceback" not in result.stderr


@pytest.mark.slow
def test_official_checkpoint_network_matches_official_forward(instances_dev, tmp_path):
    """Fed the same pixels, a converted official CFCD checkpoint computes the official forward
    pass (BGR input, GeM p=3, fc, bn, L2), on real photos. This checks the network and the
    channel conversion only; the official image preparation is checked against the official
    code's own output in tests/official."""
    torch.manual_seed(0)
    official = randomize_batchnorm(OfficialCFCD(depth=50, dim=512, num_classes=11))
    path = tmp_path / "model_s2_0050.pyth"
    torch.save({"epoch": 50, "model_state": official.state_dict(), "optimizer_state": {}}, path)
    photos = sorted((instances_dev / "images").rglob("*.jpg"))[::60][:4]
    scales = (0.5, 1.0)
    got = cfcd.extract(cfcd.load_model(path), photos, ExtractionSettings(scales, max_side=160, preparation="cfcd"), QUIET)
    for row, photo in zip(got, photos):
        img = load_image(photo)
        acc = 0
        for s in scales:
            f = 160 / max(img.size)
            size = (round(img.width * f * s), round(img.height * f * s))
            pixels = torch.from_numpy(np.asarray(img.resize(size, Image.BILINEAR)).copy())[None]
            with torch.no_grad():
                acc = acc + official(bgr_input(pixels))[0]
        expected = F.normalize(acc, dim=0).numpy()
        assert 1 - float(row @ expected) < 1e-5


def test_inference_copy_is_cached_until_weights_change(tiny_model):
    from cfcd.extraction import inference_copy

    first = inference_copy(tiny_model)
    assert first is not tiny_model and inference_copy(tiny_model) is first
    assert all(p.is_contiguous() for p in tiny_model.parameters())  # the caller's model is untouched
    with torch.no_grad():
        tiny_model.fc.bias.add_(1.0)
    assert inference_copy(tiny_model) is not first


def test_concurrent_extraction_from_threads(tiny_model, image_folder):
    """A server runs queries in threads on one model: results must not depend on that."""
    from concurrent.futures import ThreadPoolExecutor

    paths = sorted(image_folder.rglob("*.jpg"))
    expected = cfcd.extract(tiny_model, paths, ONE_SCALE, QUIET)
    fresh = type(tiny_model)(tiny_model.config).eval()
    fresh.load_state_dict(tiny_model.state_dict())
    with ThreadPoolExecutor(4) as pool:
        rows = list(pool.map(lambda p: cfcd.extract(fresh, [p], ONE_SCALE, QUIET)[0], paths * 2))
    assert np.abs(np.stack(rows) - np.concatenate([expected, expected])).max() < 1e-5


class InputSizes(torch.nn.Module):
    """A stand-in network that records the size of every input it is fed (its descriptor is
    the mean colour): what the working-size cap bounds is the input, not the weights."""

    def __init__(self, preparation: str = "cfcd"):
        super().__init__()
        self.config = cfcd.ModelConfig(backbone="mobilenet_v2", dim=3, preparation=preparation)
        self.output_dim = 3
        self.name = "input-sizes"
        self.seen = []

    def forward(self, x):
        self.seen.append(tuple(x.shape[2:]))
        return x.mean(dim=(2, 3))


def photo_24mp(path):
    """A 6000 x 4000 JPEG (a 24 Mpx camera's frame); smooth, so it is small and quick to make."""
    y, x = np.mgrid[0:4000, 0:6000].astype(np.float32)
    arr = np.stack([x / 6000 * 255, y / 4000 * 255, (x + y) % 256], axis=-1).astype(np.uint8)
    Image.fromarray(arr).save(path, quality=80)
    return path


@pytest.mark.parametrize("preparation", ["cfcd", "official"])
def test_working_size_cap_holds_for_a_24_megapixel_photo(tmp_path, preparation):
    from cfcd.settings import DEFAULT_MAX_WORKING_SIDE

    path = photo_24mp(tmp_path / "camera.jpg")
    model = InputSizes(preparation)
    cfcd.extract(model, [path], ExtractionSettings(preparation=preparation), QUIET)  # the defaults: 384 px long side
    assert model.seen == [(181, 272), (256, 384)]
    model.seen.clear()
    # the paper's settings work at the original size: the cap bounds them
    cfcd.extract(model, [path, (path, (0, 0, 3000, 4000))], replace(PAPER_SETTINGS, preparation=preparation), QUIET)
    assert len(model.seen) == 10
    assert max(max(hw) for hw in model.seen) == DEFAULT_MAX_WORKING_SIDE  # the largest scale, capped
    # the pyramid keeps the shape: the photo's largest scale, then the portrait crop's
    assert (model.seen[4], model.seen[9]) == ((976, DEFAULT_MAX_WORKING_SIDE), (DEFAULT_MAX_WORKING_SIDE, 1098))
    assert all(h * w < 6000 * 4000 for h, w in model.seen)  # never fed at 1.41x (or even 1x) its size
    model.seen.clear()
    cfcd.extract(model, [path], ExtractionSettings((1.0,), max_side=None, max_working_side=640), QUIET)
    assert model.seen == [(427, 640)]


def test_working_size_cap_leaves_images_up_to_1024_px_alone(tmp_path):
    """Revisited Oxford/Paris images are <= 1024 px: the paper's five scales reach them unchanged,
    with the protocol's settings and with an official checkpoint's defaults."""
    from cfcd.evaluate.benchmarks import revisitop

    path = tmp_path / "oxford-sized.png"
    Image.new("RGB", (1024, 768), (90, 120, 30)).save(path)
    model = InputSizes("official")
    cfcd.extract(model, [path], revisitop.SETTINGS, QUIET)
    cfcd.extract(model, [path], runtime=QUIET)
    assert model.seen == [(round(768 * s), round(1024 * s)) for s in CFCD_SCALES] * 2


def test_an_index_that_stored_no_cap_is_capped_at_query_time(tmp_path):
    """Indexes written before the cap existed hold {scales, max_side} only; their queries are
    capped all the same."""
    import json
    import sqlite3

    from cfcd.index import Index, Searcher, store
    from cfcd.settings import DEFAULT_MAX_WORKING_SIDE

    root = tmp_path / "idx"
    model = InputSizes()
    index = Index(3, model=model, settings={"scales": [1.0, 1.4142], "max_side": None})
    index.add(np.eye(3, dtype=np.float32)[:1], ["a.jpg"])
    index.save(root)
    _, version = store.current(root)
    db = sqlite3.connect(version / store.META_FILE)
    db.execute("UPDATE info SET value = ? WHERE key = 'settings'", (json.dumps({"scales": [1.0, 1.4142], "max_side": None}),))
    db.commit()
    db.close()
    loaded = Index.load(root)
    Searcher(loaded, model).search([photo_24mp(tmp_path / "big.jpg")], k=1)
    assert loaded.settings["max_working_side"] == DEFAULT_MAX_WORKING_SIDE
    assert max(max(hw) for hw in model.seen) == DEFAULT_MAX_WORKING_SIDE


# Issue 20: a JPEG is decoded at the size the largest scale needs, and photos are seen upright.

T = Image.Transpose
# How a camera stores an upright picture under each EXIF orientation: the inverse of the
# transposition that shows it upright.
STORED_AS = {1: None, 2: T.FLIP_LEFT_RIGHT, 3: T.ROTATE_180, 4: T.FLIP_TOP_BOTTOM, 5: T.TRANSPOSE,
             6: T.ROTATE_90, 7: T.TRANSVERSE, 8: T.ROTATE_270}
SMALL = ExtractionSettings((0.5, 1.0), max_side=128, preparation="cfcd")


def upright_picture(w: int = 1203, h: int = 805) -> Image.Image:
    """Waves that shift visibly when a box is off by a fraction of a pixel; sides that are not
    multiples of 8, so a 1/8 decode ends in a partial block."""
    y, x = np.mgrid[0:h, 0:w].astype(np.float32)
    arr = np.stack([x / w * 200, 128 + 100 * np.sin(x / 48 * 2 * np.pi), 128 + 100 * np.cos(y / 40 * 2 * np.pi)], axis=-1)
    return Image.fromarray(arr.clip(0, 255).astype(np.uint8))


def phone_photo(path, upright: Image.Image, orientation: int):
    stored = upright if STORED_AS[orientation] is None else upright.transpose(STORED_AS[orientation])
    exif = Image.Exif()
    exif[0x0112] = orientation
    stored.save(path, quality=95, exif=exif.tobytes())
    return path


@pytest.mark.parametrize("orientation", range(1, 9))
def test_reduced_decode_sees_the_photo_upright_with_boxes_in_upright_coordinates(tmp_path, orientation):
    from cfcd.data.decoding import decode_image
    from cfcd.extraction import prepare

    upright = upright_picture()
    path = phone_photo(tmp_path / "phone.jpg", upright, orientation)
    assert decode_image(path, need=lambda size: (150, 100)).image.size in ((151, 101), (101, 151))  # 1/8 of it
    box = (100.4, 50.2, 1000.6, 700.3)  # upright coordinates, as a user draws it on the photo they see
    for item, truth in ((path, upright), ((path, box), (upright, box))):
        got, expected = prepare(item, SMALL), prepare(truth, SMALL)  # the photo itself: no decode at all
        for g, e in zip(got, expected):
            assert g.shape == e.shape
            assert (g - e).abs().mean() < 0.015, (orientation, item)


def test_only_the_cfcd_preparation_decodes_reduced_the_official_one_stays_exact(tmp_path):
    from cfcd.data.images import get_preparation
    from cfcd.extraction import prepare, working_sizes

    path = phone_photo(tmp_path / "phone.jpg", upright_picture(), 6)
    full = load_image(path)
    for name in ("official", "cfcd"):
        settings = replace(SMALL, preparation=name)
        expected = get_preparation(name).views(full, working_sizes(*full.size, settings))
        same = all(torch.equal(g, e) for g, e in zip(prepare(path, settings), expected))
        assert same == (name == "official"), name  # cfcd's reduced decode gives other (close) pixels


def test_a_jpeg_is_decoded_reduced_only_down_to_twice_the_largest_view(tmp_path):
    """DCT scaling aliases: decoding straight to the view's size lost 1.1-1.7 mAP on hard photos
    (issue 29), so the reduced decode stops at twice the largest view and the antialiased
    resize does the rest. A 1024 px photo seen at 384 px is then decoded at full size."""
    from cfcd.data.decoding import decode_image
    from cfcd.data.images import get_preparation
    from cfcd.extraction import prepare, working_sizes

    settings = ExtractionSettings((0.7071, 1.0), max_side=384, preparation="cfcd")
    prep = get_preparation("cfcd")
    small = phone_photo(tmp_path / "small.jpg", upright_picture(1024, 683), 1)
    full = load_image(small)
    expected = prep.views(full, working_sizes(*full.size, settings))
    assert all(torch.equal(g, e) for g, e in zip(prepare(small, settings), expected))
    big = phone_photo(tmp_path / "big.jpg", upright_picture(3200, 2134), 6)  # 768 px needed: 1/4 gives 800
    seen = []
    original = decode_image

    def spy(source, max_pixels, need=None):
        out = original(source, max_pixels, need)
        seen.append(out.image.size)
        return out

    import cfcd.extraction as extraction
    extraction.decode_image, restore = spy, extraction.decode_image
    try:
        views = prepare(big, settings)
    finally:
        extraction.decode_image = restore
    assert seen == [(800, 534)]  # upright, 1/4 of 3200 x 2134: at least 2 x (384, 256)
    full = load_image(big)
    for g, e in zip(views, prep.views(full, working_sizes(*full.size, settings))):
        assert g.shape == e.shape and (g - e).abs().mean() < 0.01
