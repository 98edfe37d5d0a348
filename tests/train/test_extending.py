"""docs/extending.md's worked example: ArcFace as a head trains, and the page shows the real file."""

from __future__ import annotations

import json
import re
from pathlib import Path

from tinytrain import tiny_overrides

from cfcd.cli import main
from cfcd.losses import registry
from cfcd.model import read_checkpoint

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
