"""Training recipes: YAML files mapped onto dataclasses, with ``key=value`` overrides.

A recipe names every setting of a two-stage run (model, data, losses, optimiser, the two
stages, run options). ``load_config(name_or_path, overrides)`` reads a packaged recipe by name
(``cfcd/configs/<name>.yaml``) or any YAML file, then applies overrides such as
``stage1.epochs=2`` or ``data.train=/data/gldv2/train_clean.csv``; values are parsed as YAML.
An unknown key, in the file or in an override, is an error that names it.
"""

from __future__ import annotations

import dataclasses
import logging
import typing
from dataclasses import dataclass, field
from importlib import resources
from pathlib import Path

import yaml

from ..errors import ConfigError
from ..model import ModelConfig

log = logging.getLogger(__name__)


@dataclass
class DataConfig:
    train: str = ""  # GLDv2 train_clean.csv, a list file of `path label` lines, or a folder per class
    root: str = ""  # where image paths start; "" = the csv/list file's folder (or the folder itself)
    drop_landmarks: list = field(default_factory=list)  # class ids to leave out, or files listing them
    val_fraction: float = 0.0  # images held out per class (classes with >= 3 images) for validation
    # Identities (classes) held back whole from training, so that the starting and the trained
    # model are scored leave-one-out on identities training never saw, and the better one is kept
    # as <out_dir>/best.pt (cfcd.train.guard). 0 turns it off (the GLDv2 recipes: 81k classes).
    holdout_fraction: float = 0.2
    image_size: int = 512  # side of the square training crop
    # Fraction of the photo's area each random training crop covers, drawn uniformly (ImageNet's
    # 0.08..1: the GLDv2 recipes).
    crop_area: list = field(default_factory=lambda: [0.08, 1.0])
    # Probability of a night-like exposure change of a training crop (cfcd.train.transforms.exposure_change).
    exposure: float = 0.0
    num_workers: int = 4


@dataclass
class OptimConfig:
    momentum: float = 0.9
    nesterov: bool = True
    weight_decay: float = 1e-4
    warmup_factor: float = 0.1  # warm-up starts at this fraction of the base LR
    # batch: BatchNorm normalises with each process's batch statistics and updates its running
    # statistics (the paper); frozen: BatchNorm layers stay in eval mode (running statistics,
    # affine parameters still trained), as cirtorch fine-tunes; then N processes compute exactly
    # what one process computes on the whole batch.
    batchnorm: str = "batch"


@dataclass
class StageConfig:
    """One stage = a sampler, a classifier head and weighted loss terms, plus its schedule."""

    epochs: int = 50
    warmup_epochs: int = 0
    base_lr: float = 0.005
    batch_size: int = 128  # global: the same whatever the number of processes
    init: str = ""  # stage 1: ImageNet weights (name or path); stage 2: "" = this run's stage-1 model
    # A sampler of cfcd.train.registry.SAMPLERS: shuffle | tuples (hard-negative tuples from the
    # table); its parameters in sampler.<name> (e.g. sampler.tuples.tuple_size).
    sampler: str = "shuffle"
    head: str = "madacos"  # a classifier head of cfcd.losses.registry.HEADS; parameters in loss.<head>
    # Loss terms of cfcd.losses.registry.TERMS and their weights; parameters in loss.<term>.
    terms: dict = field(default_factory=lambda: {"cross_entropy": 1.0})
    # The backbone's learning rate as a fraction of base_lr (head and classifier: base_lr);
    # 0 freezes the backbone (no gradients; with optim.batchnorm=frozen nothing in it changes).
    backbone_lr: float = 1.0


@dataclass
class Stage1Config(StageConfig):
    # How a freshly created projection head (fc + BatchNorm1d) starts. random: PyTorch's default
    # init; pca: fc = the top-`model.dim` principal directions of the training images' GeM
    # vectors (centred), BatchNorm at identity; whiten: PCA-whitening of the training photos'
    # multi-scale and regional GeM vectors (cfcd.whiten.learn_head's defaults). Not used
    # when `init` supplies the head. Stage 2 has no such setting: it always continues stage 1's head.
    head_init: str = "random"
    # How the classifier starts: random (the head's init) or means (each class's row = the
    # normalised mean descriptor of its training photos, after head_init). Not used on resume.
    classifier_init: str = "random"


def _stage2() -> StageConfig:
    return StageConfig(sampler="tuples", terms={"cross_entropy": 1.0, "local_triplet": 1.0})


@dataclass
class RunConfig:
    out_dir: str = "runs/cfcd"
    seed: int = 0
    device: str = "auto"  # auto | cpu | cuda
    amp: str = "bf16"  # bf16 | fp16 | off (GPU only; CPU runs in float32)
    channels_last: bool = True  # GPU only
    checkpoint_every: int = 0  # also checkpoint every N steps (0: once per epoch)
    tensorboard: bool = False
    hem_batch_size: int = 64
    hem_table: str = ""  # "" = <out_dir>/hem.csv


