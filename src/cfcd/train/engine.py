"""The training loop: one code path for 1..N processes (``torchrun``), both stages, resumable.

``run(cfg, stages, resume)`` trains stage 1 (MadaCos), predicts the hard-negative table
(``cfcd.train.hem``), then trains stage 2 (MadaCos + local triplet on hard-negative tuples).

Layout of ``run.out_dir``: ``stage{1,2}/last.pt`` (full training state, rewritten atomically
every epoch and every ``run.checkpoint_every`` steps), ``stage{1,2}/model.pt`` (the finished
stage: model, MadaCos classifier, class map), ``stage{1,2}/log.jsonl`` (one record per step and
per epoch), ``stage{1,2}/unreadable.txt``, and ``hem.csv``.

The global batch is fixed: each of W processes takes ``batch_size / W`` images of the same
global batch, DDP averages their gradients, MadaCos gathers its statistics over all of them,
and the triplet sum is rescaled so that its gradient does not depend on W. BatchNorm uses
per-process statistics, as in the official code (SyncBatchNorm has no CPU implementation), so
runs on different process counts see the same batches but not bit-identical activations. Resuming restores model, classifier,
optimizer, schedule position (epoch, step), sampler position and RNG state; augmentations are
seeded per sample, so a resumed run repeats the uninterrupted run's losses.
"""

from __future__ import annotations

import json
import logging
import math
import os
import time
from dataclasses import dataclass
from pathlib import Path

import torch
import torch.distributed as dist
import torch.nn.functional as F
from torch import nn
from torch.utils.data import DataLoader
from tqdm import tqdm

from ..losses import LocalTripletLoss, MadaCos
from ..model import CFCDNet, read_checkpoint
from ..model.checkpoint import atomic_save, make_checkpoint
from .config import StageConfig, TrainConfig
from .datasets import Samples, TrainDataset, collate, read_samples, split_validation
from .samplers import ShuffleBatchSampler, TupleBatchSampler
from .transforms import TrainTransform

log = logging.getLogger(__name__)

LAST = "last.pt"
FINAL = "model.pt"


@dataclass
class Runtime:
    """Where this process runs: rank, world size and device."""

    rank: int
    world_size: int
    device: torch.device

    @property
    def main(self) -> bool:
        return self.rank == 0

    @property
    def distributed(self) -> bool:
        return self.world_size > 1

    def barrier(self) -> None:
        if self.distributed:
            dist.barrier()

    def gather_objects(self, obj) -> list:
        if not self.distributed:
            return [obj]
        out = [None] * self.world_size
        dist.all_gather_object(out, obj)
        return out


def init_runtime(device: str = "auto") -> Runtime:
    """Join the ``torchrun`` process group if there is one (NCCL on GPUs, gloo on CPU)."""
    use_cuda = device == "cuda" or (device == "auto" and torch.cuda.is_available())
    if use_cuda and not torch.cuda.is_available():
        raise RuntimeError("run.device = cuda but no CUDA device is available; use run.device=cpu")
    world = int(os.environ.get("WORLD_SIZE", "1"))
    local_rank = int(os.environ.get("LOCAL_RANK", "0"))
    if use_cuda:
        torch.cuda.set_device(local_rank)
    if world > 1 and not dist.is_initialized():
        dist.init_process_group("nccl" if use_cuda else "gloo")
    rank = dist.get_rank() if dist.is_initialized() else 0
    return Runtime(rank, world, torch.device("cuda", local_rank) if use_cuda else torch.device("cpu"))


def learning_rate(stage: StageConfig, epoch: int, warmup_factor: float) -> float:
    """Cosine decay per epoch, lr(e) = 0.5 base (1 + cos(pi e / E)), times a linear warm-up
    factor rising from ``warmup_factor`` at e = 0 to 1 at e = warmup_epochs."""
    lr = 0.5 * stage.base_lr * (1.0 + math.cos(math.pi * epoch / stage.epochs))
    if epoch < stage.warmup_epochs:
        a = epoch / stage.warmup_epochs
        lr *= warmup_factor * (1.0 - a) + a
    return lr


