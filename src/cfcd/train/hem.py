"""Hard-negative mining table: the stage-1 top-1 prediction of every training image.

``hem(cfg, checkpoint, samples, rt)`` predicts each training image with the stage-1 model and
its classifier head (eval view: shorter side to ``data.image_size``, centre crop; for the cosine
heads, predicted class = the class weight of largest cosine, score = that cosine; autocast as
``run.amp`` says), sharded over the processes,
and writes ``path,true,pred,score`` (original class labels) to ``run.hem_table``. Stage 2's
tuple sampler reads it back with ``read_table``. Unreadable images get no row.
"""

from __future__ import annotations

import csv
import logging
from pathlib import Path

from ..atomic import atomic_write
from ..errors import InputError, MismatchError
from ..losses.registry import build_head
from ..model import CFCDNet, read_checkpoint
from .config import TrainConfig
from .datasets import Samples
from .predict import predict
from .runtime import TrainProcess

log = logging.getLogger(__name__)

HEADER = ["path", "true", "pred", "score"]


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
            raise InputError(f"{path}: expected a hard-negative table with header {','.join(HEADER)}, got {header}")
        for line, row in enumerate(reader, start=2):
            if row[2] not in index:
                raise MismatchError(f"{path}:{line}: predicted class {row[2]!r} is not a class of the training set")
            by_path[row[0]] = index[row[2]]
    missing = sum(p not in by_path for p in samples.paths)
    if missing:
        log.warning("%s: %d of %d training images have no prediction; treated as correctly classified", path, missing, len(samples))
    return [by_path.get(p, y) for p, y in zip(samples.paths, samples.labels)]


def hem(cfg: TrainConfig, checkpoint: str | Path, samples: Samples, rt: TrainProcess) -> Path:
    """Predict ``samples`` with the stage-1 ``checkpoint`` and write ``cfg.hem_table``."""
    converted = read_checkpoint(checkpoint)
    if converted.classifier is None:
        raise InputError(f"{checkpoint}: hard-negative mining needs a stage-1 checkpoint with its classifier")
    class_map = converted.extra.get("class_map")
    if class_map is not None and list(class_map) != samples.classes:
        raise MismatchError(f"{checkpoint}: its class map differs from the classes of data.train")
    model = CFCDNet(converted.config)
    model.load_state_dict(converted.model_state)
    name = converted.extra.get("head", cfg.stage1.head)
    head = build_head(name, *reversed(converted.classifier.shape), cfg.loss.get(name))
    head.weight.data.copy_(converted.classifier)
    model.to(rt.device)
    head.to(rt.device)
    preds, scores, errors = predict(model, head, samples, cfg.data.image_size, cfg.run.hem_batch_size, rt,
                                    amp=rt.autocast_dtype(cfg.run.amp), num_workers=cfg.data.num_workers)
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