@dataclass
class TrainConfig:
    model: ModelConfig = field(default_factory=ModelConfig)
    data: DataConfig = field(default_factory=DataConfig)
    # Parameters of heads and loss terms by registered name, e.g. {"madacos": {"alpha": 0.02}};
    # what is not given takes the constructor's default (cfcd.losses).
    loss: dict = field(default_factory=dict)
    # Parameters of batch samplers by registered name, e.g. {"tuples": {"tuple_size": 4}}.
    sampler: dict = field(default_factory=dict)
    optim: OptimConfig = field(default_factory=OptimConfig)
    stage1: Stage1Config = field(default_factory=lambda: Stage1Config(warmup_epochs=5))
    stage2: StageConfig = field(default_factory=_stage2)
    run: RunConfig = field(default_factory=RunConfig)

    def to_dict(self) -> dict:
        return dataclasses.asdict(self)

    @property
    def out_dir(self) -> Path:
        return Path(self.run.out_dir)

    @property
    def hem_table(self) -> Path:
        return Path(self.run.hem_table) if self.run.hem_table else self.out_dir / "hem.csv"


def _field_types(cls) -> dict[str, type]:
    hints = typing.get_type_hints(cls)
    return {f.name: hints[f.name] for f in dataclasses.fields(cls)}


def _coerce(value, kind, key: str):
    if dataclasses.is_dataclass(kind):
        if not isinstance(value, dict):
            raise ConfigError(f"{key}: expected a mapping of settings, got {value!r}")
        return _build(kind, value, key + ".")
    if kind is float and isinstance(value, int) and not isinstance(value, bool):
        return float(value)
    if kind is str and value is None:
        return ""
    if kind is str and isinstance(value, bool):
        return "on" if value else "off"  # YAML 1.1 reads a bare off/on as a boolean
    if kind is str and isinstance(value, (int, float)):
        return str(value)
    if kind is list and not isinstance(value, list):
        return [] if value in (None, "") else [value]
    origin = typing.get_origin(kind) or kind
    if isinstance(origin, type) and not isinstance(value, origin):
        raise ConfigError(f"{key}: expected {origin.__name__}, got {value!r}")
    return value


def _build(cls, data: dict, prefix: str = ""):
    types = _field_types(cls)
    unknown = sorted(set(data) - set(types))
    if unknown:
        raise ConfigError(f"unknown config key {prefix + unknown[0]!r}; known keys here: {', '.join(prefix + k for k in types)}")
    return cls(**{k: _coerce(v, types[k], prefix + k) for k, v in data.items()})


def _set(data: dict, dotted: str, value) -> None:
    node = data
    *parents, leaf = dotted.split(".")
    for part in parents:
        node = node.setdefault(part, {})
        if not isinstance(node, dict):
            raise ConfigError(f"override {dotted!r}: {part!r} is a value, not a section")
    node[leaf] = value


def parse_override(text: str) -> tuple[str, object]:
    """``"stage1.epochs=2"`` -> ``("stage1.epochs", 2)``; the value is read as YAML."""
    key, sep, value = text.partition("=")
    if not sep or not key:
        raise ConfigError(f"override {text!r} is not of the form key=value (e.g. stage1.epochs=2)")
    return key.strip(), yaml.safe_load(value) if value.strip() else ""


def _packaged_dir():
    return resources.files("cfcd") / "configs"


def recipe_path(name_or_path: str | Path) -> Path:
    """A packaged recipe name (``r50-gldv2``) or a YAML file path."""
    path = Path(name_or_path).expanduser()
    if path.is_file():
        return path
    packaged = _packaged_dir() / f"{name_or_path}.yaml"
    if packaged.is_file():
        return Path(str(packaged))
    raise ConfigError(f"{name_or_path}: neither a YAML file nor a packaged recipe ({', '.join(packaged_recipes())})")


def packaged_recipes() -> list[str]:
    return sorted(p.name[: -len(".yaml")] for p in _packaged_dir().iterdir() if p.name.endswith(".yaml"))


def load_config(name_or_path: str | Path | None = None, overrides: typing.Iterable[str] = ()) -> TrainConfig:
    """The recipe ``name_or_path`` (defaults only when None) with ``overrides`` applied."""
    data: dict = {}
    if name_or_path is not None:
        path = recipe_path(name_or_path)
        try:
            data = yaml.safe_load(path.read_text()) or {}
        except yaml.YAMLError as err:
            raise ConfigError(f"{path}: not valid YAML ({err})") from err
        if not isinstance(data, dict):
            raise ConfigError(f"{path}: a recipe is a mapping of sections, got {type(data).__name__}")
    data = _over_defaults(data)
    for text in overrides:
        _set(data, *parse_override(text))
    return train_config_from_dict(data)


