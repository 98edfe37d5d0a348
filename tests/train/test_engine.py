"""Training end to end on CPU: both stages, resume after an interruption, two gloo processes."""

from __future__ import annotations

import json
import os
import socket
import subprocess
import sys
from pathlib import Path

import pytest
import torch
from tinytrain import tiny_overrides

from cfcd.cli import main
from cfcd.model import load_model, read_checkpoint
from cfcd.train.config import load_config
from cfcd.train.datasets import read_samples
from cfcd.train.hem import read_table


def steps(run: Path, stage: int) -> dict[int, dict]:
    """Step records of a stage's log; a step logged twice (re-run after a resume) keeps its last record."""
    out = {}
    for line in (run / f"stage{stage}" / "log.jsonl").read_text().splitlines():
        rec = json.loads(line)
        if "step" in rec:
            out[rec["global_step"]] = rec
    return out


def test_stage1_hem_stage2_end_to_end(class_folder, tmp_path, capsys):
    run = tmp_path / "run"
    broken = class_folder / "class2" / "broken.jpg"
    broken.write_bytes(b"\xff\xd8 truncated")
    assert main(["train", "--config", "cpu-mobilenet", *tiny_overrides(class_folder, run)]) == 0
    s1, s2 = steps(run, 1), steps(run, 2)
    assert len(s1) == 6 and len(s2) == 3  # 25 images / batch 8 = 3 steps per epoch
    ends = [json.loads(x) for x in (run / "stage1" / "log.jsonl").read_text().splitlines() if "epoch_end" in x]
    assert ends[-1]["unreadable"] == 1 and (run / "stage1" / "unreadable.txt").read_text() == f"{broken}\n"
    assert all(r["triplet"] == 0 for r in s1.values()) and any(r["triplet"] > 0 for r in s2.values())
    for rec in (*s1.values(), *s2.values()):
        for key in ("loss", "ce", "scale", "margin", "median_cos", "lr", "img_per_s"):
            assert key in rec and rec[key] == rec[key]
    assert s1[0]["lr"] == pytest.approx(0.001)  # warm-up starts at 0.1 x base
    samples = read_samples(load_config("cpu-mobilenet", tiny_overrides(class_folder, run)).data)
    assert len(read_table(run / "hem.csv", samples)) == 25
    assert len((run / "hem.csv").read_text().splitlines()) == 1 + 24  # no row for the unreadable image
    ckpt = read_checkpoint(run / "stage2" / "model.pt")
    assert ckpt.classifier.shape == (4, 32) and ckpt.extra["class_map"] == ["class0", "class1", "class2", "class3"]
    model = load_model(run / "stage2" / "model.pt")
    assert model(torch.randn(2, 3, 64, 64)).shape == (2, 32)
    # the table alone, on demand
    (run / "hem.csv").unlink()
    assert main(["hem", "--config", "cpu-mobilenet", *tiny_overrides(class_folder, run)]) == 0
    assert (run / "hem.csv").is_file()


def test_killed_run_resumes_with_the_same_losses(class_folder, tmp_path):
    full, cut = tmp_path / "full", tmp_path / "cut"
    extra = ["stage2.epochs=0", "run.checkpoint_every=2"]
    assert main(["train", "--config", "cpu-mobilenet", "--stage", "1", *tiny_overrides(class_folder, full), *extra]) == 0
    # "Killed" after 5 steps, mid-epoch 2: the last checkpoint is the one of step 4.
    args = ["train", "--config", "cpu-mobilenet", "--stage", "1", *tiny_overrides(class_folder, cut), *extra]
    assert main([*args, "run.stop_after_steps=5"]) == 0
    assert not (cut / "stage1" / "model.pt").exists()
    assert read_checkpoint(cut / "stage1" / "last.pt").extra["global_step"] == 4
    assert main(args) == 2, "refuses to overwrite an interrupted run without --resume"
    assert main([*args, "--resume"]) == 0
    a, b = steps(full, 1), steps(cut, 1)
    assert sorted(a) == sorted(b) == list(range(6))
    for k in a:
        assert b[k]["loss"] == pytest.approx(a[k]["loss"], rel=1e-5, abs=1e-6), k
    final = [torch.load(p / "stage1" / "model.pt", weights_only=True)["model_state"] for p in (full, cut)]
    for key in final[0]:
        torch.testing.assert_close(final[0][key], final[1][key], rtol=1e-5, atol=1e-6)


WORKER = """
import sys, torch
torch.set_num_threads(1)
from cfcd.train.config import load_config
from cfcd.train.engine import run
sys.path.insert(0, {tests!r})
from tinytrain import tiny_overrides
cfg = load_config("cpu-mobilenet", tiny_overrides({data!r}, {out!r}) + ["stage1.epochs=1"])
result = run(cfg, "both")
rank = torch.distributed.get_rank()
module = torch.load(result["stage2"], weights_only=True)
torch.save(module, {out!r} + f"/rank{{rank}}.pt")
"""


def test_two_gloo_processes_agree_and_match_the_global_batch(class_folder, tmp_path):
    out = tmp_path / "ddp"
    script = tmp_path / "worker.py"
    script.write_text(WORKER.format(tests=str(Path(__file__).parent), data=str(class_folder), out=str(out)))
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    with socket.socket() as sock:  # a free port for the rendezvous
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]
    cmd = [sys.executable, "-m", "torch.distributed.run", "--nproc-per-node", "2", "--master-port", str(port), str(script)]
    proc = subprocess.run(cmd, capture_output=True, text=True, env=env, timeout=240)
    assert proc.returncode == 0, proc.stderr[-3000:]
    ranks = [torch.load(out / f"rank{r}.pt", weights_only=True) for r in range(2)]
    for key, value in ranks[0]["model_state"].items():
        assert torch.equal(value, ranks[1]["model_state"][key]), key
    assert torch.equal(ranks[0]["classifier"], ranks[1]["classifier"])
    # the same global batches as one process (BatchNorm statistics are per process, so losses
    # differ slightly; the images of every step do not)
    single = tmp_path / "single"
    assert main(["train", "--config", "cpu-mobilenet", "--stage", "1",
                 *tiny_overrides(class_folder, single), "stage1.epochs=1", "stage2.epochs=0"]) == 0
    two, one = steps(out, 1), steps(single, 1)
    assert [(r["images"], r["index_sum"]) for r in two.values()] == [(r["images"], r["index_sum"]) for r in one.values()]
    assert all(r["images"] == 8 for r in two.values())
