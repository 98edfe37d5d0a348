"""docs/extending.md's worked examples: ArcFace as a head and a class-balanced sampler train, and
the page shows the real files."""

from __future__ import annotations

import json
import re
from pathlib import Path

from tinytrain import tiny_overrides

from cfcd.cli import main
from cfcd.losses import registry
from cfcd.model import read_checkpoint
from cfcd.train.registry import SAMPLERS

ROOT = Path(__file__).resolve().parents[2]


def test_the_page_shows_the_shipped_file_and_its_registry_line():
    page = (ROOT / "docs" / "extending.md").read_text()
    blocks = re.findall(r"```python\n(.*?)```", page, flags=re.S)
    assert blocks[0] == (ROOT / "src" / "cfcd" / "losses" / "arcface.py").read_text()
    line = 'HEADS.register("arcface", "cfcd.losses.arcface:ArcFace")'
    assert line in blocks[1] and line in (ROOT / "src" / "cfcd" / "losses" / "registry.py").read_text()
    assert registry.HEADS["arcface"].__name__ == "ArcFace"


def test_arcface_head_trains_a_few_steps_and_mines_hard_negatives(class_folder, tmp_path):
    run = tmp_path / "run"
    args = ["train", "--config", "cpu-mobilenet", "--stage", "1", *tiny_overrides(class_folder, run),
            "stage1.head=arcface", "loss.arcface.scale=30", "loss.arcface.margin=0.3"]
    assert main(args) == 0
    records = [json.loads(x) for x in (run / "stage1" / "log.jsonl").read_text().splitlines() if '"step"' in x]
    assert len(records) == 6
    assert all(r["scale"] == 30 and r["margin"] == 0.3 and r["loss"] == r["cross_entropy"] > 0 for r in records)
    ckpt = read_checkpoint(run / "stage1" / "model.pt")
    assert ckpt.extra["head"] == "arcface" and ckpt.classifier.shape == (4, 32)
    # the hard-negative table comes from the ArcFace classifier's predictions
    assert main(["hem", "--config", "cpu-mobilenet", *tiny_overrides(class_folder, run), "stage1.head=arcface"]) == 0
    assert len((run / "hem.csv").read_text().splitlines()) == 1 + 24


def test_the_page_shows_the_shipped_sampler_and_its_registry_line():
    page = (ROOT / "docs" / "extending.md").read_text()
    blocks = re.findall(r"```python\n(.*?)```", page, flags=re.S)
    assert blocks[2] == (ROOT / "src" / "cfcd" / "train" / "balanced.py").read_text()
    line = 'SAMPLERS.register("balanced", "cfcd.train.balanced:balanced")'
    assert line in blocks[3] and line in (ROOT / "src" / "cfcd" / "train" / "registry.py").read_text()
    assert SAMPLERS.parameters("balanced", skip=1) == {"per_class": 4}


def test_balanced_sampler_trains_with_its_parameter_and_a_resume_with_another_is_refused(class_folder, tmp_path, capsys):
    run = tmp_path / "run"
    args = ["train", "--config", "cpu-mobilenet", "--stage", "1", *tiny_overrides(class_folder, run),
            "stage1.sampler=balanced", "sampler.balanced.per_class=3", "stage1.batch_size=6", "stage1.epochs=1"]
    assert main(args) == 0  # a batch of 6 is whole groups of 3, not of the default 4
    records = [json.loads(x) for x in (run / "stage1" / "log.jsonl").read_text().splitlines() if '"step"' in x]
    assert len(records) == 4 and all(r["images"] == 6 for r in records)  # 24 images, batches of 2 classes x 3
    (run / "stage1" / "model.pt").unlink()  # as if the stage had been cut short after its last checkpoint
    assert main([*args, "sampler.balanced.per_class=2", "--resume"]) == 2
    assert "sampler.balanced.per_class was 3 in this run, now 2" in capsys.readouterr().err