def training_data(cfg: TrainConfig) -> tuple[Samples, Samples]:
    """(train, validation) samples; the split depends only on the config."""
    return split_validation(read_samples(cfg.data), cfg.data.val_fraction, cfg.run.seed)


def load_init_weights(model: CFCDNet, source: str) -> set[str]:
    """Backbone (and head, when shapes match) from an ImageNet model or a cfcd checkpoint;
    returns the names of the loaded tensors."""
    converted = read_checkpoint(source)
    if converted.config.backbone != model.config.backbone:
        raise ValueError(f"{source}: weights of a {converted.config.backbone}, but model.backbone = {model.config.backbone}")
    own = model.state_dict()
    state = {k: v for k, v in converted.model_state.items() if k in own and own[k].shape == v.shape}
    missing = [k for k in own if k.startswith("backbone.") and k not in state]
    if missing:
        raise ValueError(f"{source}: no weights for {len(missing)} backbone keys, e.g. {missing[:3]}")
    model.load_state_dict(state, strict=False)
    return set(state)


HEAD_INITS = ("random", "pca")


def pca_components(features: torch.Tensor, dim: int, seed: int = 0) -> tuple[torch.Tensor, torch.Tensor]:
    """``(components (dim, C), mean (C,))`` of ``features`` (N, C), float64: the rows are the top
    principal directions of the centred features (right singular vectors, largest singular
    value first, sign fixed so that each row's largest-magnitude entry is positive). With fewer
    than ``dim`` directions (N < dim), the rest are random unit rows orthogonal to them and to
    each other (seeded), so all rows stay orthonormal. Needs dim <= C."""
    x = features.double()
    n, c = x.shape
    if dim > c:
        raise ValueError(f"PCA head init: model.dim = {dim} exceeds the {c} GeM channels")
    mean = x.mean(dim=0) if n else torch.zeros(c, dtype=torch.float64)
    rows = torch.zeros(0, c, dtype=torch.float64)
    if n:
        _, _, vh = torch.linalg.svd(x - mean, full_matrices=False)
        rows = vh[:dim]
        flip = torch.sign(rows.gather(1, rows.abs().argmax(dim=1, keepdim=True)))
        rows = rows * torch.where(flip == 0, torch.ones_like(flip), flip)
    missing = dim - rows.shape[0]
    if missing > 0:
        g = torch.Generator().manual_seed(seed)
        extra = torch.randn(missing, c, generator=g, dtype=torch.float64)
        extra -= (extra @ rows.T) @ rows
        q, _ = torch.linalg.qr(extra.T)  # (C, missing), orthonormal columns
        q -= rows.T @ (rows @ q)  # re-orthogonalise against the principal rows
        q, _ = torch.linalg.qr(q)
        rows = torch.cat([rows, q.T])
    return rows, mean


@torch.no_grad()
def set_head_from_pca(model: CFCDNet, components: torch.Tensor, mean: torch.Tensor) -> None:
    """fc(g) = components (g - mean); BatchNorm1d at identity (weight 1, bias 0, running mean 0,
    running var 1), so the eval descriptor is the L2-normalised PCA projection of GeM (up to
    BatchNorm's eps)."""
    comp = components.to(torch.float64)
    model.fc.weight.copy_(comp.to(model.fc.weight))
    model.fc.bias.copy_((-(comp @ mean.to(torch.float64))).to(model.fc.bias))
    model.bn.reset_parameters()  # weight 1, bias 0, running_mean 0, running_var 1, batches 0


class TrainModule(nn.Module):
    """Model and MadaCos head as one module, so that DDP synchronises both."""

    def __init__(self, model: CFCDNet, head: MadaCos):
        super().__init__()
        self.model = model
        self.head = head

    def forward(self, x: torch.Tensor, labels: torch.Tensor, with_local: bool):
        if with_local:
            g, local = self.model(x, with_local=True)
            return self.head(g, labels), local
        return self.head(self.model(x), labels), None


