"""Training images and their classes.

Three sources, told apart by what ``DataConfig.train`` points at:
- a GLDv2 ``train_clean.csv`` (``landmark_id,images``; images space-separated ids stored at
  ``<root>/train/a/b/c/abc....jpg``; root defaults to the csv's folder);
- a list file of ``path label`` lines (paths relative to root, default the list's folder);
- a folder with one sub-folder of images per class (the class is the sub-folder name).
Class labels are kept as strings and remapped to 0..K-1 in sorted order (numerically when all
are integers); ``Samples.classes[k]`` is the original label of class k and is saved in every
checkpoint as ``class_map``.

Unreadable images never stop an epoch: ``TrainDataset`` records the file, counts it and
substitutes the next readable image of the same class, so that every batch keeps its size
(all processes must gather equal shapes for MadaCos) and a tuple keeps its structure.
"""

from __future__ import annotations

import csv
import logging
import random
from dataclasses import dataclass
from pathlib import Path
from typing import Callable, Sequence

import torch
from torch.utils.data import Dataset

from ..data.decoding import ImageError, load_image
from ..data.images import IMAGE_SUFFIXES
from ..errors import ConfigError, InputError, NotFound
from .config import DataConfig

log = logging.getLogger(__name__)


@dataclass
class Samples:
    """Images with class ids 0..K-1; ``classes[k]`` is the original label of class k."""

    paths: list[str]
    labels: list[int]
    classes: list[str]

    def __len__(self) -> int:
        return len(self.paths)

    @property
    def num_classes(self) -> int:
        return len(self.classes)

    def subset(self, indices: Sequence[int]) -> "Samples":
        return Samples([self.paths[i] for i in indices], [self.labels[i] for i in indices], self.classes)


def gldv2_path(root: Path, image_id: str) -> Path:
    """GLDv2 storage layout: ``train/<c0>/<c1>/<c2>/<id>.jpg``."""
    return root / "train" / image_id[0] / image_id[1] / image_id[2] / f"{image_id}.jpg"


def read_gldv2_csv(path: Path, root: Path) -> list[tuple[str, str]]:
    out = []
    with open(path, newline="") as f:
        reader = csv.reader(f)
        header = next(reader, None)
        if header is None or [h.strip() for h in header[:2]] != ["landmark_id", "images"]:
            raise InputError(f"{path}: expected a GLDv2 train_clean.csv with header 'landmark_id,images', got {header}")
        for line, row in enumerate(reader, start=2):
            if len(row) < 2:
                raise InputError(f"{path}:{line}: expected 'landmark_id,images', got {row}")
            out.extend((str(gldv2_path(root, i)), row[0].strip()) for i in row[1].split())
    return out


def read_list_file(path: Path, root: Path) -> list[tuple[str, str]]:
    out = []
    for line, text in enumerate(path.read_text().splitlines(), start=1):
        if not text.strip() or text.lstrip().startswith("#"):
            continue
        parts = text.rsplit(maxsplit=1)
        if len(parts) != 2:
            raise InputError(f"{path}:{line}: expected 'path label', got {text!r}")
        out.append((str(root / parts[0]), parts[1]))
    return out


def read_folder(root: Path) -> list[tuple[str, str]]:
    out = []
    for folder in sorted(p for p in root.iterdir() if p.is_dir()):
        files = sorted(p for p in folder.rglob("*") if p.is_file() and p.suffix.lower() in IMAGE_SUFFIXES)
        out.extend((str(p), folder.name) for p in files)
    return out


def _label_order(labels: set[str]) -> list[str]:
    if all(label.lstrip("-").isdigit() for label in labels):
        return sorted(labels, key=int)
    return sorted(labels)


def _dropped(entries: Sequence) -> set[str]:
    """Class ids from the config: ids themselves, or files with one id per line."""
    out: set[str] = set()
    for entry in entries:
        path = Path(str(entry)).expanduser()
        if isinstance(entry, str) and path.is_file():
            out.update(t.split(",")[0].strip() for t in path.read_text().splitlines() if t.strip() and not t.startswith("#"))
        else:
            out.add(str(entry))
    return out


