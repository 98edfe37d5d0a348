"""The best-model guard: did training help on identities it never saw?

``data.holdout_fraction`` of the user's identities are held back from training
(``cfcd.train.holdout``). ``Guard`` scores models on them, leave-one-out (every held-back photo a
query; the database its other held-back photos and up to ``DISTRACTORS_PER_PHOTO`` training
photos per held-back photo, drawn with the run's seed, as distractors; revisitop AP), with the
model's default extraction settings. Without the distractors, a dozen held-back identities are
retrieved almost perfectly by every candidate (97-100 mAP) and the pick was chance (the ImageNet
descriptor in one fold); with them the scores spread out, and on two folds the pick gained 0.40
mAP on unseen identities (docs/results.md, issue 29). The candidates:
the model training started from (``stage1.init`` as it loads), the stage-1 model at step 0
(its head initialised, nothing trained), and the model after every epoch of each stage. The
best so far is written to ``<out_dir>/best.pt`` (a cfcd checkpoint ``cfcd.load_model`` reads)
and every score to ``<out_dir>/guard.json``, so a resumed run keeps them. Choosing the best
epoch this way is early stopping on the held-back identities.

``report`` says, after training, the starting and the trained model's scores and warns when
training made the model worse.
"""

from __future__ import annotations

import copy
import json
import logging
import random
from pathlib import Path
from typing import Sequence

from ..model.checkpoint import atomic_save, make_checkpoint
from .datasets import Samples

log = logging.getLogger(__name__)

BEST = "best.pt"
SCORES = "guard.json"
INIT = "init"  # stage1.init as it loads (e.g. the ImageNet GeM descriptor)
START = "start"  # the stage-1 model before its first step (initialised head)
DISTRACTORS_PER_PHOTO = 3  # training photos in the guard's database per held-back photo


def distractor_photos(train: Samples, held: Samples, seed: int) -> list[str]:
    """The training photos in the guard's database: at most ``DISTRACTORS_PER_PHOTO`` per
    held-back photo, drawn with ``seed`` (none of them shares an identity with ``held``)."""
    paths = [str(p) for p in train.paths]
    return sorted(random.Random(seed).sample(paths, min(len(paths), DISTRACTORS_PER_PHOTO * len(held))))


def holdout_map(model, held: Samples, device: str = "cpu", batch_size: int = 8,
                distractors: Sequence[str] = ()) -> float:
    """Leave-one-out mAP (%) of ``model`` over the ``held`` photos as queries (paths, identity
    labels), the database their other photos and the ``distractors``, with the model's default
    extraction settings."""
    import numpy as np

    from ..evaluate import run
    from ..evaluate.benchmarks.folder import leave_one_out
    from ..settings import Runtime

    # a distractor is its own identity: never a query, never a match
    labels = [f"held {y}" for y in held.labels] + [f"distractor {n}" for n in range(len(distractors))]
    benchmark = leave_one_out([*map(str, held.paths), *distractors], labels, name="held-back identities")
    # PyTorch: the weights differ at every check, so an ONNX export would never be reused.
    scored = run(model, benchmark, runtime=Runtime(device=device, batch_size=batch_size, progress=False, engine="torch"))
    queries = np.arange(len(labels)) < len(held)
    return 100.0 * scored.result.summary(queries)["mAP"]


class Guard:
    """Scores of the candidates on the held-back identities, and the best one on disk."""

    def __init__(self, out_dir: Path, held: Samples, device: str = "cpu", distractors: Sequence[str] = ()):
        self.out_dir, self.held, self.device, self.distractors = Path(out_dir), held, device, list(distractors)
        path = self.out_dir / SCORES
        state = json.loads(path.read_text()) if path.is_file() else {}
        if state and state.get("held_back") != self.described:
            # scores of another held-back set (or an older guard) do not compare with this one's
            log.warning("%s was written for another held-back set (%s, now %s): scoring every candidate again",
                        path, state.get("held_back"), self.described)
            state = {}
        self.scores: dict[str, float] = state.get("scores", {})
        self.best: str | None = state.get("best")

    @property
    def described(self) -> dict:
        return {"photos": len(self.held), "identities": self.identities, "distractors": len(self.distractors)}

    @property
    def identities(self) -> int:
        return len(set(self.held.labels))

    def offer(self, name: str, model) -> float:
        """Score ``model`` (a CFCDNet, left as it was) as candidate ``name``; keep it as best.pt
        unless an earlier candidate scores higher. A tie goes to the later one: on a small
        held-back set every candidate can score 100, and then the trained model is kept."""
        net = copy.deepcopy(getattr(model, "module", model)).eval()
        score = holdout_map(net, self.held, self.device, distractors=self.distractors)
        self.scores[name] = score
        self.out_dir.mkdir(parents=True, exist_ok=True)
        if self.best is None or score >= self.scores[self.best]:
            self.best = name
            atomic_save(make_checkpoint(net.cpu(), guard={"candidate": name, "holdout_map": score}), self.out_dir / BEST)
        (self.out_dir / SCORES).write_text(json.dumps({"held_back": self.described, "scores": self.scores,
                                                       "best": self.best}, indent=1))
        log.info("held-back identities: %s mAP %.2f (best so far: %s)", name, score, self.best)
        return score


def read_scores(out_dir: Path) -> dict | None:
    path = Path(out_dir) / SCORES
    return json.loads(path.read_text()) if path.is_file() else None


def report(out_dir: Path) -> tuple[str, bool]:
    """(the text that ``cfcd train`` prints, whether training made the model worse): the
    starting model's and the trained model's (the last epoch's) mAP on the held-back
    identities, and which model best.pt holds."""
    state = read_scores(out_dir)
    if not state or not state["scores"]:
        return "", False
    scores: dict[str, float] = state["scores"]
    starting = [k for k in (INIT, START) if k in scores]
    trained = [k for k in scores if k not in (INIT, START)]
    held = state["held_back"]
    lines = [f"held-back identities ({held['identities']} identities, {held['photos']} photos, never trained on; "
             f"{held.get('distractors', 0)} training photos as distractors), leave-one-out mAP:"]
    lines += [f"  starting model ({k}): {scores[k]:.2f}" for k in starting]
    worse = False
    if trained:
        last = trained[-1]
        lines.append(f"  trained model ({last}): {scores[last]:.2f}")
        if starting:
            base = max(starting, key=scores.get)
            worse = scores[last] < scores[base]
            if worse:
                lines.append(f"WARNING: training made the model WORSE on identities it did not see: {scores[last]:.2f} "
                             f"after training < {scores[base]:.2f} for the starting model ({base}).")
    lines.append(f"best: {state['best']} ({scores[state['best']]:.2f}), saved as {Path(out_dir) / BEST}")
    return "\n".join(lines), worse
