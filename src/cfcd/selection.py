"""Choosing a model and its extraction settings without overfitting the set they are chosen on.

Protocol (leave-one-source-out over a folder-per-identity set with sources, e.g. instances-dev):
every candidate (models, long side, scales) is scored leave-one-out on the whole set
(``cfcd.evaluate.run`` on the folder benchmark, ``cfcd.evaluate.benchmarks.folder``). For each held-out source group G, the
candidate with the best score on the *other* groups is chosen, and its score on G is reported:
the number a user would see on photos of a kind the choice never saw. Scores on a set of groups
are the mean of the per-group mAPs (each group counts once, however many photos it has), ties
going to the candidate listed first (list cheaper ones first).

Source groups merge sources that are the same kind of photo (the two PhotoTourism samples, the
UKBench and Holidays samples, the two OpenSfM streets), so that holding one out does not leave
its twin in the tuning set. The hard groups, reported separately, are the ones where candidates
differ: extreme viewpoints (EVD), Internet photos (PhotoTourism) and UKBench/Holidays objects.

Descriptors of a multi-scale candidate are the L2-normalised sum of its single-scale
descriptors (spec section 6), so only single-scale descriptors are extracted, once per (model,
long side, scale), and cached on disk (``DescriptorCache``); a candidate of several models
concatenates their L2-normalised descriptors (equal weight) and normalises the result.
"""

from __future__ import annotations

import hashlib
import json
import re
import time
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Mapping, Sequence

import numpy as np

from .data.instances import SOURCE_GROUPS, group_of  # noqa: F401 (cfcd.selection's names too)
from .errors import ConfigError, InputError, MismatchError
from .evaluate.benchmarks.folder import FolderBenchmark, InstanceResult
from .settings import DEFAULT_MAX_WORKING_SIDE, ExtractionSettings, cache_root, parse_scales

HARD_GROUPS = ("evd", "phototourism", "ukbench/holidays")
METRICS = ("mAP", "R@1")
# Bump when the way single-scale descriptors are made changes, so stale caches are not reused
# (2: JPEGs decoded reduced only down to twice the largest view, issue 29).
CACHE_VERSION = 2


# candidates ------------------------------------------------------------------------------------

@dataclass(frozen=True)
class Candidate:
    """One configuration: model names (a concatenation when several: descriptors side by side)
    and the ``ExtractionSettings`` they are extracted with (an unset preparation: each model's
    own). Written ``MODEL[+MODEL][@MAX_SIDE][:S1,S2,...][~PREPARATION]``; unwritten, the long
    side is the original size and the scale 1."""

    models: tuple[str, ...]
    settings: ExtractionSettings = ExtractionSettings(scales=(1.0,), max_side=None)

    @classmethod
    def parse(cls, spec: str, default_scales: Sequence[float] = (1.0,)) -> "Candidate":
        m = re.fullmatch(r"([^@:~]+)(?:@(\d+|orig))?(?::([\d.,]+))?(?:~(\w+))?", spec.strip())
        if not m:
            raise ConfigError(f"candidate {spec!r}: expected MODEL[+MODEL][@MAX_SIDE][:S1,S2,...][~PREPARATION], "
                              "e.g. mobilenet_v2-imagenet@512:0.7071,1,1.4142~official")
        models, side, scales, preparation = m.groups()
        scales = parse_scales(scales, f"candidate {spec!r}: scales") if scales else tuple(default_scales)
        try:
            settings = ExtractionSettings(scales, None if side in (None, "orig") else int(side), preparation=preparation)
        except ValueError as err:
            raise ConfigError(f"candidate {spec!r}: {err}") from None
        from .model.pretrained import members

        names = tuple(m for part in models.split("+") for m in members(part))  # "default" is a concatenation
        return cls(names, settings)

    @property
    def name(self) -> str:
        s = self.settings
        side = "orig" if s.max_side is None else str(s.max_side)
        prep = f"~{s.preparation}" if s.preparation else ""
        return f"{'+'.join(self.models)}@{side}:{','.join(f'{x:g}' for x in s.scales)}{prep}"


# the protocol ----------------------------------------------------------------------------------

@dataclass(frozen=True)
class Fold:
    """One held-out group: the candidate chosen on the others and what it scores on the group."""

    group: str
    chosen: str
    held_out: dict  # {"mAP", "R@1", "queries"} of ``chosen`` on the group
    best: str  # the candidate that would have been best on the group itself (hindsight)
    best_held_out: dict


