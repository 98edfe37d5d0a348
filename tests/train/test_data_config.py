"""Recipes (YAML + overrides, unknown keys) and training data (formats, class map, drops,
validation split, unreadable images)."""

from __future__ import annotations

import pytest
import torch
from PIL import Image

from cfcd.train.config import ConfigError, load_config, packaged_recipes
from cfcd.train.datasets import Samples, TrainDataset, collate, read_samples, split_validation
from cfcd.train.transforms import TrainTransform


def test_packaged_recipes_load_with_paper_settings():
    assert {"r50-gldv2", "r101-gldv2", "cpu-mobilenet"} <= set(packaged_recipes())
    r50 = load_config("r50-gldv2")
    assert (r50.stage1.batch_size, r50.data.image_size, r50.stage1.epochs, r50.stage2.epochs) == (128, 512, 50, 50)
    assert (r50.stage1.base_lr, r50.loss["madacos"]["alpha"], r50.sampler["tuples"]["tuple_size"]) == (0.005, 0.02, 8)
    assert (r50.stage1.sampler, r50.stage1.head, r50.stage1.terms) == ("shuffle", "madacos", {"cross_entropy": 1.0})
    assert (r50.stage2.sampler, r50.stage2.terms) == ("tuples", {"cross_entropy": 1.0, "local_triplet": 1.0})
    assert r50.loss["local_triplet"] == {"margin": 0.1, "ratio": 0.9, "norm_images": 16}
    assert (r50.stage1.warmup_epochs, r50.stage2.warmup_epochs) == (5, 0)
    r101 = load_config("r101-gldv2")
    assert (r101.model.backbone, r101.sampler["tuples"]["tuple_size"]) == ("resnet101", 4)
    cpu = load_config("cpu-mobilenet", ["stage1.epochs=3", "data.drop_landmarks=[1, 2]", "run.amp=off"])
    assert (cpu.model.backbone, cpu.model.dim, cpu.stage1.epochs, cpu.data.drop_landmarks) == ("mobilenet_v2", 512, 3, [1, 2])
    assert cpu.run.amp == "off"


@pytest.mark.parametrize("override, name", [("stage1.epoch=3", "stage1.epoch"), ("optimizer.lr=1", "optimizer")])
def test_unknown_key_is_an_error_naming_it(override, name):
    with pytest.raises(ConfigError, match=f"unknown config key '{name}'"):
        load_config("cpu-mobilenet", [override])


def test_loss_settings_are_checked_against_the_registry():
    cfg = load_config("cpu-mobilenet", ["stage2.terms.local_triplet=0.05", "loss.madacos.alpha=0.05"])
    # an override adds to the recipe's mapping instead of replacing it
    assert cfg.stage2.terms == {"cross_entropy": 1.0, "local_triplet": 0.05}
    assert cfg.loss["madacos"] == {"alpha": 0.05} and cfg.loss["local_triplet"] == {"norm_images": 16}
    with pytest.raises(ConfigError, match="loss.madacos.alpah: madacos has no such parameter; its parameters: alpha, k, min_scale"):
        load_config("cpu-mobilenet", ["loss.madacos.alpah=0.1"])
    with pytest.raises(ConfigError, match="unknown head 'cosface'; choose one of madacos, arcface"):
        load_config("cpu-mobilenet", ["stage1.head=cosface"])
    with pytest.raises(ConfigError, match="unknown loss term 'triplet'"):
        load_config("cpu-mobilenet", ["stage2.terms.triplet=1"])
    with pytest.raises(ConfigError, match="loss.foo: not a registered head or loss term"):
        load_config("cpu-mobilenet", ["loss.foo.x=1"])


def test_stage2_has_no_head_init():
    # stage 2 always continues stage 1's head: the setting would do nothing, so it does not exist
    with pytest.raises(ConfigError, match="unknown config key 'stage2.head_init'"):
        load_config("cpu-mobilenet", ["stage2.head_init=pca"])


def test_unknown_key_in_file(tmp_path):
    path = tmp_path / "r.yaml"
    path.write_text("data:\n  image_sise: 32\n")
    with pytest.raises(ConfigError, match="data.image_sise"):
        load_config(path)


def test_gldv2_csv_and_list_file_and_drop_and_remap(tmp_path):
    csv = tmp_path / "train_clean.csv"
    csv.write_text("landmark_id,images\n10,abc1 abd2\n7,fff3\n200,aaa4 aab5\n")
    s = read_samples(load_config(None, [f"data.train={csv}", "data.drop_landmarks=[200]"]).data)
    assert s.classes == ["7", "10"] and s.labels == [1, 1, 0]
    assert s.paths[0] == str(tmp_path / "train" / "a" / "b" / "c" / "abc1.jpg")
    listing = tmp_path / "list.txt"
    listing.write_text("x/1.jpg 5\nx/2.jpg 3\n")
    drop = tmp_path / "drop.txt"
    drop.write_text("3\n")
    s = read_samples(load_config(None, [f"data.train={listing}", f"data.drop_landmarks={drop}"]).data)
    assert s.classes == ["5"] and s.paths == [str(tmp_path / "x" / "1.jpg")]


