"""Passes over the training images in the eval view (shorter side to ``data.image_size``, centre
crop), sharded over the processes and gathered on all of them: the classifier head's prediction
(hard-negative table, validation accuracy) and the GeM vectors (PCA head initialisation)."""

from __future__ import annotations

import torch
from torch.utils.data import DataLoader, Dataset
from tqdm import tqdm

from ..data.decoding import ImageError, load_image
from ..model import CFCDNet
from .datasets import Samples
from .runtime import TrainProcess
from .transforms import EvalTransform


class EvalImages(Dataset):
    """``dataset[k]`` -> (sample index, eval-view tensor), or (index, error message) if unreadable."""

    def __init__(self, samples: Samples, indices: list[int], size: int, preparation: str = "cfcd"):
        self.samples, self.indices, self.transform = samples, indices, EvalTransform(size, preparation)

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


def _shard_loader(model: CFCDNet, samples: Samples, image_size: int, batch_size: int, rt: TrainProcess, num_workers: int):
    """This process's share of the samples, resampled with ``model``'s image preparation."""
    shard = list(range(rt.rank, len(samples), rt.world_size))
    return DataLoader(EvalImages(samples, shard, image_size, model.config.preparation), batch_size=batch_size,
                      num_workers=num_workers, collate_fn=_collate)


@torch.no_grad()
def _sharded_pass(model: CFCDNet, samples: Samples, image_size: int, batch_size: int, rt: TrainProcess,
                  compute, width: int, desc: str, progress: bool, num_workers: int,
                  ) -> tuple[list[int], torch.Tensor, list[str]]:
    """``compute(x)`` (B, width) for this process's share of the readable samples in eval mode,
    gathered on every process: (sample indices in order, their rows as a float64 CPU tensor,
    messages of the unreadable images)."""
    was_training = model.training
    model.eval()
    rows: list[int] = []
    parts: list[torch.Tensor] = []
    errors: list[str] = []
    loader = _shard_loader(model, samples, image_size, batch_size, rt, num_workers)
    try:
        for idx, x, bad in tqdm(loader, disable=not (progress and rt.main), unit="batch", desc=desc):
            errors.extend(msg for _, msg in bad)
            if x is not None:
                rows.extend(idx)
                parts.append(compute(x.to(rt.device)).double().cpu())
    finally:
        model.train(was_training)
    empty = torch.zeros(0, width, dtype=torch.float64)
    by_row: dict[int, torch.Tensor] = {}
    all_errors: list[str] = []
    for part_rows, part, part_errors in rt.gather_objects((rows, torch.cat(parts) if parts else empty, errors)):
        by_row.update(zip(part_rows, part))
        all_errors.extend(part_errors)
    order = sorted(by_row)
    return order, (torch.stack([by_row[i] for i in order]) if order else empty), all_errors


def predict(model: CFCDNet, head, samples: Samples, image_size: int, batch_size: int, rt: TrainProcess,
            amp: torch.dtype | None = None, progress: bool = True,
            num_workers: int = 0) -> tuple[list[int], list[float], list[str]]:
    """Class and score of ``head.predict`` for every sample (class -1, score nan where unreadable),
    under autocast ``amp`` (None: float32); also the messages of the unreadable images."""
    def compute(x):
        with rt.autocast(amp):
            g = model(x)
        pred, score = head.predict(g.float())
        return torch.stack([pred.double(), score.double()], dim=1)

    rows, out, errors = _sharded_pass(model, samples, image_size, batch_size, rt, compute, 2, "predict",
                                      progress, num_workers)
    preds, scores = [-1] * len(samples), [float("nan")] * len(samples)
    for i, (p, s) in zip(rows, out.tolist()):
        preds[i], scores[i] = int(p), s
    return preds, scores, errors


def descriptors(model: CFCDNet, samples: Samples, image_size: int, batch_size: int, rt: TrainProcess,
                progress: bool = True, num_workers: int = 0) -> tuple[list[int], torch.Tensor, list[str]]:
    """The model's global descriptors (eval view, float32): (indices of the readable samples,
    descriptors (N, d) float64 CPU in that order, messages of the unreadable images)."""
    return _sharded_pass(model, samples, image_size, batch_size, rt, model, model.output_dim, "describe",
                         progress, num_workers)


def batch_gem_vectors(model: CFCDNet, x: torch.Tensor) -> torch.Tensor:
    """GeM vectors (B, C) of a batch as the model's own forward computes them (input preparation
    included), caught at the pooling layer."""
    caught = []
    hook = model.pool.register_forward_hook(lambda module, args, out: caught.append(out))
    try:
        model(x)
    finally:
        hook.remove()
    return caught[0]


def gem_features(model: CFCDNet, samples: Samples, image_size: int, batch_size: int, rt: TrainProcess,
                 progress: bool = True, num_workers: int = 0) -> tuple[torch.Tensor, list[str]]:
    """GeM vectors (before the projection head) of the readable samples, in sample order, as a
    float64 CPU tensor (N, C); also the messages of the unreadable images."""
    _, feats, errors = _sharded_pass(model, samples, image_size, batch_size, rt,
                                     lambda x: batch_gem_vectors(model, x), model.backbone_channels, "GeM",
                                     progress, num_workers)
    return feats, errors
