"""The best-model guard: did training help on identities it never saw?

``data.holdout_fraction`` of the user's identities are held back from training
(``cfcd.train.holdout``). ``Guard`` scores models on them, leave-one-out (every held-back photo a
query, the others the database; revisitop AP), with the model's default extraction settings:
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
from pathlib import Path

from ..model.checkpoint import atomic_save, make_checkpoint
from .datasets import Samples

log = logging.getLogger(__name__)

BEST = "best.pt"
SCORES = "guard.json"
INIT = "init"  # stage1.init as it loads (e.g. the ImageNet GeM descriptor)
START = "start"  # the stage-1 model before its first step (initialised head)


def holdout_map(model, held: Samples, device: str = "cpu", batch_size: int = 8) -> float:
    """Leave-one-out mAP (%) of ``model`` on ``held`` (paths, identity labels), with the model's
    default extraction settings."""
    from ..evaluate import run
    from ..evaluate.benchmarks.folder import leave_one_out
    from ..settings import Runtime

    benchmark = leave_one_out(list(held.paths), [str(y) for y in held.labels], name="held-back identities")
    # PyTorch: the weights differ at every check, so an ONNX export would never be reused.
    scored = run(model, benchmark, runtime=Runtime(device=device, batch_size=batch_size, progress=False, engine="torch"))
    return 100.0 * scored.result.summary()["mAP"]


class Guard:
    """Scores of the candidates on the held-back identities, and the best one on disk."""

    def __init__(self, out_dir: Path, held: Samples, device: str = "cpu"):
        self.out_dir, self.held, self.device = Path(out_dir), held, device
        path = self.out_dir / SCORES
        state = json.loads(path.read_text()) if path.is_file() else {}
        self.scores: dict[str, float] = state.get("scores", {})
        self.best: str | None = state.get("best")

    @property
    def identities(self) -> int:
        return len(set(self.held.labels))

    def offer(self, name: str, model) -> float:
        """Score ``model`` (a CFCDNet, left as it was) as candidate ``name``; keep it as best.pt
        unless an earlier candidate scores higher. A tie goes to the later one: on a small
        held-back set every candidate can score 100, and then the trained model is kept."""
        net = copy.deepcopy(getattr(model, "module", model)).eval()
        score = holdout_map(net, self.held, self.device)
        self.scores[name] = score
        self.out_dir.mkdir(parents=True, exist_ok=True)
        if self.best is None or score >= self.scores[self.best]:
            self.best = name
            atomic_save(make_checkpoint(net.cpu(), guard={"candidate": name, "holdout_map": score}), self.out_dir / BEST)
        (self.out_dir / SCORES).write_text(json.dumps({"held_back": {"photos": len(self.held), "identities": self.identities},
                                                       "scores": self.scores, "best": self.best}, indent=1))
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
    lines = [f"held-back identities ({held['identities']} identities, {held['photos']} photos, never trained on), "
             "leave-one-out mAP:"]
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
