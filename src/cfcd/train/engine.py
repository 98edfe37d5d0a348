"""The training loop: one code path for 1..N processes (``torchrun``), any stage, resumable.

``run(cfg, stages, resume)`` trains stage 1, predicts the hard-negative table (``cfcd.train.hem``),
then trains stage 2. What a stage optimises (sampler, classifier head, weighted loss terms) comes
from its config through ``cfcd.train.stages``; this loop knows none of the losses.

Layout of ``run.out_dir``: ``stage{1,2}/last.pt`` (full training state, rewritten atomically
every epoch and every ``run.checkpoint_every`` steps), ``stage{1,2}/model.pt`` (the finished
stage: model, classifier weight, class map), ``stage{1,2}/log.jsonl`` (one record per step and
per epoch), ``stage{1,2}/unreadable.txt``, and ``hem.csv``.

The global batch is fixed: each of W processes takes ``batch_size / W`` images of the same
global batch, DDP averages their gradients, and every loss term returns a value whose average
over the processes is its loss on the global batch (``cfcd.losses.base``). BatchNorm uses
per-process statistics by default, as in the official code (SyncBatchNorm has no CPU
implementation), so runs on different process counts see the same batches but not bit-identical
activations; with ``optim.batchnorm = frozen`` they compute the same thing. Resuming restores
model, classifier, optimizer, schedule position (epoch, step), sampler position and RNG state;
augmentations are seeded per sample, so a resumed run repeats the uninterrupted run's losses.
"""

from __future__ import annotations

import json
import logging
import math
import os
import sys
import time
from pathlib import Path
from typing import Callable

import torch
import torch.distributed as dist
from torch import nn
from torch.utils.data import DataLoader
from tqdm import tqdm

from ..errors import AlreadyExists, ConfigError, InputError, MismatchError, Unavailable
from ..losses.base import StepOutputs
from ..model import CFCDNet, read_checkpoint
from ..model.checkpoint import atomic_save, make_checkpoint
from .config import StageConfig, TrainConfig, sampler_params, train_config_from_dict
from .datasets import Samples, TrainDataset, collate, read_samples, split_validation
from .guard import BEST, INIT, START, Guard, distractor_photos
from .head_init import CLASSIFIER_INITS, HEAD_INITS, init_classifier_from_means, init_head
from .holdout import holdout_identities
from .hem import hem, read_table
from .predict import predict
from .runtime import TrainProcess, init_runtime
from .stages import build_stage
from .transforms import TrainTransform

log = logging.getLogger(__name__)

LAST = "last.pt"
FINAL = "model.pt"
BATCHNORM_MODES = ("batch", "frozen")
# Test hook: "STAGE:STEPS" makes the process stop, alive, after STEPS steps of stage STAGE (and
# their checkpoint, if one is due), after printing PAUSED_MARKER to stderr, so that a test can
# SIGKILL it at a known point.
PAUSE_ENV = "CFCD_TRAIN_PAUSE_AFTER"
PAUSED_MARKER = "cfcd-train-paused"
# Settings a resumed stage must share with its checkpoint: they define the sampler's positions.
RESUME_FIXED = ("batch_size", "sampler")  # and every parameter of the sampler

__all__ = ["FINAL", "LAST", "StageTrainer", "TrainProcess", "init_runtime", "learning_rate", "run", "training_data"]


def learning_rate(stage: StageConfig, epoch: int, warmup_factor: float) -> float:
    """Cosine decay per epoch, lr(e) = 0.5 base (1 + cos(pi e / E)), times a linear warm-up
    factor rising from ``warmup_factor`` at e = 0 to 1 at e = warmup_epochs."""
    lr = 0.5 * stage.base_lr * (1.0 + math.cos(math.pi * epoch / stage.epochs))
    if epoch < stage.warmup_epochs:
        a = epoch / stage.warmup_epochs
        lr *= warmup_factor * (1.0 - a) + a
    return lr