def test_validation_split_is_per_class_and_deterministic():
    s = Samples([f"{i}.jpg" for i in range(30)], [i // 10 for i in range(30)] + [], ["a", "b", "c"])
    train, val = split_validation(s, 0.2, seed=1)
    assert len(val) == 6 and len(train) == 24 and sorted(val.labels) == [0, 0, 1, 1, 2, 2]
    assert split_validation(s, 0.2, seed=1)[1].paths == val.paths
    assert not set(train.paths) & set(val.paths)


def test_unreadable_image_is_skipped_counted_and_replaced_by_its_class(class_folder):
    bad = class_folder / "class1" / "broken.png"
    bad.write_bytes(b"not an image")
    s = read_samples(load_config(None, [f"data.train={class_folder}"]).data)
    dataset = TrainDataset(s, TrainTransform(32))
    i = s.paths.index(str(bad))
    x, label, used, skipped = dataset[(i, 0)]
    assert x.shape == (3, 32, 32) and label == s.labels[i] and used != i and skipped == [str(bad)]
    batch = collate([dataset[(i, 1)], dataset[(0, 2)]])
    assert batch[0].shape == (2, 3, 32, 32) and batch[3] == [str(bad)]


def test_augmentation_depends_only_on_the_seed():
    img = Image.new("RGB", (80, 60), (120, 30, 200))
    t = TrainTransform(48)
    a, b = t(img, torch.Generator().manual_seed(5)), t(img, torch.Generator().manual_seed(5))
    assert a.shape == (3, 48, 48) and torch.equal(a, b)


def test_crop_area_bounds_the_random_crops():
    from cfcd.train.transforms import random_resized_crop_box
    boxes = [random_resized_crop_box(400, 300, torch.Generator().manual_seed(k), area=(0.5, 1.0)) for k in range(200)]
    fractions = [w * h / (400 * 300) for _, _, w, h in boxes]
    assert min(fractions) > 0.49 and max(fractions) <= 1.0
    img = Image.new("RGB", (80, 60))
    img.paste((250, 0, 0), (0, 0, 8, 60))  # a red stripe at the left edge: in every crop of the whole photo
    whole = TrainTransform(48, lighting_std=0, flip=False, crop_area=(1.0, 1.0))
    for k in range(10):
        x = whole(img, torch.Generator().manual_seed(k))
        assert x[0, :, :2].mean() > 0.9
    with pytest.raises(ConfigError, match=r"data.crop_area = \[0.0, 1.0\]"):
        TrainTransform(48, crop_area=(0.0, 1.0))
    with pytest.raises(ConfigError, match=r"data.crop_area = 0.5: give \[low, high\]"):
        TrainTransform(48, crop_area=0.5)
    assert load_config("cpu-mobilenet", ["data.crop_area=[0.3, 1]"]).data.crop_area == [0.3, 1]


def test_sampler_parameters_come_from_their_section_and_are_checked():
    cfg = load_config("cpu-mobilenet", ["sampler.tuples.tuple_size=6"])
    assert cfg.sampler == {"tuples": {"tuple_size": 6}}  # the override replaced the recipe's 4
    with pytest.raises(ConfigError, match=r"sampler\.tuples\.tuple_sise: tuples has no such parameter; its parameters: tuple_size"):
        load_config("cpu-mobilenet", ["sampler.tuples.tuple_sise=6"])
    with pytest.raises(ConfigError, match=r"stage1\.sampler: unknown sampler 'pk'; choose one of shuffle, tuples, balanced"):
        load_config("cpu-mobilenet", ["stage1.sampler=pk"])
    with pytest.raises(ConfigError, match=r"sampler\.pk: not a registered sampler"):
        load_config("cpu-mobilenet", ["sampler.pk.per_class=2"])


def test_an_older_recipe_s_stage_tuple_size_is_read_as_the_sampler_parameter(tmp_path, caplog):
    old = tmp_path / "old.yaml"
    old.write_text("stage2:\n  sampler: tuples\n  tuple_size: 6\n")
    assert load_config(old).sampler["tuples"] == {"tuple_size": 6}
    assert "stage2.tuple_size is now sampler.tuples.tuple_size" in caplog.text
    assert load_config(old, ["sampler.tuples.tuple_size=6"]).sampler["tuples"] == {"tuple_size": 6}
    with pytest.raises(ConfigError, match="give only sampler.tuples.tuple_size"):
        load_config(old, ["sampler.tuples.tuple_size=5"])


def test_exposure_change_darkens_and_desaturates_a_share_of_the_crops():
    from cfcd.train.transforms import EXPOSURE_GAIN
    img = Image.new("RGB", (64, 64), (200, 120, 60))
    plain = TrainTransform(32, lighting_std=0, flip=False, crop_area=(1.0, 1.0))
    night = TrainTransform(32, lighting_std=0, flip=False, crop_area=(1.0, 1.0), exposure=0.5)
    base = plain(img, torch.Generator().manual_seed(0))
    changed = 0
    for k in range(40):
        x = night(img, torch.Generator().manual_seed(k))
        if not torch.equal(x, base):
            changed += 1
            assert x.max() <= base.max() + 1e-6  # darker: gain <= 1, gamma >= 1
            assert (x[0] - x[2]).mean() < (base[0] - base[2]).mean()  # less saturated
            assert x.mean() >= EXPOSURE_GAIN[0] * base.mean() ** 2 - 1e-6
    assert 8 <= changed <= 32  # about half of the crops
    # off by default: the same crops as before the option existed
    assert all(torch.equal(TrainTransform(32)(img, torch.Generator().manual_seed(k)),
                           TrainTransform(32, exposure=0.0)(img, torch.Generator().manual_seed(k))) for k in range(3))
    with pytest.raises(ConfigError, match=r"data.exposure = 1.5"):
        TrainTransform(32, exposure=1.5)
    assert load_config("finetune-small", ["data.exposure=0.5"]).data.exposure == 0.5
