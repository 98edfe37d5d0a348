"""The small-collection recipe's knobs: stageN.backbone_lr and the finetune-small recipe."""

from __future__ import annotations

import pytest
import torch
from tinytrain import tiny_overrides

from cfcd.train.config import load_config
from cfcd.train.engine import StageTrainer, learning_rate, training_data
from cfcd.train.runtime import init_runtime


def _trained(class_folder, tmp_path, *extra):
    cfg = load_config("cpu-mobilenet", tiny_overrides(class_folder, tmp_path / "run") + ["stage1.epochs=1", *extra])
    train, val = training_data(cfg)
    trainer = StageTrainer(cfg, 1, init_runtime("cpu"), train, val)
    before = {k: v.detach().clone() for k, v in trainer.model.state_dict().items()}
    trainer.train()
    return cfg, trainer, before


def test_backbone_lr_zero_freezes_the_backbone_and_trains_the_head(class_folder, tmp_path):
    _, trainer, before = _trained(class_folder, tmp_path, "stage1.backbone_lr=0", "optim.batchnorm=frozen")
    after = trainer.model.state_dict()
    assert all(torch.equal(before[k], after[k]) for k in after if k.startswith("backbone."))
    assert not torch.equal(before["fc.weight"], after["fc.weight"])


def test_backbone_lr_scales_the_backbones_rate(class_folder, tmp_path):
    cfg, trainer, _ = _trained(class_folder, tmp_path, "stage1.backbone_lr=0.25")
    lr = learning_rate(cfg.stage1, 0, cfg.optim.warmup_factor)
    backbone, rest = trainer.optimizer.param_groups
    assert backbone["lr"] == pytest.approx(0.25 * lr) and rest["lr"] == pytest.approx(lr)
    assert {id(p) for p in backbone["params"]} == {id(p) for p in trainer.model.backbone.parameters()}


def test_finetune_small_recipe():
    cfg = load_config("finetune-small")
    assert cfg.stage1.head_init == "whiten" and cfg.stage1.classifier_init == "means"
    assert cfg.stage1.backbone_lr == 0 and cfg.optim.batchnorm == "frozen"
    assert cfg.data.holdout_fraction > 0 and cfg.stage1.init == "mobilenet_v2-imagenet"
    assert load_config("r50-gldv2").data.holdout_fraction == 0 == load_config("r101-gldv2").data.holdout_fraction


def test_madacos_k_classes_from_the_config_is_the_training_class_count(class_folder, tmp_path):
    cfg = load_config("cpu-mobilenet", tiny_overrides(class_folder, tmp_path / "run") + ["loss.madacos.k=classes"])
    train, val = training_data(cfg)
    trainer = StageTrainer(cfg, 1, init_runtime("cpu"), train, val)
    assert trainer.head.k == train.num_classes < 100
    assert load_config("finetune-small").loss["madacos"]["k"] == "classes"


def test_a_stage_of_zero_epochs_is_skipped(class_folder, tmp_path):
    from cfcd.train.engine import run
    cfg = load_config("cpu-mobilenet", tiny_overrides(class_folder, tmp_path / "run") + ["stage1.epochs=1", "stage2.epochs=0"])
    out = run(cfg, "both")
    assert (out["stage1"]).is_file() and "stage2" not in out
    assert not (tmp_path / "run" / "stage2").exists() and not cfg.hem_table.exists()
