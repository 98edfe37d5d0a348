"""ExtractionSettings, Runtime and the one resolver of stored settings and overrides."""

from __future__ import annotations

import pytest

from cfcd.model import CFCDNet, ModelConfig
from cfcd.settings import (
    CFCD_SCALES,
    DEFAULT_MAX_WORKING_SIDE,
    ExtractionSettings,
    Runtime,
    model_preparation,
    resolve,
)


def test_defaults_are_the_paper_scales_at_the_original_size():
    s = ExtractionSettings()
    assert s.scales == CFCD_SCALES and s.max_side is None and s.max_working_side == DEFAULT_MAX_WORKING_SIDE
    assert s.preparation is None  # the model's


def test_stored_settings_of_older_files_keep_what_they_were_made_with():
    legacy = {"scales": [1.0], "max_side": 512, "format": "cfcd-features", "ids": ["a"]}
    s = ExtractionSettings.from_dict(legacy)
    assert s == ExtractionSettings((1.0,), max_side=512, preparation="cfcd")
    assert s.max_working_side == DEFAULT_MAX_WORKING_SIDE  # no cap stored: today's cap applies
    assert ExtractionSettings.from_dict(s.to_dict()) == s


def test_overrides_win_over_stored_settings_which_win_over_defaults():
    stored = {"scales": [0.5, 1.0], "max_side": 512, "max_working_side": 1024, "preparation": "official"}
    assert resolve(stored) == ExtractionSettings((0.5, 1.0), 512, 1024, "official")
    got = resolve(stored, {"scales": (1.0,), "max_side": None, "preparation": None})  # None: not given
    assert got == ExtractionSettings((1.0,), 512, 1024, "official")
    assert resolve(stored, {"max_side": 0}).max_side is None  # 0: back to the original size
    # a whole settings object replaces the stored one; its open preparation is the stored one
    assert resolve(stored, ExtractionSettings((1.0,))) == ExtractionSettings((1.0,), preparation="official")
    assert resolve(None, {}) == ExtractionSettings()
    with pytest.raises(ValueError, match="unknown extraction settings"):
        resolve(None, {"scale": 1.0})


def test_preparation_comes_from_the_model_when_left_open():
    official = CFCDNet(ModelConfig(backbone="mobilenet_v2", dim=0, preparation="official"))
    assert resolve(None, None, official).preparation == "official"
    assert resolve(None, {"preparation": "cfcd"}, official).preparation == "cfcd"
    assert resolve({"scales": [1.0]}, None, official).preparation == "cfcd"  # a legacy index was made with cfcd's
    assert model_preparation({"name": "x", "config": {"backbone": "resnet50"}, "dim": 8}) == "cfcd"
    assert ModelConfig.from_dict({"backbone": "resnet50", "dim": 512}).preparation == "cfcd"


@pytest.mark.parametrize(
    "kwargs, message",
    [
        ({"scales": ()}, "at least one scale"),
        ({"scales": (1.0, -0.5)}, "all positive"),
        ({"scales": "abc"}, "sequence of numbers"),
        ({"max_side": 12.5}, "max_side 12.5"),
        ({"max_working_side": 0}, "max_working_side"),
        ({"preparation": "opencv"}, "choose one of cfcd, official"),
    ],
)
def test_bad_settings_name_the_value(kwargs, message):
    with pytest.raises(ValueError, match=message):
        ExtractionSettings(**kwargs)


def test_runtime_checks_its_numbers():
    assert Runtime().batch_size is None
    with pytest.raises(ValueError, match="batch_size 0"):
        Runtime(batch_size=0)
    with pytest.raises(ValueError, match="num_workers -1"):
        Runtime(num_workers=-1)
