"""Hard-negative mining table: the stage-1 top-1 prediction of every training image.

``hem(cfg, checkpoint, samples, rt)`` predicts each training image with the stage-1 model and
its MadaCos classifier (eval view: shorter side to ``data.image_size``, centre crop; predicted
class = the class weight of largest cosine; score = that cosine), sharded over the processes,
and writes ``path,true,pred,score`` (original class labels) to ``run.hem_table``. Stage 2's
tuple sampler reads it back with ``read_table``. Unreadable images get no row.
"""

from __future__ import annotations

import csv
import logging
from pathlib import Path

import torch
import torch.nn.functional as F
from torch.utils.data import DataLoader, Dataset
from tqdm import tqdm

from ..atomic import atomic_write
from ..data.images import ImageError, load_image
from ..model import CFCDNet, read_checkpoint
from .config import TrainConfig
from .datasets import Samples
from .engine import Runtime
from .transforms import EvalTransform

log = logging.getLogger(__name__)

HEADER = ["path", "true", "pred", "score"]


class _EvalImages(Dataset):
    def __init__(self, samples: Samples, indices: list[int], size: int):
        self.samples, self.indices, self.transform = samples, indices, EvalTransform(size)

    def __len__(self) -> int:
        return len(self.indices)

    def __getitem__(self, k: int):
        i = self.indices[k]
        try:
            return i, self.transform(load_image(self.samples.paths[i]))
        except ImageError as err:
            return i, str(err)


def _collate(batch):
    good = [(i, x) for i, x in batch if isinstance(x, torch.Tensor)]
    bad = [(i, x) for i, x in batch if not isinstance(x, torch.Tensor)]
    return [i for i, _ in good], torch.stack([x for _, x in good]) if good else None, bad


@torch.no_grad()
def predict(model: CFCDNet, classifier: torch.Tensor, samples: Samples, image_size: int, batch_size: int,
            rt: Runtime, progress: bool = True, num_workers: int = 0) -> tuple[list[int], list[float], list[str]]:
    """Top-1 class and cosine of every sample (class -1, score nan where unreadable), computed
    on ``rt.rank::rt.world_size`` by each process and gathered on all of them."""
    was_training = model.training
    model.eval()
    weight = F.normalize(classifier.detach().float().to(rt.device), dim=1)
    shard = list(range(rt.rank, len(samples), rt.world_size))
    loader = DataLoader(_EvalImages(samples, shard, image_size), batch_size=batch_size,
                        num_workers=num_workers, collate_fn=_collate)
    mine: list[tuple[int, int, float]] = []
    errors: list[str] = []
    for rows, x, bad in tqdm(loader, disable=not (progress and rt.main), unit="batch", desc="predict"):
        errors.extend(msg for _, msg in bad)
        mine.extend((i, -1, float("nan")) for i, _ in bad)
        if x is None:
            continue
        with torch.autocast(rt.device.type, dtype=torch.bfloat16, enabled=rt.device.type == "cuda"):
            g = model(x.to(rt.device))
        score, pred = (F.normalize(g.float(), dim=1) @ weight.T).max(dim=1)
        mine.extend(zip(rows, pred.tolist(), score.tolist()))
    model.train(was_training)
    preds, scores = [-1] * len(samples), [float("nan")] * len(samples)
    all_errors: list[str] = []
    for part, part_errors in rt.gather_objects((mine, errors)):
        for i, p, s in part:
            preds[i], scores[i] = p, s
        all_errors.extend(part_errors)
    return preds, scores, all_errors