def read_samples(cfg: DataConfig) -> Samples:
    """All training images named by ``cfg``, dropped landmarks removed, classes remapped."""
    if not cfg.train:
        raise ConfigError("data.train is not set: give a GLDv2 train_clean.csv, a list file or a folder per class")
    source = Path(cfg.train).expanduser()
    if source.is_dir():
        entries = read_folder(Path(cfg.root) if cfg.root else source)
    elif source.is_file():
        root = Path(cfg.root).expanduser() if cfg.root else source.parent
        entries = read_gldv2_csv(source, root) if source.suffix.lower() == ".csv" else read_list_file(source, root)
    else:
        raise NotFound(f"data.train = {cfg.train}: no such file or folder")
    drop = _dropped(cfg.drop_landmarks)
    if drop:
        before = len(entries)
        entries = [e for e in entries if e[1] not in drop]
        log.info("dropped %d images of %d listed landmarks", before - len(entries), len(drop))
    if not entries:
        raise InputError(f"data.train = {cfg.train}: no training images found")
    classes = _label_order({label for _, label in entries})
    index = {label: k for k, label in enumerate(classes)}
    return Samples([p for p, _ in entries], [index[label] for _, label in entries], classes)


def split_validation(samples: Samples, fraction: float, seed: int) -> tuple[Samples, Samples]:
    """Hold out ``round(fraction * n)`` images (at least 1) of every class with >= 3 images.

    Deterministic in ``seed``; both parts keep the full class list so ids stay the same.
    """
    if fraction <= 0:
        return samples, Samples([], [], samples.classes)
    if fraction >= 1:
        raise ConfigError(f"data.val_fraction must be below 1, got {fraction}")
    rng = random.Random(seed)
    by_class: dict[int, list[int]] = {}
    for i, label in enumerate(samples.labels):
        by_class.setdefault(label, []).append(i)
    val: list[int] = []
    for members in by_class.values():
        if len(members) >= 3:
            val.extend(rng.sample(members, max(1, round(fraction * len(members)))))
    held = set(val)
    train = [i for i in range(len(samples)) if i not in held]
    return samples.subset(train), samples.subset(sorted(val))


class TrainDataset(Dataset):
    """``dataset[(index, seed)]`` -> (image tensor, class id, index of the image used,
    unreadable paths met on the way).

    ``transform(image, generator)`` draws all its randomness from a generator seeded with
    ``seed``, so an augmentation depends only on the sampler's output: the same on any number
    of workers and after a resume.
    """

    def __init__(self, samples: Samples, transform: Callable):
        self.samples = samples
        self.transform = transform
        members: dict[int, list[int]] = {}
        for i, label in enumerate(samples.labels):
            members.setdefault(label, []).append(i)
        self._members = members
        self._position = {i: n for m in members.values() for n, i in enumerate(m)}

    def __len__(self) -> int:
        return len(self.samples)

    def _candidates(self, index: int):
        """``index``, then the other images of its class in order, then every other image."""
        members = self._members[self.samples.labels[index]]
        start = self._position[index]
        yield from members[start:] + members[:start]
        n = len(self.samples)
        yield from ((index + k) % n for k in range(1, n))

    def __getitem__(self, item: tuple[int, int]):
        index, seed = item
        bad: list[str] = []
        for candidate in self._candidates(index):
            path = self.samples.paths[candidate]
            if bad and path in bad:
                continue
            try:
                image = load_image(path)
            except ImageError as err:
                bad.append(path)
                log.debug("skipping %s", err)
                continue
            generator = torch.Generator().manual_seed(seed)
            return self.transform(image, generator), self.samples.labels[candidate], candidate, bad
        raise ImageError(f"none of the {len(self.samples)} training images can be read (first: {bad[0]})")


def collate(batch):
    """Stack images, labels and indices; concatenate the unreadable paths met while loading."""
    images, labels, indices, bad = zip(*batch)
    return torch.stack(images), torch.tensor(labels, dtype=torch.long), list(indices), [p for b in bad for p in b]
