"""What a descriptor depends on besides the weights, and how an extraction runs.

``ExtractionSettings`` (scales, long side, working-size cap, image preparation) is stored with
every result: features manifests and indexes hold it, and descriptors made with other settings
are refused. ``Runtime`` (device, batch size, workers, ...) changes speed and memory, never the
descriptors, and is not stored. ``resolve`` is the one place where stored settings, explicit
overrides and the defaults below meet; every command and API goes through it.

This module imports neither torch nor PIL (``preparation_names`` loads Pillow when first asked),
so command-line parsers can use it cheaply.
"""

from __future__ import annotations

import os
from dataclasses import asdict, dataclass, fields, replace
from typing import Mapping

from .errors import ConfigError


def cache_root():
    """Where cfcd keeps what it can make again (descriptor caches, exported graphs):
    ``$CFCD_CACHE``, else ``$XDG_CACHE_HOME/cfcd`` (default ``~/.cache/cfcd``)."""
    from pathlib import Path

    return Path(os.environ.get("CFCD_CACHE") or os.path.join(os.environ.get("XDG_CACHE_HOME", Path.home() / ".cache"), "cfcd"))

# The five scales of the CFCD paper's multi-scale testing (spec section 6).
CFCD_SCALES = (0.3535, 0.5, 0.7071, 1.0, 1.4142)
# The defaults, chosen with the default model by the leave-one-source-out protocol among long
# sides 384-640 and one to three scales at >= 2 images/s (docs/results.md, "Model selection"):
# the image resized to a 384 px long side, at scales 0.7071 and 1, so the network sees at most
# 384 px whatever the photo's size.
DEFAULT_SCALES = (0.7071, 1.0)
DEFAULT_MAX_SIDE = 384
# The long side of the largest image the network sees, at any scale: bounds time and memory
# per image whatever its size (a 24 Mpx photo is not fed at 1.41 times its size). Revisited
# Oxford/Paris images are <= 1024 px, so at the largest CFCD scale (1448 px) they are never
# capped (1464 >= 1024 x 1.4142). Measured in bench/working_size.py (docs/results.md): at 2048 one
# 6300 x 6300 query peaked near 2 GiB on the default model, at 1448 at 1.38 GiB.
DEFAULT_MAX_WORKING_SIDE = 1464
# What every result stored before the preparation was recorded was made with.
LEGACY_PREPARATION = "cfcd"
# What a result stored without these keys was made with (the defaults of the time).
LEGACY_SETTINGS = {"scales": CFCD_SCALES, "max_side": None, "preparation": LEGACY_PREPARATION}


@dataclass(frozen=True)
class ExtractionSettings:
    """What determines a descriptor besides the weights; stored with every result.

    For an image of long side L and a scale s, the network sees the image resized by
    f * s, where f = max_side / L when ``max_side`` is set (else 1), lowered further when
    needed so that f * max(scales) * L <= ``max_working_side``. ``preparation`` None means
    the model's own (``ModelConfig.preparation``). The defaults are the protocol's choice;
    ``PAPER_SETTINGS`` are the CFCD paper's (``default_settings`` says which a model gets).
    """

    scales: tuple[float, ...] = DEFAULT_SCALES
    max_side: int | None = DEFAULT_MAX_SIDE
    max_working_side: int = DEFAULT_MAX_WORKING_SIDE
    preparation: str | None = None

    def __post_init__(self):
        try:
            scales = tuple(float(s) for s in self.scales)
        except (TypeError, ValueError):
            raise ConfigError(f"scales {self.scales!r}: expected a sequence of numbers such as (0.7071, 1, 1.4142)") from None
        if not scales or min(scales) <= 0:
            raise ConfigError(f"scales {self.scales!r}: give at least one scale, all positive")
        object.__setattr__(self, "scales", scales)
        object.__setattr__(self, "max_side", _positive_or_none("max_side", self.max_side))
        cap = _positive_or_none("max_working_side", self.max_working_side)
        if cap is None:
            raise ConfigError("max_working_side: a positive number of pixels is required (it bounds memory per image)")
        object.__setattr__(self, "max_working_side", cap)
        if self.preparation is not None and self.preparation not in preparation_names():
            raise ConfigError(f"preparation {self.preparation!r}: choose one of {', '.join(preparation_names())}")

    def to_dict(self) -> dict:
        d = asdict(self)
        d["scales"] = list(self.scales)
        return d

    @classmethod
    def from_dict(cls, stored: Mapping) -> "ExtractionSettings":
        """Settings stored in a manifest or an index (other keys are ignored). A key absent
        from an older file takes the value it was made with (``LEGACY_SETTINGS``: the five
        CFCD scales, no long-side resize, the ``cfcd`` preparation); the working-size cap,
        which did not exist, takes today's default."""
        known = {f.name for f in fields(cls)}
        given = {**LEGACY_SETTINGS, **{k: v for k, v in stored.items() if k in known}}
        if given.get("max_working_side") is None:
            given.pop("max_working_side", None)
        if given["preparation"] is None:
            given["preparation"] = LEGACY_PREPARATION
        return cls(**given)

    def for_model(self, model) -> "ExtractionSettings":
        """These settings with the preparation filled in from ``model`` when not set."""
        return self if self.preparation else replace(self, preparation=model_preparation(model))


