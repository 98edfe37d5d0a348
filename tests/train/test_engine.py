"""Training end to end on CPU: both stages; 2 gloo processes = 1 process, rank by rank; a real
training process SIGKILLed mid-epoch (stage 1 and stage 2) resumes to the uninterrupted run."""

from __future__ import annotations

import json
import os
import shutil
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path

import pytest
import torch
from tinytrain import make_class_folder, tiny_overrides

from cfcd.cli import main
from cfcd.model import load_model, read_checkpoint
from cfcd.train.config import load_config
from cfcd.train.datasets import read_samples
from cfcd.train.engine import PAUSE_ENV, PAUSED_MARKER, run
from cfcd.train.hem import read_table

TESTS = Path(__file__).parent


def steps(run: Path, stage: int) -> dict[int, dict]:
    """Step records of a stage's log; a step logged twice (re-run after a resume) keeps its last record."""
    out = {}
    for line in (run / f"stage{stage}" / "log.jsonl").read_text().splitlines():
        rec = json.loads(line)
        if "step" in rec:
            out[rec["global_step"]] = rec
    return out


def final_state(run: Path, stage: int) -> dict[str, torch.Tensor]:
    ckpt = torch.load(run / f"stage{stage}" / "model.pt", weights_only=True)
    return {**ckpt["model_state"], "classifier": ckpt["classifier"]}


def test_stage1_hem_stage2_end_to_end(class_folder, tmp_path, capsys):
    run_dir = tmp_path / "run"
    broken = class_folder / "class2" / "broken.jpg"
    broken.write_bytes(b"\xff\xd8 truncated")
    assert main(["train", "--config", "cpu-mobilenet", *tiny_overrides(class_folder, run_dir)]) == 0
    s1, s2 = steps(run_dir, 1), steps(run_dir, 2)
    assert len(s1) == 6 and len(s2) == 3  # 25 images / batch 8 = 3 steps per epoch
    ends = [json.loads(x) for x in (run_dir / "stage1" / "log.jsonl").read_text().splitlines() if "epoch_end" in x]
    assert ends[-1]["unreadable"] == 1 and (run_dir / "stage1" / "unreadable.txt").read_text() == f"{broken}\n"
    # stage 1: cross-entropy only; stage 2: cross-entropy + the triplet, loss = their weighted sum
    assert all("local_triplet" not in r for r in s1.values()) and any(r["local_triplet"] > 0 for r in s2.values())
    for rec in s2.values():
        assert rec["loss"] == pytest.approx(rec["cross_entropy"] + rec["local_triplet"])
    for rec in (*s1.values(), *s2.values()):
        for key in ("loss", "cross_entropy", "scale", "margin", "median_cos", "lr", "img_per_s"):
            assert key in rec and rec[key] == rec[key]
    assert s1[0]["lr"] == pytest.approx(0.001)  # warm-up starts at 0.1 x base
    samples = read_samples(load_config("cpu-mobilenet", tiny_overrides(class_folder, run_dir)).data)
    assert len(read_table(run_dir / "hem.csv", samples)) == 25
    assert len((run_dir / "hem.csv").read_text().splitlines()) == 1 + 24  # no row for the unreadable image
    ckpt = read_checkpoint(run_dir / "stage2" / "model.pt")
    assert ckpt.classifier.shape == (4, 32) and ckpt.extra["class_map"] == ["class0", "class1", "class2", "class3"]
    assert "scheduler" not in torch.load(run_dir / "stage2" / "last.pt", weights_only=True)
    model = load_model(run_dir / "stage2" / "model.pt")
    assert model(torch.randn(2, 3, 64, 64)).shape == (2, 32)
    # the table alone, on demand
    (run_dir / "hem.csv").unlink()
    assert main(["hem", "--config", "cpu-mobilenet", *tiny_overrides(class_folder, run_dir)]) == 0
    assert (run_dir / "hem.csv").is_file()