def training_data(cfg: TrainConfig) -> tuple[Samples, Samples]:
    """(train, validation) samples, the held-back identities removed; the split depends only on
    the config."""
    return split_validation(_split_identities(cfg)[0], cfg.data.val_fraction, cfg.run.seed)


def holdout_data(cfg: TrainConfig) -> Samples:
    """The identities held back from training (``data.holdout_fraction``) for the guard."""
    return _split_identities(cfg)[1]


def _split_identities(cfg: TrainConfig) -> tuple[Samples, Samples]:
    return holdout_identities(read_samples(cfg.data), cfg.data.holdout_fraction, cfg.run.seed)


def load_init_weights(model: CFCDNet, source: str) -> set[str]:
    """Backbone (and head, when shapes match) from an ImageNet model or a cfcd checkpoint;
    returns the names of the loaded tensors."""
    converted = read_checkpoint(source)
    if converted.config.backbone != model.config.backbone:
        raise MismatchError(f"{source}: weights of a {converted.config.backbone}, "
                            f"but model.backbone = {model.config.backbone}")
    own = model.state_dict()
    state = {k: v for k, v in converted.model_state.items() if k in own and own[k].shape == v.shape}
    missing = [k for k in own if k.startswith("backbone.") and k not in state]
    if missing:
        raise MismatchError(f"{source}: no weights for {len(missing)} backbone keys, e.g. {missing[:3]}")
    model.load_state_dict(state, strict=False)
    return set(state)


def _config_differences(a: dict, b: dict) -> list[str]:
    return [f"{k}={b.get(k)!r} (here {a.get(k)!r})" for k in sorted(set(a) | set(b)) if a.get(k) != b.get(k)]


class TrainModule(nn.Module):
    """Model and classifier head as one module, so that DDP synchronises both."""

    def __init__(self, model: CFCDNet, head: nn.Module):
        super().__init__()
        self.model = model
        self.head = head

    def forward(self, x: torch.Tensor, labels: torch.Tensor, with_local: bool):
        if with_local:
            g, local = self.model(x, with_local=True)
        else:
            g, local = self.model(x), None
        return g, self.head.logits(g, labels), local


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
                raise Unavailable("run.tensorboard = true needs the tensorboard package: pip install tensorboard") from err
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


def _pause_point() -> tuple[int, int] | None:
    value = os.environ.get(PAUSE_ENV, "")
    if not value:
        return None
    stage, _, steps = value.partition(":")
    return int(stage), int(steps)