def preparation_names() -> tuple[str, ...]:
    """The image preparations, as ``cfcd.data.images.PREPARATIONS`` implements them: ``cfcd``
    resizes 8-bit pixels with Pillow's antialiased bilinear filter; ``official`` reproduces the
    official CFCD extractor (float32 pixels, OpenCV's bilinear filter without antialiasing, crop
    boxes truncated with int(), no minimum side). Imports Pillow and numpy on first use."""
    from .data.images import PREPARATIONS

    return tuple(PREPARATIONS)


def model_preparation(model) -> str:
    """The preparation a model (a module with ``config``, or a stored model description
    ``{name, config, dim}``) was made for."""
    if isinstance(model, Mapping):
        config = model.get("config") or {}
        return config.get("preparation") or LEGACY_PREPARATION
    return getattr(getattr(model, "config", None), "preparation", None) or LEGACY_PREPARATION


def parse_scales(text: str, name: str = "--scales") -> tuple[float, ...]:
    """``"0.7071,1,1.4142"`` -> ``(0.7071, 1.0, 1.4142)``: the one way scales are written as text
    (command-line options, model-selection candidates); ``name`` says where, in the error."""
    try:
        scales = tuple(float(s) for s in text.split(","))
    except ValueError:
        raise ConfigError(f"{name} {text!r}: expected comma-separated numbers such as 0.7071,1,1.4142") from None
    if min(scales) <= 0:
        raise ConfigError(f"{name} {text!r}: scales must be positive")
    return scales


def _positive_or_none(name: str, value) -> int | None:
    if value is None or value == 0:
        return None
    if isinstance(value, bool) or not isinstance(value, (int, float)) or value < 0 or int(value) != value:
        raise ConfigError(f"{name} {value!r}: expected a positive whole number of pixels (0 or None: none)")
    return int(value)


# The CFCD paper's multi-scale testing: five scales of the image at its own size (Revisited
# Oxford/Paris protocol; official CFCD checkpoints default to it).
PAPER_SETTINGS = ExtractionSettings(scales=CFCD_SCALES, max_side=None)
# Command-line and API name of each preset.
PRESETS = {"default": ExtractionSettings(), "paper": PAPER_SETTINGS}
# The reference settings of ../shared/data/instances-dev (long side 512, three scales): with
# the ImageNet MobileNetV2 they give mAP 85.79 on its 241 rows (tests/test_eval_cli.py).
REFERENCE_SETTINGS = ExtractionSettings(scales=(0.7071, 1.0, 1.4142), max_side=512)
# What a projection head is learned from unlabelled photos with (``cfcd whiten``, the ``whiten``
# head initialisation of training): the settings it was measured with (bench/unsupervised_head.py,
# docs/results.md); three scales multiply the sample of GeM vectors.
WHITENING_SETTINGS = REFERENCE_SETTINGS


def default_settings(model=None) -> ExtractionSettings:
    """The settings ``model`` is used with when none are given: the paper's for models made
    for the official preparation (official CFCD checkpoints, whose descriptors then equal the
    official extractor's), else the protocol's choice (``ExtractionSettings()``)."""
    if model is None:
        return ExtractionSettings()
    preparation = model_preparation(model)
    base = PAPER_SETTINGS if preparation == "official" else ExtractionSettings()
    return replace(base, preparation=preparation)