def test_stage2_trains_the_configured_model(class_folder, tmp_path):
    run_dir = tmp_path / "run"
    args = ["train", "--config", "cpu-mobilenet", *tiny_overrides(class_folder, run_dir), "stage1.epochs=1"]
    assert main([*args, "--stage", "1"]) == 0
    # cfg.model is not ignored in stage 2: a model section that differs from stage 1's is an error
    with pytest.raises(ValueError, match="dim=32 .here 16.: set model"):
        run(load_config("cpu-mobilenet", [*args[3:], "model.dim=16"]), "2")


# -- 2 processes = 1 process ------------------------------------------------------------------

WORKER = """
import sys, torch
torch.set_num_threads(1)
sys.path.insert(0, {tests!r})
from cfcd.train.config import load_config
from cfcd.train.engine import run
from tinytrain import tiny_overrides

def keep(trainer):  # this process's own state, not the file rank 0 writes
    torch.save({{"state": {{**trainer.model.state_dict(), "classifier": trainer.head.weight.detach().clone()}},
                "records": trainer.records}}, {out!r} + f"/rank{{trainer.rt.rank}}-stage{{trainer.number}}.pt")

run(load_config("cpu-mobilenet", tiny_overrides({data!r}, {out!r}) + {extra!r}), "both", on_stage_end=keep)
"""

# BatchNorm in eval mode: with per-process batch statistics 2 x 4 images differ from 1 x 8 by
# design; frozen, every remaining cross-process computation (sampler slices, MadaCos' gathered
# statistics, the triplet's rescaling, DDP's gradient average) must make them agree.
FROZEN = ["optim.batchnorm=frozen", "stage1.epochs=1", "stage2.epochs=2"]


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def test_two_gloo_processes_equal_one_process_rank_by_rank(class_folder, tmp_path):
    out = tmp_path / "ddp"
    out.mkdir()
    script = tmp_path / "worker.py"
    script.write_text(WORKER.format(tests=str(TESTS), data=str(class_folder), out=str(out), extra=FROZEN))
    cmd = [sys.executable, "-m", "torch.distributed.run", "--nproc-per-node", "2", "--master-port", str(_free_port()),
           str(script)]
    proc = subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True,
                            env={**os.environ, "OMP_NUM_THREADS": "1"})
    # one process, in this process, while the two run
    single: dict[int, object] = {}
    run(load_config("cpu-mobilenet", tiny_overrides(class_folder, tmp_path / "single") + FROZEN), "both",
        on_stage_end=lambda t: single.update({t.number: t}))
    output, _ = proc.communicate(timeout=300)
    assert proc.returncode == 0, output[-3000:]

    for stage in (1, 2):
        one = single[stage]
        ranks = [torch.load(out / f"rank{r}-stage{stage}.pt", weights_only=True) for r in range(2)]
        assert len(one.records) == len(ranks[0]["records"]) == len(ranks[1]["records"]) == 3 * stage
        for step, (mine, r0, r1) in enumerate(zip(one.records, ranks[0]["records"], ranks[1]["records"])):
            # the same global batch, split in two halves
            assert (r0["images"], r0["index_sum"]) == (r1["images"], r1["index_sum"]) == (8, mine["index_sum"])
            for r in (r0, r1):  # every rank logs the global values, equal to one process's
                for key in ("loss", "cross_entropy", "scale", "margin", "median_cos", "local_triplet"):
                    if key in mine:
                        assert r[key] == pytest.approx(mine[key], rel=1e-4, abs=1e-5), (stage, step, key)
            # each rank's own share: their mean is the one-process loss (the loss-term contract)
            assert (r0["process_loss"] + r1["process_loss"]) / 2 == pytest.approx(mine["process_loss"], rel=1e-4, abs=1e-5)
        assert any(r0["process_loss"] != r1["process_loss"] for r0, r1 in zip(ranks[0]["records"], ranks[1]["records"]))
        if stage == 2:
            assert any(r["local_triplet"] > 0 for r in one.records)
        mine = {**one.model.state_dict(), "classifier": one.head.weight.detach()}
        for key, value in mine.items():
            assert torch.equal(ranks[0]["state"][key], ranks[1]["state"][key]), (stage, key)  # DDP kept them in step
            torch.testing.assert_close(ranks[0]["state"][key], value, rtol=1e-4, atol=1e-5, msg=f"stage {stage} {key}")
    # training moved the weights, so the agreement is not that of untouched tensors
    assert not torch.allclose(single[1].head.weight, single[2].head.weight)