class StepLog:
    """JSONL records (and TensorBoard scalars) written by rank 0 only."""

    def __init__(self, folder: Path, enabled: bool, tensorboard: bool):
        self.enabled = enabled
        self.path = folder / "log.jsonl"
        self.writer = None
        if enabled and tensorboard:
            try:
                from torch.utils.tensorboard import SummaryWriter
            except ImportError as err:
                raise RuntimeError("run.tensorboard = true needs the tensorboard package: pip install tensorboard") from err
            self.writer = SummaryWriter(str(folder / "tensorboard"))

    def write(self, record: dict) -> None:
        if not self.enabled:
            return
        with open(self.path, "a") as f:
            f.write(json.dumps(record) + "\n")
        if self.writer is not None and "global_step" in record:
            for key, value in record.items():
                if isinstance(value, float):
                    self.writer.add_scalar(key, value, record["global_step"])


def _rng_state() -> dict:
    state = {"torch": torch.get_rng_state()}
    if torch.cuda.is_available():
        state["cuda"] = torch.cuda.get_rng_state_all()
    return state


def _set_rng_state(state: dict) -> None:
    torch.set_rng_state(state["torch"])
    if "cuda" in state and torch.cuda.is_available():
        torch.cuda.set_rng_state_all(state["cuda"])