@dataclass
class Selection:
    """The protocol's outcome; ``chosen`` is the candidate chosen on all groups together."""

    candidates: list[str]
    groups: list[str]
    scores: dict[str, dict[str, dict]]  # candidate -> group -> summary
    folds: list[Fold]
    chosen: str
    held_out: dict  # every query scored by the candidate chosen without its group
    metric: str = "mAP"
    hard: tuple[str, ...] = field(default=HARD_GROUPS)
    eligible: list[str] = field(default_factory=list)  # those the choice is made among (e.g. fast enough)

    def macro(self, candidate: str, groups: Sequence[str], metric: str | None = None) -> float:
        return float(np.mean([self.scores[candidate][g][metric or self.metric] for g in groups]))

    def to_dict(self) -> dict:
        return {
            "metric": self.metric,
            "chosen": self.chosen,
            "eligible": self.eligible,
            "held_out": self.held_out,
            "folds": [f.__dict__ for f in self.folds],
            "scores": self.scores,
        }


def _group_masks(sources: Sequence[str], groups: Mapping[str, str]) -> dict[str, np.ndarray]:
    names = np.array([group_of(s, groups) for s in sources])
    return {g: names == g for g in dict.fromkeys(names)}


def _summary(aps: np.ndarray, recall1: np.ndarray) -> dict:
    keep = ~np.isnan(aps)
    if not keep.any():
        return {"mAP": float("nan"), "R@1": float("nan"), "queries": 0}
    return {"mAP": float(aps[keep].mean()), "R@1": float(recall1[keep].mean()), "queries": int(keep.sum())}


def leave_one_source_out(
    results: Mapping[str, InstanceResult],
    groups: Mapping[str, str] = SOURCE_GROUPS,
    metric: str = "mAP",
    hard: Sequence[str] = HARD_GROUPS,
    eligible: Sequence[str] | None = None,
) -> Selection:
    """Run the protocol on leave-one-out results of several candidates over the same images
    (``results`` in preference order: ties go to the earlier one). Only ``eligible`` ones
    (default: all) can be chosen; the others are scored for comparison."""
    if metric not in METRICS:
        raise ConfigError(f"metric {metric!r}: choose one of {METRICS}")
    names = list(results)
    eligible = names if eligible is None else [n for n in names if n in set(eligible)]
    if not eligible:
        raise ConfigError("no candidates to choose from")
    first = results[names[0]]
    masks = _group_masks(first.sources, groups)
    if len(masks) < 2:
        raise InputError("leave-one-source-out needs a set with at least two sources (manifest.csv column 'source')")
    for name in names[1:]:
        if list(results[name].sources) != list(first.sources):
            raise MismatchError(f"candidate {name}: scored on other images than {names[0]}")
    scores = {n: {g: results[n].summary(m) for g, m in masks.items()} for n in names}
    selection = Selection(names, list(masks), scores, [], "", {}, metric, tuple(g for g in hard if g in masks), eligible)

    def best(on: Sequence[str], among: Sequence[str] = eligible) -> str:
        values = [selection.macro(n, on) for n in among]
        return among[int(np.nanargmax(values))]  # first of equal maxima

    aps = np.full(len(first.aps), np.nan)
    recall1 = np.full(len(first.aps), np.nan)
    for g, mask in masks.items():
        chosen = best([o for o in masks if o != g])
        oracle = best([g], names)
        aps[mask], recall1[mask] = results[chosen].aps[mask], results[chosen].recall1[mask]
        selection.folds.append(Fold(g, chosen, scores[chosen][g], oracle, scores[oracle][g]))
    selection.chosen = best(list(masks))
    selection.held_out = {
        "pooled": _summary(aps, recall1),
        "groups": {f.group: f.held_out for f in selection.folds},
        "hard": {m: float(np.mean([f.held_out[m] for f in selection.folds if f.group in selection.hard])) for m in METRICS}
        if selection.hard else None,
    }
    return selection


