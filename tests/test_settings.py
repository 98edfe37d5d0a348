"""ExtractionSettings, Runtime and the one resolver of stored settings and overrides."""

from __future__ import annotations

import pytest

from cfcd.errors import ConfigError
from cfcd.model import CFCDNet, ModelConfig
from cfcd.settings import (
    CFCD_SCALES,
    DEFAULT_MAX_SIDE,
    DEFAULT_MAX_WORKING_SIDE,
    DEFAULT_SCALES,
    PAPER_SETTINGS,
    ExtractionSettings,
    Runtime,
    default_settings,
    model_preparation,
    parse_scales,
    preparation_names,
    resolve,
)


def test_defaults_are_two_scales_at_384_px_and_the_paper_settings_are_named():
    s = ExtractionSettings()
    assert s.scales == DEFAULT_SCALES == (0.7071, 1.0) and s.max_side == DEFAULT_MAX_SIDE == 384
    assert s.max_working_side == DEFAULT_MAX_WORKING_SIDE and s.preparation is None  # the model's
    assert PAPER_SETTINGS.scales == CFCD_SCALES and PAPER_SETTINGS.max_side is None


def test_official_checkpoints_default_to_the_paper_settings_other_models_to_the_chosen_ones():
    official = CFCDNet(ModelConfig(backbone="mobilenet_v2", dim=0, preparation="official"))
    ours = CFCDNet(ModelConfig(backbone="mobilenet_v2", dim=0))
    assert default_settings(official) == ExtractionSettings(CFCD_SCALES, None, preparation="official")
    assert default_settings(ours) == ExtractionSettings(preparation="cfcd")
    assert resolve(None, None, official) == default_settings(official)
    assert resolve(None, {"max_side": 1024}, official).scales == CFCD_SCALES  # overrides start from the model's
    # one flag away: the paper's settings for any model, the chosen ones for an official checkpoint
    assert resolve(None, {"preset": "paper"}, ours) == ExtractionSettings(CFCD_SCALES, None, preparation="cfcd")
    assert resolve(None, {"preset": "default"}, official) == ExtractionSettings(preparation="official")
    assert resolve(None, {"preset": "paper", "scales": (1.0,)}, ours).scales == (1.0,)
    with pytest.raises(ValueError, match="preset 'fast': choose one of default, paper"):
        resolve(None, {"preset": "fast"})


def test_stored_settings_of_older_files_keep_what_they_were_made_with():
    legacy = {"scales": [1.0], "max_side": 512, "format": "cfcd-features", "ids": ["a"]}
    s = ExtractionSettings.from_dict(legacy)
    assert s == ExtractionSettings((1.0,), max_side=512, preparation="cfcd")
    assert s.max_working_side == DEFAULT_MAX_WORKING_SIDE  # no cap stored: today's cap applies
    assert ExtractionSettings.from_dict(s.to_dict()) == s
    # made with the former defaults: stored as null / not stored at all, never today's 512 px
    assert ExtractionSettings.from_dict({"scales": [1.0], "max_side": None}).max_side is None
    assert ExtractionSettings.from_dict({"max_side": None}).scales == CFCD_SCALES


def test_overrides_win_over_stored_settings_which_win_over_defaults():
    stored = {"scales": [0.5, 1.0], "max_side": 512, "max_working_side": 1024, "preparation": "official"}
    assert resolve(stored) == ExtractionSettings((0.5, 1.0), 512, 1024, "official")
    got = resolve(stored, {"scales": (1.0,), "max_side": None, "preparation": None})  # None: not given
    assert got == ExtractionSettings((1.0,), 512, 1024, "official")
    assert resolve(stored, {"max_side": 0}).max_side is None  # 0: back to the original size
    # a whole settings object replaces the stored one; its open preparation is the stored one
    assert resolve(stored, ExtractionSettings((1.0,))) == ExtractionSettings((1.0,), preparation="official")
    assert resolve(None, {}) == ExtractionSettings()
    assert resolve(None, {"max_side": 0}) == ExtractionSettings(max_side=None)
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


def test_the_preparations_are_the_implemented_ones(monkeypatch):
    """The names settings accept come from ``cfcd.data.images.PREPARATIONS``: a preparation
    added there is accepted, one taken away refused, with nothing else to keep in step."""
    from cfcd.cli import build_parser
    from cfcd.data import images

    assert preparation_names() == tuple(images.PREPARATIONS) == ("cfcd", "official")
    monkeypatch.setitem(images.PREPARATIONS, "lanczos", images.PREPARATIONS["cfcd"])
    assert ExtractionSettings(preparation="lanczos").preparation == "lanczos"
    assert build_parser(["extract"]).parse_args(["extract", "x", "-o", "y", "--preparation", "lanczos"]).preparation == "lanczos"
    monkeypatch.delitem(images.PREPARATIONS, "official")
    with pytest.raises(ConfigError, match="preparation 'official': choose one of cfcd, lanczos"):
        ExtractionSettings(preparation="official")


def test_one_scale_parser_for_options_and_candidates():
    from cfcd.selection import Candidate

    assert parse_scales("0.7071,1,1.4142") == (0.7071, 1.0, 1.4142)
    for bad, message in (("1,x", "expected comma-separated numbers"), ("", "expected comma-separated numbers"),
                         ("1,", "expected comma-separated numbers"), ("1..2", "expected comma-separated numbers"),
                         ("0.5,0", "scales must be positive")):
        with pytest.raises(ConfigError, match=message):
            parse_scales(bad)
    for bad, message in (("1,", "expected comma-separated numbers"), ("1..2", "expected comma-separated numbers"),
                         ("0.5,0", "scales must be positive")):
        with pytest.raises(ConfigError, match=f"candidate 'm:{bad}': scales .*{message}"):
            Candidate.parse(f"m:{bad}")