class StageTrainer:
    """Trains one stage; ``train()`` returns the path of the finished stage's model, or None
    when ``run.stop_after_steps`` ended it early."""

    def __init__(self, cfg: TrainConfig, stage: int, rt: Runtime, train: Samples, val: Samples,
                 predictions: list[int] | None = None):
        self.cfg, self.stage, self.rt = cfg, stage, rt
        self.scfg = cfg.stage1 if stage == 1 else cfg.stage2
        self.train_samples, self.val_samples = train, val
        self.folder = cfg.out_dir / f"stage{stage}"
        self.predictions = predictions
        torch.manual_seed(cfg.run.seed)
        if self.scfg.head_init not in HEAD_INITS:
            raise ValueError(f"stage{stage}.head_init must be one of {', '.join(HEAD_INITS)}, got {self.scfg.head_init!r}")
        self.fresh_head = False  # a stage-1 head with no loaded weights: head_init applies to it
        self.model, classifier = self._initial_model()
        self.head = MadaCos(self.model.output_dim, train.num_classes, cfg.loss.alpha, cfg.loss.k, cfg.loss.min_scale)
        if classifier is not None:
            self.head.weight.data.copy_(classifier)
        self.triplet = LocalTripletLoss(cfg.loss.margin, cfg.loss.weight, cfg.loss.ratio, cfg.loss.tuple_size)
        self.module = TrainModule(self.model, self.head).to(rt.device)
        self.on_gpu = rt.device.type == "cuda"
        if self.on_gpu and cfg.run.channels_last:
            self.module = self.module.to(memory_format=torch.channels_last)
        self.optimizer = torch.optim.SGD(
            self.module.parameters(), lr=self.scfg.base_lr, momentum=cfg.optim.momentum,
            nesterov=cfg.optim.nesterov, weight_decay=cfg.optim.weight_decay,
        )
        amp = cfg.run.amp.lower()
        if amp not in ("bf16", "fp16", "off"):
            raise ValueError(f"run.amp must be bf16, fp16 or off, got {cfg.run.amp!r}")
        self.amp_dtype = {"bf16": torch.bfloat16, "fp16": torch.float16}.get(amp) if self.on_gpu else None
        self.scaler = torch.amp.GradScaler("cuda", enabled=self.amp_dtype == torch.float16)
        self.epoch, self.step, self.global_step = 0, 0, 0
        self.unreadable: set[str] = set()

    def _initial_model(self) -> tuple[CFCDNet, torch.Tensor | None]:
        if self.stage == 1:
            model = CFCDNet(self.cfg.model)
            loaded = load_init_weights(model, self.scfg.init) if self.scfg.init else set()
            self.fresh_head = model.fc is not None and not any(k.startswith(("fc.", "bn.")) for k in loaded)
            return model, None
        source = self.scfg.init or str(self.cfg.out_dir / "stage1" / FINAL)
        converted = read_checkpoint(source)
        if converted.classifier is None:
            raise ValueError(f"{source}: stage 2 starts from a full stage-1 checkpoint, but this one has no classifier")
        class_map = converted.extra.get("class_map")
        if class_map is not None and list(class_map) != self.train_samples.classes:
            raise ValueError(f"{source}: its class map differs from the classes of data.train; train stage 1 on the same data")
        model = CFCDNet(converted.config)
        model.load_state_dict(converted.model_state)
        return model, converted.classifier

    # -- checkpoints ---------------------------------------------------------------------------
    def _save(self, path: Path, full: bool) -> None:
        if not self.rt.main:
            return
        extra = {"class_map": self.train_samples.classes, "stage": self.stage, "train_config": self.cfg.to_dict()}
        if full:
            extra.update(
                epoch=self.epoch, step=self.step, global_step=self.global_step,
                optimizer_state=self.optimizer.state_dict(), scaler_state=self.scaler.state_dict(),
                scheduler={"epoch": self.epoch, "base_lr": self.scfg.base_lr, "epochs": self.scfg.epochs,
                           "warmup_epochs": self.scfg.warmup_epochs},
                rng_state=_rng_state(), unreadable=sorted(self.unreadable),
            )
        atomic_save(make_checkpoint(self.model, self.head.weight, **extra), path)

    def resume_from(self, path: Path) -> None:
        converted = read_checkpoint(path)
        state = converted.extra
        if state.get("stage") != self.stage or "optimizer_state" not in state:
            raise ValueError(f"{path}: not a stage-{self.stage} training checkpoint")
        if list(state["class_map"]) != self.train_samples.classes:
            raise ValueError(f"{path}: its class map differs from the classes of data.train")
        self.model.load_state_dict(converted.model_state)
        self.head.weight.data.copy_(converted.classifier)
        self.fresh_head = False
        self.optimizer.load_state_dict(state["optimizer_state"])
        self.scaler.load_state_dict(state["scaler_state"])
        _set_rng_state(state["rng_state"])
        self.epoch, self.step, self.global_step = state["epoch"], state["step"], state["global_step"]
        self.unreadable = set(state.get("unreadable", []))
        if self.rt.main:
            log.info("stage %d: resuming from %s at epoch %d, step %d", self.stage, path, self.epoch, self.step)

    # -- the loop ------------------------------------------------------------------------------
    def init_head_from_pca(self) -> None:
        """``head_init = pca``: the projection head from PCA of the training images' GeM vectors
        (eval view). Every process computes the features of its shard, all gather them, rank 0's
        head is broadcast so that the processes start identical. Training RNG state is untouched."""
        from .hem import gem_features

        cfg, rt, model = self.cfg, self.rt, self.model
        dim, channels = model.fc.out_features, model.fc.in_features
        if dim > channels:
            if rt.main:
                log.warning("stage1.head_init = pca: model.dim = %d > %d GeM channels; keeping the random head", dim, channels)
            return
        tic = time.perf_counter()
        with torch.random.fork_rng(devices=[]):
            feats, errors = gem_features(model, self.train_samples, cfg.data.image_size, cfg.run.hem_batch_size, rt,
                                         num_workers=cfg.data.num_workers)
        if feats.shape[0] - 1 < dim and rt.main:
            log.warning("stage1.head_init = pca: %d training images give at most %d principal directions for "
                        "model.dim = %d; the other %d rows are random orthonormal directions",
                        feats.shape[0], max(0, feats.shape[0] - 1), dim, dim - max(0, feats.shape[0] - 1))
        components, mean = pca_components(feats, dim, seed=cfg.run.seed)
        set_head_from_pca(model, components, mean)
        if rt.distributed:
            for t in (model.fc.weight.data, model.fc.bias.data):
                dist.broadcast(t, src=0)
        if rt.main:
            total = float((feats - mean).square().sum())
            share = float(((feats - mean) @ components.T).square().sum()) / total if total > 0 else float("nan")
            log.info("stage 1: projection head from PCA of %d GeM vectors (%d -> %d, %.1f%% of the variance kept) "
                     "in %.0f s%s", len(feats), channels, dim, 100 * share, time.perf_counter() - tic,
                     f"; {len(errors)} unreadable" if errors else "")

    def _sampler(self):
        seed = self.cfg.run.seed + 1000 * self.stage
        if self.stage == 1:
            return ShuffleBatchSampler(len(self.train_samples), self.scfg.batch_size, self.rt.rank, self.rt.world_size, seed)
        if self.predictions is None and self.rt.main:
            log.warning("stage 2: no hard-negative table; training on RANDOM tuples (run `cfcd hem` for hard negatives)")
        return TupleBatchSampler(self.train_samples.labels, self.predictions, self.cfg.loss.tuple_size,
                                 self.scfg.batch_size, self.rt.rank, self.rt.world_size, seed)

    def _reduce(self, values: list[float], op=dist.ReduceOp.SUM) -> list[float]:
        if not self.rt.distributed:
            return values
        t = torch.tensor(values, dtype=torch.float64, device=self.rt.device)
        dist.all_reduce(t, op=op)
        return t.tolist()

    def _train_step(self, net, x: torch.Tensor, y: torch.Tensor, indices: list[int]) -> dict:
        x = x.to(self.rt.device, non_blocking=True)
        if self.on_gpu and self.cfg.run.channels_last:
            x = x.contiguous(memory_format=torch.channels_last)
        y = y.to(self.rt.device, non_blocking=True)
        with torch.autocast(self.rt.device.type, dtype=self.amp_dtype or torch.float32, enabled=self.amp_dtype is not None):
            logits, local = net(x, y, self.stage == 2)
        ce = F.cross_entropy(logits.float(), y)
        loss, triplet = ce, torch.zeros((), device=self.rt.device)
        if self.stage == 2:
            # Sum over this process's tuples, scaled so that DDP's gradient average yields
            # weight * (sum over the global batch) * norm_images / global batch.
            norm = self.cfg.loss.triplet_norm_images / self.scfg.batch_size
            triplet = self.triplet(local.descriptors.float(), local.attention.float()) * norm
            loss = ce + triplet * self.rt.world_size
        self.optimizer.zero_grad(set_to_none=True)
        self.scaler.scale(loss).backward()
        self.scaler.step(self.optimizer)
        self.scaler.update()
        ce_mean, triplet_sum, images, index_sum = self._reduce(
            [ce.item() / self.rt.world_size, triplet.item(), float(len(indices)), float(sum(indices))]
        )
        # images and index_sum identify the global batch: the same for any number of processes.
        return {"loss": ce_mean + triplet_sum, "ce": ce_mean, "triplet": triplet_sum,
                "images": int(images), "index_sum": int(index_sum)}

    def train(self) -> Path | None:
        cfg, rt = self.cfg, self.rt
        self.folder.mkdir(parents=True, exist_ok=True)
        logger = StepLog(self.folder, rt.main, cfg.run.tensorboard)
        if self.stage == 1 and self.fresh_head and self.scfg.head_init == "pca":
            self.init_head_from_pca()
        self.fresh_head = False
        net = self.module
        if rt.distributed:
            net = nn.parallel.DistributedDataParallel(self.module, device_ids=[rt.device.index] if self.on_gpu else None)
        dataset = TrainDataset(self.train_samples, TrainTransform(cfg.data.image_size))
        sampler = self._sampler()
        steps_in_run = 0
        while self.epoch < self.scfg.epochs:
            lr = learning_rate(self.scfg, self.epoch, cfg.optim.warmup_factor)
            for group in self.optimizer.param_groups:
                group["lr"] = lr
            sampler.set_epoch(self.epoch, self.step)
            loader = DataLoader(dataset, batch_sampler=sampler, num_workers=cfg.data.num_workers,
                                collate_fn=collate, pin_memory=self.on_gpu)
            net.train()
            bar = tqdm(total=sampler.steps_per_epoch(), initial=self.step, disable=not rt.main, unit="step",
                       desc=f"stage {self.stage} epoch {self.epoch + 1}/{self.scfg.epochs}")
            tic = time.perf_counter()
            for x, y, indices, bad in loader:
                for path in bad:
                    if path not in self.unreadable:
                        log.warning("unreadable training image skipped: %s", path)
                self.unreadable.update(bad)
                stats = self._train_step(net, x, y, indices)
                now = time.perf_counter()
                record = {
                    "stage": self.stage, "epoch": self.epoch, "step": self.step, "global_step": self.global_step,
                    **stats, "scale": self.head.last_scale, "margin": self.head.last_margin,
                    "median_cos": self.head.last_median, "lr": lr, "img_per_s": self.scfg.batch_size / (now - tic),
                }
                tic = now
                logger.write(record)
                bar.update(1)
                bar.set_postfix(loss=f"{stats['loss']:.3f}", s=f"{record['scale']:.1f}", m=f"{record['margin']:.3f}")
                self.step += 1
                self.global_step += 1
                steps_in_run += 1
                if cfg.run.checkpoint_every and self.global_step % cfg.run.checkpoint_every == 0:
                    self._save(self.folder / LAST, full=True)
                if cfg.run.stop_after_steps and steps_in_run >= cfg.run.stop_after_steps:
                    bar.close()
                    return None
            bar.close()
            self._end_epoch(logger)
        self._save(self.folder / FINAL, full=False)
        rt.barrier()
        return self.folder / FINAL

    def _end_epoch(self, logger: StepLog) -> None:
        rt = self.rt
        for part in rt.gather_objects(sorted(self.unreadable)):
            self.unreadable.update(part)
        record = {"stage": self.stage, "epoch_end": self.epoch, "global_step": self.global_step,
                  "unreadable": len(self.unreadable)}
        if len(self.val_samples):
            from .hem import predict

            preds, _, _ = predict(self.model, self.head.weight, self.val_samples, self.cfg.data.image_size,
                                  self.cfg.run.hem_batch_size, rt, progress=False)
            known = [(p, y) for p, y in zip(preds, self.val_samples.labels) if p >= 0]
            record["val_top1"] = sum(p == y for p, y in known) / max(1, len(known))
        logger.write(record)
        if rt.main and self.unreadable:
            (self.folder / "unreadable.txt").write_text("".join(p + "\n" for p in sorted(self.unreadable)))
        self.epoch, self.step = self.epoch + 1, 0
        self._save(self.folder / LAST, full=True)