# -- SIGKILL mid-epoch, then --resume ----------------------------------------------------------

RESUME = ["stage2.epochs=2", "run.checkpoint_every=2"]


@pytest.fixture(scope="module")
def uninterrupted(tmp_path_factory):
    """(data, run folder) of one uninterrupted run of both stages (3 steps per epoch)."""
    torch.set_num_threads(1)
    root = tmp_path_factory.mktemp("resume")
    data = make_class_folder(root / "data")
    assert main(["train", "--config", "cpu-mobilenet", *tiny_overrides(data, root / "full"), *RESUME]) == 0
    return data, root / "full"


def _kill_after(args: list[str], stage: int, global_steps: int, log: Path) -> None:
    """Start ``cfcd train`` as a real process, wait until it has done ``global_steps`` steps of
    ``stage`` (it pauses there, see ``PAUSE_ENV``), SIGKILL it."""
    env = {**os.environ, "OMP_NUM_THREADS": "1", "PYTHONPATH": os.pathsep.join(sys.path), PAUSE_ENV: f"{stage}:{global_steps}"}
    with open(log, "w") as err:
        proc = subprocess.Popen([sys.executable, "-m", "cfcd", *args], stdout=subprocess.DEVNULL, stderr=err, env=env)
        deadline = time.monotonic() + 300
        while PAUSED_MARKER not in log.read_text():
            assert proc.poll() is None, f"training ended before the kill point:\n{log.read_text()[-3000:]}"
            assert time.monotonic() < deadline, "training never reached the kill point"
            time.sleep(0.2)
        proc.send_signal(signal.SIGKILL)
        assert proc.wait(timeout=60) == -signal.SIGKILL


@pytest.mark.parametrize("stage", [1, 2])
def test_sigkilled_run_resumes_to_the_uninterrupted_run(uninterrupted, tmp_path, stage):
    data, full = uninterrupted
    cut = tmp_path / "cut"
    args = ["train", "--config", "cpu-mobilenet", "--stage", str(stage), *tiny_overrides(data, cut), *RESUME]
    if stage == 2:  # start from the uninterrupted run's stage 1 and hard-negative table
        (cut / "stage1").mkdir(parents=True)
        shutil.copy(full / "stage1" / "model.pt", cut / "stage1" / "model.pt")
        shutil.copy(full / "hem.csv", cut / "hem.csv")
    # killed after 5 steps of the stage: mid-epoch 2 (3 steps per epoch), one step after the
    # checkpoint of step 4, so the resumed run must redo step 5 from the checkpoint
    _kill_after(args, stage, 5, tmp_path / "stderr.txt")
    state = torch.load(cut / f"stage{stage}" / "last.pt", weights_only=True)
    assert (state["epoch"], state["step"], state["global_step"]) == (1, 1, 4)
    assert not (cut / f"stage{stage}" / "model.pt").exists()
    assert max(steps(cut, stage)) == 4  # steps 0..4 logged, the kill came before step 5

    assert main(args) == 2, "refuses to overwrite an interrupted run without --resume"
    assert main([*args, "--resume"]) == 0
    a, b = steps(full, stage), steps(cut, stage)
    assert sorted(a) == sorted(b) == list(range(6))  # 2 epochs of 3 steps
    for k in a:
        assert (b[k]["images"], b[k]["index_sum"]) == (a[k]["images"], a[k]["index_sum"]), k
        assert b[k]["loss"] == pytest.approx(a[k]["loss"], rel=1e-5, abs=1e-6), k
    want, got = final_state(full, stage), final_state(cut, stage)
    for key in want:
        torch.testing.assert_close(got[key], want[key], rtol=1e-5, atol=1e-6, msg=f"stage {stage} {key}")