class StageTrainer:
    """Trains stage ``number`` of ``cfg``; ``train()`` returns the path of the finished stage's
    model. Every process keeps its own step records in ``records`` (with ``process_loss``, its
    own share before the average over processes)."""

    def __init__(self, cfg: TrainConfig, number: int, rt: TrainProcess, train: Samples, val: Samples,
                 predictions: list[int] | None = None, guard: Guard | None = None):
        self.cfg, self.number, self.rt, self.guard = cfg, number, rt, guard
        self.scfg: StageConfig = getattr(cfg, f"stage{number}")
        self.train_samples, self.val_samples = train, val
        self.folder = cfg.out_dir / f"stage{number}"
        self.head_init = getattr(self.scfg, "head_init", "random")
        if self.head_init not in HEAD_INITS:
            raise ConfigError(f"stage{number}.head_init must be one of {', '.join(HEAD_INITS)}, got {self.head_init!r}")
        self.classifier_init = getattr(self.scfg, "classifier_init", "random")
        if self.classifier_init not in CLASSIFIER_INITS:
            raise ConfigError(f"stage{number}.classifier_init must be one of {', '.join(CLASSIFIER_INITS)}, "
                              f"got {self.classifier_init!r}")
        if cfg.optim.batchnorm not in BATCHNORM_MODES:
            raise ConfigError(f"optim.batchnorm must be one of {', '.join(BATCHNORM_MODES)}, got {cfg.optim.batchnorm!r}")
        torch.manual_seed(cfg.run.seed)
        self.fresh_head = False  # a projection head with no loaded weights: head_init applies to it
        self.model, classifier = self._initial_model()
        self.fresh_classifier = classifier is None  # classifier_init applies to it
        self.transform = TrainTransform(cfg.data.image_size, preparation=self.model.config.preparation,
                                        crop_area=cfg.data.crop_area, exposure=cfg.data.exposure)
        self.stage = build_stage(cfg, number, train, rt, self.model.output_dim, predictions)
        self.head = self.stage.head
        if classifier is not None:
            self.head.weight.data.copy_(classifier)
        self.module = TrainModule(self.model, self.head).to(rt.device)
        self.on_gpu = rt.device.type == "cuda"
        if self.on_gpu and cfg.run.channels_last:
            self.module = self.module.to(memory_format=torch.channels_last)
        self.optimizer = torch.optim.SGD(
            self._param_groups(), lr=self.scfg.base_lr, momentum=cfg.optim.momentum,
            nesterov=cfg.optim.nesterov, weight_decay=cfg.optim.weight_decay,
        )
        self.amp_dtype = rt.autocast_dtype(cfg.run.amp)
        self.scaler = torch.amp.GradScaler("cuda", enabled=self.amp_dtype == torch.float16)
        self.epoch, self.step, self.global_step = 0, 0, 0
        self.unreadable: set[str] = set()
        self.records: list[dict] = []

    def _param_groups(self) -> list[dict]:
        """Backbone parameters at ``backbone_lr`` x the stage's rate (none, and no gradients,
        at 0), the rest at the rate; ``lr_scale`` is each group's factor."""
        if self.scfg.backbone_lr < 0:
            raise ConfigError(f"stage{self.number}.backbone_lr must be >= 0, got {self.scfg.backbone_lr}")
        backbone = list(self.model.backbone.parameters())
        mine = {id(p) for p in backbone}
        rest = [p for p in self.module.parameters() if id(p) not in mine]
        if self.scfg.backbone_lr == 0:
            for p in backbone:
                p.requires_grad_(False)
            return [{"params": rest, "lr_scale": 1.0}]
        return [{"params": backbone, "lr_scale": self.scfg.backbone_lr}, {"params": rest, "lr_scale": 1.0}]

    def _initial_model(self) -> tuple[CFCDNet, torch.Tensor | None]:
        """The first stage starts from backbone weights (``init``, partial); a later stage
        continues the previous stage's full checkpoint, classifier included, which must hold
        the model that ``model:`` describes."""
        model = CFCDNet(self.cfg.model)
        if self.number == 1:
            loaded = load_init_weights(model, self.scfg.init) if self.scfg.init else set()
            self.fresh_head = model.fc is not None and not any(k.startswith(("fc.", "bn.")) for k in loaded)
            return model, None
        source = self.scfg.init or str(self.cfg.out_dir / f"stage{self.number - 1}" / FINAL)
        converted = read_checkpoint(source)
        if converted.classifier is None:
            raise InputError(f"{source}: stage {self.number} continues a full stage-{self.number - 1} checkpoint, "
                             "but this one has no classifier")
        class_map = converted.extra.get("class_map")
        if class_map is not None and list(class_map) != self.train_samples.classes:
            raise MismatchError(f"{source}: its class map differs from the classes of data.train; "
                                "train stage 1 on the same data")
        differences = _config_differences(self.cfg.model.to_dict(), converted.config.to_dict())
        if differences:
            raise MismatchError(f"{source} holds a model with {', '.join(differences)}: set model.* to match it "
                                "(every stage trains the model that the recipe's model section describes)")
        model.load_state_dict(converted.model_state)
        return model, converted.classifier

    # -- checkpoints ---------------------------------------------------------------------------
    def _save(self, path: Path, full: bool) -> None:
        if not self.rt.main:
            return
        extra = {"class_map": self.train_samples.classes, "stage": self.number, "head": self.scfg.head,
                 "train_config": self.cfg.to_dict()}
        if full:
            # No schedule entry: the learning rate is a function of the config and the epoch.
            extra.update(
                epoch=self.epoch, step=self.step, global_step=self.global_step,
                optimizer_state=self.optimizer.state_dict(), scaler_state=self.scaler.state_dict(),
                rng_state=_rng_state(), unreadable=sorted(self.unreadable),
            )
        atomic_save(make_checkpoint(self.model, self.head.weight, **extra), path)

    def resume_from(self, path: Path) -> None:
        converted = read_checkpoint(path)
        state = converted.extra
        if state.get("stage") != self.number or "optimizer_state" not in state:
            raise InputError(f"{path}: not a stage-{self.number} training checkpoint")
        if list(state["class_map"]) != self.train_samples.classes:
            raise MismatchError(f"{path}: its class map differs from the classes of data.train")
        key = f"stage{self.number}"
        saved_cfg = train_config_from_dict(state["train_config"]) if "train_config" in state else None
        saved = getattr(saved_cfg, key).__dict__ if saved_cfg else {}
        here = getattr(self.cfg, key).__dict__
        changed = {f"{key}.{k}": (saved[k], here.get(k)) for k in saved if k != "init" and saved[k] != here.get(k)}
        fixed = [f"{key}.{k}" for k in RESUME_FIXED if f"{key}.{k}" in changed]
        if saved_cfg and saved["sampler"] == here["sampler"]:
            before, now = sampler_params(saved_cfg, key), sampler_params(self.cfg, key)
            fixed += [f"sampler.{here['sampler']}.{k}" for k in now if before.get(k) != now[k]]
            changed.update({f"sampler.{here['sampler']}.{k}": (before.get(k), now[k]) for k in now if before.get(k) != now[k]})
        if fixed:
            was, now = changed[fixed[0]]
            raise MismatchError(f"{path}: {fixed[0]} was {was!r} in this run, now {now!r}; "
                                "the sampler position depends on it: resume with the same value or use a new run.out_dir")
        if changed and self.rt.main:
            log.warning("%s: resuming with changed settings %s; the run will differ from an uninterrupted one",
                        path, ", ".join(f"{k}: {a!r} -> {b!r}" for k, (a, b) in changed.items()))
        self.model.load_state_dict(converted.model_state)
        self.head.weight.data.copy_(converted.classifier)
        self.fresh_head = self.fresh_classifier = False
        self.optimizer.load_state_dict(state["optimizer_state"])
        self.scaler.load_state_dict(state["scaler_state"])
        _set_rng_state(state["rng_state"])
        self.epoch, self.step, self.global_step = state["epoch"], state["step"], state["global_step"]
        self.unreadable = set(state.get("unreadable", []))
        if self.rt.main:
            log.info("stage %d: resuming from %s at epoch %d, step %d", self.number, path, self.epoch, self.step)

    # -- the loop ------------------------------------------------------------------------------
    def init_head(self) -> None:
        init_head(self.head_init, self.model, self.train_samples, self.cfg.data.image_size, self.cfg.run.hem_batch_size,
                  self.rt, seed=self.cfg.run.seed, num_workers=self.cfg.data.num_workers)

    def init_classifier(self) -> None:
        init_classifier_from_means(self.model, self.head, self.train_samples, self.cfg.data.image_size,
                                   self.cfg.run.hem_batch_size, self.rt, num_workers=self.cfg.data.num_workers)

    def _offer(self, name: str) -> None:
        """The guard scores the model as it is now (rank 0; the others wait)."""
        if self.guard is not None and self.rt.main:
            self.guard.offer(name, self.model)
        self.rt.barrier()

    def _set_train_mode(self, net: nn.Module) -> None:
        net.train()
        if self.cfg.optim.batchnorm == "frozen":
            for m in net.modules():
                if isinstance(m, nn.modules.batchnorm._BatchNorm):
                    m.eval()

    def _reduce(self, values: list[float]) -> list[float]:
        if not self.rt.distributed:
            return values
        t = torch.tensor(values, dtype=torch.float64, device=self.rt.device)
        dist.all_reduce(t)
        return t.tolist()

    def _train_step(self, net, x: torch.Tensor, y: torch.Tensor, indices: list[int]) -> dict:
        x = x.to(self.rt.device, non_blocking=True)
        if self.on_gpu and self.cfg.run.channels_last:
            x = x.contiguous(memory_format=torch.channels_last)
        y = y.to(self.rt.device, non_blocking=True)
        with self.rt.autocast(self.amp_dtype):
            g, logits, local = net(x, y, self.stage.needs_local)
        loss = self.stage.loss(StepOutputs(g, logits, local, self.stage.tuple_size), y)
        self.optimizer.zero_grad(set_to_none=True)
        self.scaler.scale(loss).backward()
        self.scaler.step(self.optimizer)
        self.scaler.update()
        values = self.stage.logs()
        images, index_sum = self._reduce([float(len(indices)), float(sum(indices))])
        # images and index_sum identify the global batch: the same for any number of processes.
        return {**values, "images": int(images), "index_sum": int(index_sum), "process_loss": float(loss.detach())}

    def _pause_if_asked(self) -> None:
        if _pause_point() == (self.number, self.global_step):
            print(f"{PAUSED_MARKER} stage={self.number} global_step={self.global_step}", file=sys.stderr, flush=True)
            while True:
                time.sleep(60)

    def train(self) -> Path:
        cfg, rt = self.cfg, self.rt
        self.folder.mkdir(parents=True, exist_ok=True)
        logger = StepLog(self.folder, rt.main, cfg.run.tensorboard)
        if self.fresh_head and self.head_init != "random":
            self.init_head()
        self.fresh_head = False
        if self.fresh_classifier and self.classifier_init == "means":
            self.init_classifier()
        self.fresh_classifier = False
        if self.guard is not None and self.number == 1 and self.global_step == 0 and START not in self.guard.scores:
            self._offer(START)
        net = self.module
        if rt.distributed:
            net = nn.parallel.DistributedDataParallel(self.module, device_ids=[rt.device.index] if self.on_gpu else None)
        dataset = TrainDataset(self.train_samples, self.transform)
        sampler = self.stage.sampler
        while self.epoch < self.scfg.epochs:
            lr = learning_rate(self.scfg, self.epoch, cfg.optim.warmup_factor)
            for group in self.optimizer.param_groups:
                group["lr"] = lr * group["lr_scale"]
            sampler.set_epoch(self.epoch, self.step)
            loader = DataLoader(dataset, batch_sampler=sampler, num_workers=cfg.data.num_workers,
                                collate_fn=collate, pin_memory=self.on_gpu)
            self._set_train_mode(net)
            bar = tqdm(total=sampler.steps_per_epoch(), initial=self.step, disable=not rt.main, unit="step",
                       desc=f"stage {self.number} epoch {self.epoch + 1}/{self.scfg.epochs}")
            tic = time.perf_counter()
            for x, y, indices, bad in loader:
                for path in bad:
                    if path not in self.unreadable:
                        log.warning("unreadable training image skipped: %s", path)
                self.unreadable.update(bad)
                stats = self._train_step(net, x, y, indices)
                now = time.perf_counter()
                record = {"stage": self.number, "epoch": self.epoch, "step": self.step, "global_step": self.global_step,
                          **stats, "lr": lr, "img_per_s": self.scfg.batch_size / (now - tic)}
                tic = now
                self.records.append(record)
                logger.write({k: v for k, v in record.items() if k != "process_loss"})
                bar.update(1)
                bar.set_postfix(loss=f"{stats['loss']:.3f}")
                self.step += 1
                self.global_step += 1
                if cfg.run.checkpoint_every and self.global_step % cfg.run.checkpoint_every == 0:
                    self._save(self.folder / LAST, full=True)
                self._pause_if_asked()
            bar.close()
            self._end_epoch(logger)
        self._save(self.folder / FINAL, full=False)
        rt.barrier()
        return self.folder / FINAL

    def _end_epoch(self, logger: StepLog) -> None:
        rt = self.rt
        for part in rt.gather_objects(sorted(self.unreadable)):
            self.unreadable.update(part)
        record = {"stage": self.number, "epoch_end": self.epoch, "global_step": self.global_step,
                  "unreadable": len(self.unreadable)}
        if len(self.val_samples):
            preds, _, _ = predict(self.model, self.head, self.val_samples, self.cfg.data.image_size,
                                  self.cfg.run.hem_batch_size, rt, amp=self.amp_dtype, progress=False)
            known = [(p, y) for p, y in zip(preds, self.val_samples.labels) if p >= 0]
            record["val_top1"] = sum(p == y for p, y in known) / max(1, len(known))
        logger.write(record)
        self._offer(f"stage{self.number} epoch {self.epoch + 1}")
        if rt.main and self.unreadable:
            (self.folder / "unreadable.txt").write_text("".join(p + "\n" for p in sorted(self.unreadable)))
        self.epoch, self.step = self.epoch + 1, 0
        self._save(self.folder / LAST, full=True)