def resolve(stored=None, overrides=None, model=None) -> ExtractionSettings:
    """The settings to extract with.

    ``stored``: the settings an index or a features directory holds (a dict as stored, or
    ``ExtractionSettings``), or None. ``overrides``: an ``ExtractionSettings`` (taken whole),
    or a mapping whose None values mean "not given" (command-line options; ``preset`` names
    one of ``PRESETS`` to start from instead). Overrides win over stored settings, which win
    over ``default_settings(model)``; a preparation left open is the stored one, else the
    ``model``'s.
    """
    if isinstance(stored, Mapping):
        stored = ExtractionSettings.from_dict(stored)
    if isinstance(overrides, ExtractionSettings):
        settings = overrides
        if settings.preparation is None and stored is not None:
            settings = replace(settings, preparation=stored.preparation)
    else:
        given = {k: v for k, v in (overrides or {}).items() if v is not None}
        preset = given.pop("preset", None)
        unknown = sorted(set(given) - {f.name for f in fields(ExtractionSettings)})
        if unknown:
            raise ConfigError(f"unknown extraction settings {unknown}")
        if preset is not None:
            if preset not in PRESETS:
                raise ConfigError(f"settings preset {preset!r}: choose one of {', '.join(PRESETS)}")
            stored = replace(PRESETS[preset], preparation=stored.preparation if stored else None)
        settings = replace(stored or default_settings(model), **given)
    return settings.for_model(model) if model is not None else settings


# What can run the network (``Runtime.engine``, ``--runtime``).
ENGINES = ("auto", "torch", "onnx")


@dataclass(frozen=True)
class Runtime:
    """How an extraction runs; none of it changes the descriptors.

    ``batch_size``: images decoded and run together (their scaled copies of equal size go
    through the network in one pass, at most ``max_batch_pixels`` pixels per pass); default 1
    on a CPU, 16 on a GPU. ``num_workers``: decoding processes; default 0 on a CPU, up to 8 on
    a GPU (measured in bench/extract_speed.py). ``decode_threads``: threads that decode and
    resize the next images while the network runs, when there are no decoding processes; None:
    ``cfcd.data.prefetch.decode_threads()`` on a CPU (1 on 2 to 7 cores), 0 on a GPU; 0: decode
    in turn with the network. ``image_threads``: on a CPU with the onnxruntime graph, how many
    images are decoded and run through the network at once, each by its own thread (the graph's
    threads shared among them); None: ``cfcd.data.prefetch.image_threads()`` (min(cores, 4)) when
    one image at a time is asked (batch 1, no decoding processes); 1: one image at a time on
    every core, decoded beside it by ``decode_threads``. ``max_pixels``: the decoding limit (None:
    ``cfcd.data.decoding.DEFAULT_MAX_PIXELS``). ``engine``: what runs the network, one of
    ``ENGINES`` (``cfcd.extraction.network``); None: ``$CFCD_RUNTIME``, else ``auto`` (onnxruntime
    on a CPU when it is installed, PyTorch otherwise).
    """

    device: str | None = None
    batch_size: int | None = None
    num_workers: int | None = None
    decode_threads: int | None = None
    image_threads: int | None = None
    amp: bool = False
    progress: bool = True
    max_batch_pixels: int = 16 * 1024 * 1024
    max_pixels: int | None = None
    engine: str | None = None

    def __post_init__(self):
        if self.engine is not None and self.engine not in ENGINES:
            raise ConfigError(f"runtime {self.engine!r}: choose one of {', '.join(ENGINES)}")
        for name, least in (("batch_size", 1), ("num_workers", 0), ("decode_threads", 0), ("image_threads", 1)):
            value = getattr(self, name)
            if value is not None and (not isinstance(value, int) or value < least):
                raise ConfigError(f"{name} {value!r}: expected a whole number >= {least}")

    def chosen_engine(self) -> str:
        """``engine``, else ``$CFCD_RUNTIME``, else ``auto``: read when an extraction starts."""
        if self.engine is not None:
            return self.engine
        engine = os.environ.get("CFCD_RUNTIME") or "auto"
        if engine not in ENGINES:
            raise ConfigError(f"runtime {engine!r} (from $CFCD_RUNTIME): choose one of {', '.join(ENGINES)}")
        return engine
