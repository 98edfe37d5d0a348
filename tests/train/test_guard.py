"""The best-model guard: identities held back from `cfcd train`, the starting and the trained
model scored on them, the better one kept as best.pt, and a report that names both scores."""

from __future__ import annotations

import json

import torch
from tinytrain import make_class_folder, tiny_overrides

from cfcd.cli import main
from cfcd.model import CFCDNet, ModelConfig, load_model, read_checkpoint
from cfcd.train.config import load_config
from cfcd.train.engine import holdout_data, training_data
from cfcd.train import guard as guard_module
from cfcd.train.datasets import Samples
from cfcd.train.guard import BEST, DISTRACTORS_PER_PHOTO, Guard, distractor_photos, holdout_map, report


def _overrides(tmp_path):
    data = make_class_folder(tmp_path / "data", num_classes=8, per_class=4)
    return tiny_overrides(data, tmp_path / "run") + ["data.holdout_fraction=0.25"]


def test_train_keeps_the_better_model_and_reports_both_scores(tmp_path, capsys):
    overrides = _overrides(tmp_path)
    assert main(["train", "--config", "cpu-mobilenet", *overrides]) == 0
    out = capsys.readouterr().out
    cfg = load_config("cpu-mobilenet", overrides)
    run_dir = cfg.out_dir
    held = holdout_data(cfg)
    train, _ = training_data(cfg)
    # two whole identities held back, none of them trained on
    held_ids = {held.classes[y] for y in held.labels}
    assert len(held_ids) == 2 and len(held) == 8 and not held_ids & set(train.classes)
    assert read_checkpoint(run_dir / "stage2" / "model.pt").extra["class_map"] == train.classes

    state = json.loads((run_dir / "guard.json").read_text())
    scores = state["scores"]
    assert list(scores) == ["start", "stage1 epoch 1", "stage1 epoch 2", "stage2 epoch 1"]
    # the database holds training photos as distractors, none of a held-back identity
    distractors = distractor_photos(train, held, cfg.run.seed)
    assert len(distractors) == min(len(train), DISTRACTORS_PER_PHOTO * len(held)) > 0
    assert set(distractors) <= set(map(str, train.paths)) and not set(distractors) & set(map(str, held.paths))
    assert state["held_back"] == {"photos": 8, "identities": 2, "distractors": len(distractors)}
    # the scores are those of the models on disk, and best.pt holds the best of them
    trained = holdout_map(load_model(run_dir / "stage2" / "model.pt"), held, distractors=distractors)
    assert abs(trained - scores["stage2 epoch 1"]) < 1e-6
    best = holdout_map(load_model(run_dir / BEST), held, distractors=distractors)
    assert abs(best - max(scores.values())) < 1e-6 and scores[state["best"]] == max(scores.values())
    # the report names the starting and the trained model's scores
    assert f"starting model (start): {scores['start']:.2f}" in out
    assert f"trained model (stage2 epoch 1): {scores['stage2 epoch 1']:.2f}" in out
    assert f"best: {state['best']}" in out
    assert ("WARNING" in out) == (scores["stage2 epoch 1"] < scores["start"])


def test_guard_keeps_the_better_candidate_in_either_order(tmp_path, monkeypatch):
    torch.manual_seed(0)
    models = [CFCDNet(ModelConfig(backbone="mobilenet_v2", dim=16)).eval() for _ in range(2)]
    # the guard scores a copy of the model: tell the two apart by a weight
    marks = {float(m.fc.weight[0, 0].detach()): value for m, value in zip(models, (40.0, 55.0))}
    monkeypatch.setattr(guard_module, "holdout_map", lambda net, held, device="cpu", distractors=(): marks[float(net.fc.weight[0, 0])])
    held = Samples(["a.jpg", "b.jpg"], [0, 0], ["x"])
    for order in ((0, 1), (1, 0)):
        out = tmp_path / f"guard{order[0]}"
        guard = Guard(out, held)
        for k in order:
            guard.offer(f"model {k}", models[k])
        assert guard.best == "model 1"
        kept = load_model(out / BEST)
        for key, value in models[1].state_dict().items():
            assert torch.equal(kept.state_dict()[key], value), key
        assert read_checkpoint(out / BEST).extra["guard"] == {"candidate": "model 1", "holdout_map": 55.0}
        # a resumed guard (a new process) knows the scores so far; with another held-back set
        # (here: distractors added) they do not compare, and every candidate is scored again
        assert Guard(out, held).scores == {"model 0": 40.0, "model 1": 55.0}
        assert Guard(out, held, distractors=["c.jpg"]).scores == {}
    # a tie goes to the later candidate (the trained model, when all score 100)
    marks[float(models[0].fc.weight[0, 0].detach())] = 55.0
    guard = Guard(tmp_path / "tie", held)
    guard.offer("start", models[1])
    guard.offer("trained", models[0])
    assert guard.best == "trained"


def test_report_warns_when_training_made_it_worse(tmp_path):
    held = {"photos": 8, "identities": 2}
    (tmp_path / "guard.json").write_text(json.dumps(
        {"held_back": held, "scores": {"init": 70.0, "start": 72.5, "stage1 epoch 1": 71.0, "stage2 epoch 1": 60.25},
         "best": "start"}))
    text, worse = report(tmp_path)
    assert worse and "WARNING" in text and "60.25" in text and "72.50" in text and "best: start (72.50)" in text
    (tmp_path / "guard.json").write_text(json.dumps(
        {"held_back": held, "scores": {"init": 70.0, "stage1 epoch 1": 75.0}, "best": "stage1 epoch 1"}))
    text, worse = report(tmp_path)
    assert not worse and "WARNING" not in text and "trained model (stage1 epoch 1): 75.00" in text


def test_distractors_enter_the_database_and_make_the_guard_harder(tmp_path):
    """A copy of each held-back photo filed as a distractor outranks its real matches' second
    place: the held-back mAP must fall."""
    import shutil

    data = make_class_folder(tmp_path / "data", num_classes=3, per_class=3)
    photos = sorted(p for p in data.rglob("*") if p.is_file())
    held = Samples([str(p) for p in photos], [int(i // 3) for i in range(len(photos))], ["a", "b", "c"])
    copies = []
    for n, p in enumerate(photos):
        copies.append(str(shutil.copyfile(p, tmp_path / f"copy{n}{p.suffix}")))
    torch.manual_seed(0)
    model = CFCDNet(ModelConfig(backbone="mobilenet_v2", dim=16)).eval()
    alone = holdout_map(model, held)
    crowded = holdout_map(model, held, distractors=copies)
    assert crowded < alone - 5  # (equal if the distractors were left out)