def run(cfg: TrainConfig, stages: str = "both", resume: bool = False,
        on_stage_end: Callable[[StageTrainer], None] | None = None) -> dict[str, Path]:
    """Train ``stages`` ("1", "2" or "both"; both = stage 1, hard-negative table, stage 2); a
    stage of 0 epochs is skipped (no hard-negative table either) and has no entry in the result.

    With ``resume``, a finished stage (``model.pt`` present) is skipped, an interrupted one
    continues from ``last.pt``; without it, an existing ``last.pt`` is an error rather than
    something to overwrite. ``on_stage_end(trainer)`` is called in every process after each
    stage it trains (e.g. to keep each process's own state). With identities held back
    (``data.holdout_fraction``), the guard scores the starting model and every epoch on them and
    keeps the best as ``out["best"]`` (``cfcd.train.guard``; ``guard.report`` says how it went).
    """
    if stages not in ("1", "2", "both"):
        raise ConfigError(f"stage must be 1, 2 or both, got {stages!r}")
    rt = init_runtime(cfg.run.device)
    train, val = training_data(cfg)
    held = holdout_data(cfg)
    if rt.main:
        log.info("training set: %d images of %d classes (%d held out for validation; %d identities, %d images "
                 "held back for the best-model guard) from %s", len(train), train.num_classes, len(val),
                 len(set(held.labels)), len(held), cfg.data.train)
    guard = Guard(cfg.out_dir, held, rt.device.type, distractor_photos(train, held, cfg.run.seed)) if len(held) else None
    if guard is not None and cfg.stage1.init and INIT not in guard.scores and stages in ("1", "both"):
        if rt.main:
            from ..model import load_model

            guard.offer(INIT, load_model(cfg.stage1.init))
        rt.barrier()
    out: dict[str, Path] = {}
    for stage in (1, 2):
        if stages not in (str(stage), "both"):
            continue
        if getattr(cfg, f"stage{stage}").epochs == 0:
            # a recipe may leave a stage out (finetune-small's stage 2: nothing for the local triplet to move)
            if rt.main:
                log.info("stage %d: 0 epochs, skipped", stage)
            continue
        folder = cfg.out_dir / f"stage{stage}"
        if resume and (folder / FINAL).is_file():
            out[f"stage{stage}"] = folder / FINAL
            continue
        if (folder / LAST).is_file() and not resume:
            raise AlreadyExists(f"{folder / LAST} exists: pass --resume to continue that run, or choose another run.out_dir")
        predictions = None
        if stage == 2:
            table = cfg.hem_table
            if stages == "both" and not (resume and table.is_file()):
                hem(cfg, out["stage1"], train, rt)
            predictions = read_table(table, train) if table.is_file() else None
        trainer = StageTrainer(cfg, stage, rt, train, val, predictions, guard)
        if resume and (folder / LAST).is_file():
            trainer.resume_from(folder / LAST)
        out[f"stage{stage}"] = trainer.train()
        if on_stage_end is not None:
            on_stage_end(trainer)
    if guard is not None:
        out["best"] = guard.out_dir / BEST
    return out