def _over_defaults(data: dict) -> dict:
    """The defaults with a recipe's sections laid over them key by key; a mapping-valued setting
    (``stageN.terms``, a ``loss.<name>`` entry) in the recipe replaces the default whole, so that
    overrides then add to or change what the recipe (or the default) says."""
    merged = TrainConfig().to_dict()
    for section, values in data.items():
        if isinstance(merged.get(section), dict) and isinstance(values, dict) and section not in ("loss", "sampler"):
            merged[section] = {**merged[section], **values}
        else:
            merged[section] = values
    return merged


def train_config_from_dict(data: dict) -> TrainConfig:
    """A ``TrainConfig`` from a recipe's sections (defaults included), its losses and samplers checked."""
    cfg = _build(TrainConfig, _moved_keys(data))
    _check_losses(cfg)
    _check_samplers(cfg)
    return cfg


def _moved_keys(data: dict) -> dict:
    """Recipes written before samplers took parameters said ``stageN.tuple_size``: read it as
    ``sampler.tuples.tuple_size`` (a parameter of the sampler, not of the stage)."""
    data = dict(data)
    for key in ("stage1", "stage2"):
        stage = data.get(key)
        if isinstance(stage, dict) and "tuple_size" in stage:
            data[key] = {k: v for k, v in stage.items() if k != "tuple_size"}
            sampler = dict(data.get("sampler") or {})
            tuples = dict(sampler.get("tuples") or {})
            if tuples.get("tuple_size", stage["tuple_size"]) != stage["tuple_size"]:
                raise ConfigError(f"{key}.tuple_size = {stage['tuple_size']} and sampler.tuples.tuple_size = "
                                  f"{tuples['tuple_size']}; give only sampler.tuples.tuple_size")
            tuples["tuple_size"] = stage["tuple_size"]
            data["sampler"] = {**sampler, "tuples": tuples}
            log.warning("%s.tuple_size is now sampler.tuples.tuple_size; read as that", key)
    return data


def _check_samplers(cfg: TrainConfig) -> None:
    """Every sampler named exists and every ``sampler.<name>`` parameter is one it takes."""
    from .registry import SAMPLERS

    for key in ("stage1", "stage2"):
        name = getattr(cfg, key).sampler
        if name not in SAMPLERS:
            raise ConfigError(f"{key}.sampler: unknown sampler {name!r}; choose one of {SAMPLERS.choices()}")
    for name, params in cfg.sampler.items():
        if name not in SAMPLERS:
            raise ConfigError(f"sampler.{name}: not a registered sampler ({SAMPLERS.choices()})")
        if not isinstance(params, dict):
            raise ConfigError(f"sampler.{name}: expected a mapping of parameters, got {params!r}")
        try:
            SAMPLERS.check_params(name, params, skip=1, where=f"sampler.{name}")
        except ValueError as err:
            raise ConfigError(str(err)) from None


def sampler_params(cfg: TrainConfig, stage: str) -> dict:
    """The parameters stage ``stage``'s sampler runs with: its defaults under ``sampler.<name>``."""
    from .registry import SAMPLERS

    name = getattr(cfg, stage).sampler
    return {**SAMPLERS.parameters(name, skip=1), **cfg.sampler.get(name, {})}


def _check_losses(cfg: TrainConfig) -> None:
    """Every head and term named exists and every ``loss.<name>`` parameter is one it takes."""
    from ..losses import registry

    for key in ("stage1", "stage2"):
        stage = getattr(cfg, key)
        try:
            registry.parameters("head", stage.head)
            for name, weight in stage.terms.items():
                registry.parameters("term", name)
                if isinstance(weight, bool) or not isinstance(weight, (int, float)):
                    raise ValueError(f"weight of {name} must be a number, got {weight!r}")
        except ValueError as err:
            raise ConfigError(f"{key}: {err}") from None
        if not stage.terms:
            raise ConfigError(f"{key}.terms: a stage needs at least one loss term, e.g. {{cross_entropy: 1.0}}")
    for name, params in cfg.loss.items():
        kind = "head" if name in registry.HEADS else "term" if name in registry.TERMS else None
        if kind is None:
            raise ConfigError(f"loss.{name}: not a registered head or loss term "
                              f"({', '.join(sorted({**registry.HEADS, **registry.TERMS}))})")
        if not isinstance(params, dict):
            raise ConfigError(f"loss.{name}: expected a mapping of parameters, got {params!r}")
        try:
            registry.check_params(kind, name, params)
        except ValueError as err:
            raise ConfigError(str(err)) from None