def format_selection(selection: Selection, seconds_per_image: Mapping[str, float] | None = None) -> str:
    """Two markdown tables in percent: every candidate (pooled over queries, mean over groups,
    the hard groups, then each group), and the leave-one-source-out folds."""
    hard = list(selection.hard)
    others = [g for g in selection.groups if g not in hard]
    speed = seconds_per_image or {}
    head = ["candidate", "img/s", "pooled mAP", "pooled R@1", "groups mAP", "hard mAP", "hard R@1", *hard, *others]
    lines = ["| " + " | ".join(head) + " |", "|" + "---|" + "---:|" * (len(head) - 1)]
    for n in selection.candidates:
        pooled = _pooled(selection, n)
        hard_r1 = selection.macro(n, hard, "R@1") if hard else float("nan")
        cells = [f"{1 / speed[n]:.2f}" if n in speed else "-", f"{100 * pooled['mAP']:.2f}", f"{100 * pooled['R@1']:.2f}",
                 f"{100 * selection.macro(n, selection.groups):.2f}",
                 f"{100 * selection.macro(n, hard):.2f}" if hard else "-", f"{100 * hard_r1:.2f}" if hard else "-",
                 *(f"{100 * selection.scores[n][g]['mAP']:.2f}" for g in hard + others)]
        mark = " **(chosen)**" if n == selection.chosen else "" if n in selection.eligible else " (not eligible)"
        lines.append(f"| `{n}`{mark} | " + " | ".join(cells) + " |")
    lines += ["", "| held-out group | chosen on the other groups | its mAP | its R@1 | best on the group (hindsight) | its mAP |",
              "|---|---|---:|---:|---|---:|"]
    for f in selection.folds:
        lines.append(f"| {f.group}{' (hard)' if f.group in hard else ''} | `{f.chosen}` | {100 * f.held_out['mAP']:.2f} | "
                     f"{100 * f.held_out['R@1']:.2f} | `{f.best}` | {100 * f.best_held_out['mAP']:.2f} |")
    h = selection.held_out
    lines += ["", f"Held-out score of the protocol (each query scored by the candidate chosen without its group): "
              f"pooled mAP {100 * h['pooled']['mAP']:.2f}, R@1 {100 * h['pooled']['R@1']:.2f} ({h['pooled']['queries']} queries)"
              + (f"; mean over the hard groups mAP {100 * h['hard']['mAP']:.2f}, R@1 {100 * h['hard']['R@1']:.2f}" if h["hard"] else "")
              + ".", f"Chosen on all groups: `{selection.chosen}`."]
    return "\n".join(lines)


def _pooled(selection: Selection, name: str) -> dict:
    """Query-weighted mean over all groups (the classic pooled number)."""
    s = selection.scores[name].values()
    n = sum(v["queries"] for v in s)
    return {m: sum(v[m] * v["queries"] for v in s if v["queries"]) / max(n, 1) for m in METRICS}


# descriptors, cached per (model, long side, scale) -----------------------------------------------

def default_cache_dir() -> Path:
    return cache_root() / "descriptors"


def _model_key(name: str) -> str:
    """Named models by name; files by path, size and modification time (retrained = new key)."""
    if name == "default":
        from .model.pretrained import DEFAULT_MODEL

        name = DEFAULT_MODEL
    path = Path(name).expanduser()
    if path.is_file():
        st = path.stat()
        name = f"{path.resolve()}:{st.st_size}:{st.st_mtime_ns}"
    return hashlib.sha256(name.encode()).hexdigest()[:16]