def run(cfg: TrainConfig, stages: str = "both", resume: bool = False) -> dict[str, Path | None]:
    """Train ``stages`` ("1", "2" or "both"; both = stage 1, hard-negative table, stage 2).

    With ``resume``, a finished stage (``model.pt`` present) is skipped, an interrupted one
    continues from ``last.pt``; without it, an existing ``last.pt`` is an error rather than
    something to overwrite.
    """
    from .hem import hem, read_table

    if stages not in ("1", "2", "both"):
        raise ValueError(f"stage must be 1, 2 or both, got {stages!r}")
    rt = init_runtime(cfg.run.device)
    train, val = training_data(cfg)
    if rt.main:
        log.info("training set: %d images of %d classes (%d held out for validation) from %s",
                 len(train), train.num_classes, len(val), cfg.data.train)
    out: dict[str, Path | None] = {}
    for stage in (1, 2):
        if stages not in (str(stage), "both"):
            continue
        folder = cfg.out_dir / f"stage{stage}"
        if resume and (folder / FINAL).is_file():
            out[f"stage{stage}"] = folder / FINAL
        else:
            if (folder / LAST).is_file() and not resume:
                raise ValueError(f"{folder / LAST} exists: pass --resume to continue that run, or choose another run.out_dir")
            predictions = None
            if stage == 2:
                table = cfg.hem_table
                if stages == "both" and not (resume and table.is_file()):
                    hem(cfg, out["stage1"], train, rt)
                predictions = read_table(table, train) if table.is_file() else None
            trainer = StageTrainer(cfg, stage, rt, train, val, predictions)
            if resume and (folder / LAST).is_file():
                trainer.resume_from(folder / LAST)
            out[f"stage{stage}"] = trainer.train()
        if out[f"stage{stage}"] is None:
            break
    return out