@torch.no_grad()
def gem_features(model: CFCDNet, samples: Samples, image_size: int, batch_size: int, rt: Runtime,
                 progress: bool = True, num_workers: int = 0) -> tuple[torch.Tensor, list[str]]:
    """GeM vectors (before the projection head) of the readable samples, in sample order, as a
    float64 CPU tensor (N, C): the eval view of ``predict``, computed on ``rt.rank::rt.world_size``
    by each process and gathered on all of them; also the messages of the unreadable images."""
    was_training = model.training
    model.eval()
    shard = list(range(rt.rank, len(samples), rt.world_size))
    loader = DataLoader(_EvalImages(samples, shard, image_size), batch_size=batch_size,
                        num_workers=num_workers, collate_fn=_collate)
    rows: list[int] = []
    feats: list[torch.Tensor] = []
    errors: list[str] = []
    for idx, x, bad in tqdm(loader, disable=not (progress and rt.main), unit="batch", desc="GeM"):
        errors.extend(msg for _, msg in bad)
        if x is None:
            continue
        g = model.pool(model.backbone(x.to(rt.device)))
        rows.extend(idx)
        feats.append(g.double().cpu())
    model.train(was_training)
    mine = (rows, torch.cat(feats) if feats else torch.zeros(0, model.backbone_channels, dtype=torch.float64), errors)
    by_row: dict[int, torch.Tensor] = {}
    all_errors: list[str] = []
    for part_rows, part_feats, part_errors in rt.gather_objects(mine):
        by_row.update(zip(part_rows, part_feats))
        all_errors.extend(part_errors)
    order = sorted(by_row)
    out = torch.stack([by_row[i] for i in order]) if order else torch.zeros(0, model.backbone_channels, dtype=torch.float64)
    return out, all_errors


def write_table(path: Path, samples: Samples, preds: list[int], scores: list[float]) -> None:
    """Write the table atomically (temporary file, then rename)."""
    with atomic_write(path, "w", newline="") as f:
        w = csv.writer(f)
        w.writerow(HEADER)
        for p, y, pred, score in zip(samples.paths, samples.labels, preds, scores):
            if pred >= 0:
                w.writerow([p, samples.classes[y], samples.classes[pred], f"{score:.6f}"])


def read_table(path: Path, samples: Samples) -> list[int]:
    """Predicted class id of every sample; an image with no row counts as correctly classified."""
    index = {label: k for k, label in enumerate(samples.classes)}
    by_path: dict[str, int] = {}
    with open(path, newline="") as f:
        reader = csv.reader(f)
        header = next(reader, None)
        if header != HEADER:
            raise ValueError(f"{path}: expected a hard-negative table with header {','.join(HEADER)}, got {header}")
        for line, row in enumerate(reader, start=2):
            if row[2] not in index:
                raise ValueError(f"{path}:{line}: predicted class {row[2]!r} is not a class of the training set")
            by_path[row[0]] = index[row[2]]
    missing = sum(p not in by_path for p in samples.paths)
    if missing:
        log.warning("%s: %d of %d training images have no prediction; treated as correctly classified", path, missing, len(samples))
    return [by_path.get(p, y) for p, y in zip(samples.paths, samples.labels)]


def hem(cfg: TrainConfig, checkpoint: str | Path, samples: Samples, rt: Runtime) -> Path:
    """Predict ``samples`` with the stage-1 ``checkpoint`` and write ``cfg.hem_table``."""
    converted = read_checkpoint(checkpoint)
    if converted.classifier is None:
        raise ValueError(f"{checkpoint}: hard-negative mining needs a stage-1 checkpoint with its MadaCos classifier")
    class_map = converted.extra.get("class_map")
    if class_map is not None and list(class_map) != samples.classes:
        raise ValueError(f"{checkpoint}: its class map differs from the classes of data.train")
    model = CFCDNet(converted.config)
    model.load_state_dict(converted.model_state)
    model.to(rt.device)
    preds, scores, errors = predict(model, converted.classifier, samples, cfg.data.image_size,
                                    cfg.run.hem_batch_size, rt, num_workers=cfg.data.num_workers)
    table = cfg.hem_table
    if rt.main:
        write_table(table, samples, preds, scores)
        known = [(p, y) for p, y in zip(preds, samples.labels) if p >= 0]
        accuracy = sum(p == y for p, y in known) / max(1, len(known))
        log.info("hard-negative table %s: %d images, top-1 accuracy %.3f, %d unreadable",
                 table, len(known), accuracy, len(errors))
        for msg in errors:
            log.warning("unreadable: %s", msg)
    rt.barrier()
    return table