class DescriptorCache:
    """Single-scale descriptors of one image list, per (model, long side, scale, preparation),
    on disk.

    ``root/<model key>/<images key>/<side>-<scale>[-<preparation>][-w<cap>].npy`` (no preparation:
    the model's own; no cap: the default working-size cap) with a JSON sidecar holding the model
    name, the settings and the seconds per image the extraction took (for speed estimates). Each scale is extracted alone, so the
    working-size cap (``ExtractionSettings.max_working_side``) bounds each scale by itself: sums
    equal multi-scale descriptors for images whose largest scale is within the cap (any image
    up to 1448 px at the CFCD scales).
    """

    def __init__(self, paths: Sequence[str | Path], root: str | Path | None = None, progress: bool = True):
        self.paths = [str(Path(p).resolve()) for p in paths]
        self.root = Path(root) if root is not None else default_cache_dir()
        self.images_key = hashlib.sha256("\n".join([str(CACHE_VERSION), *self.paths]).encode()).hexdigest()[:16]
        self.progress = progress
        self._models: dict[str, object] = {}

    def _file(self, model: str, settings: ExtractionSettings) -> Path:
        side = "orig" if settings.max_side is None else str(settings.max_side)
        prep = f"-{settings.preparation}" if settings.preparation else ""
        cap = "" if settings.max_working_side == DEFAULT_MAX_WORKING_SIDE else f"-w{settings.max_working_side}"
        return self.root / _model_key(model) / self.images_key / f"{side}-{settings.scales[0]:g}{prep}{cap}.npy"

    def _model(self, name: str):
        if name not in self._models:
            from .model import load_model

            self._models = {name: load_model(name)}  # one model in memory at a time
        return self._models[name]

    def single_scale(self, model: str, settings: ExtractionSettings) -> tuple[np.ndarray, float]:
        """(descriptors (n, d), seconds per image) of one scale (``settings`` holds one), extracting
        them on the first call."""
        if len(settings.scales) != 1:
            raise ValueError(f"single_scale takes one scale; got {settings.scales}")
        path = self._file(model, settings)
        meta = path.with_suffix(".json")
        if path.is_file() and meta.is_file():
            return np.load(path), json.loads(meta.read_text())["seconds_per_image"]
        from .atomic import atomic_write
        from .extraction import extract
        from .settings import Runtime

        net = self._model(model)
        start = time.perf_counter()
        desc = extract(net, self.paths, settings, Runtime(progress=self.progress))
        seconds = (time.perf_counter() - start) / max(len(self.paths), 1)
        path.parent.mkdir(parents=True, exist_ok=True)
        with atomic_write(path) as f:
            np.save(f, desc)
        with atomic_write(meta, "w") as f:
            json.dump({"model": model, "max_side": settings.max_side, "scale": settings.scales[0],
                       "preparation": settings.preparation, "images": len(self.paths), "seconds_per_image": seconds}, f)
        return desc, seconds

    def descriptors(self, candidate: Candidate) -> tuple[np.ndarray, float]:
        """(descriptors (n, d), estimated seconds per image: the sum over its single scales)."""
        parts, seconds = [], 0.0
        for model in candidate.models:
            acc = None
            for s in candidate.settings.scales:
                d, t = self.single_scale(model, replace(candidate.settings, scales=(s,)))
                acc = d.astype(np.float64) if acc is None else acc + d
                seconds += t
            parts.append(_l2(acc))
        return _l2(np.concatenate(parts, axis=1)).astype(np.float32), seconds


def _l2(x: np.ndarray) -> np.ndarray:
    return x / np.maximum(np.linalg.norm(x, axis=1, keepdims=True), 1e-12)


def run_selection(
    benchmark: FolderBenchmark,
    candidates: Sequence[Candidate],
    cache: DescriptorCache | None = None,
    groups: Mapping[str, str] = SOURCE_GROUPS,
    metric: str = "mAP",
    eligible: Sequence[str] | None = None,
) -> tuple[Selection, dict[str, float]]:
    """Score ``candidates`` on a folder benchmark (``cfcd.evaluate.open_benchmark("folder", root)``,
    leave-one-out) and run the protocol, choosing among the ``eligible`` names (default: all);
    also returns the estimated seconds per image of each candidate (from the cache's
    extraction times)."""
    from .evaluate import Descriptors, run

    cache = cache or DescriptorCache(benchmark.images)
    results, seconds = {}, {}
    for c in candidates:
        desc, seconds[c.name] = cache.descriptors(c)
        results[c.name] = run(Descriptors(desc), benchmark).result
    return leave_one_source_out(results, groups, metric, eligible=eligible), seconds


def select_on_shapes(roots: Sequence[str | Path], candidates: Sequence[Candidate], cache_dir: str | Path | None = None):
    """The shapes protocol (``cfcd.evaluate.shapes``) over the labelled sets at ``roots``: every
    candidate's descriptors (cached as ``DescriptorCache`` caches them) scored on collections of
    every shape, judged against the first candidate (the baseline). Returns the scores, the
    verdicts, the chosen candidate's name and the leave-one-set-out choices."""
    from .evaluate import shapes

    pool = shapes.load_pool(roots)
    cache = DescriptorCache(pool.paths, cache_dir)
    matrices = {c.name: cache.descriptors(c)[0] for c in candidates}
    scores = shapes.score(pool, {name: (lambda index, m=m: m[index]) for name, m in matrices.items()})
    baseline = candidates[0].name
    verdicts = shapes.judge(scores, baseline)
    held = shapes.leave_one_set_out(scores, baseline, pool.set_names) if len(pool.set_names) > 1 else {}
    return scores, verdicts, shapes.choose(verdicts, baseline), held
