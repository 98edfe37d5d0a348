"""Figures for docs/results.md, with the default model and settings.

  docs/img/demo_grid.png  queries of the demo collection (scikit-image's public-domain / CC0
                          photos) and their top 5 neighbours; green = same group, red = other
  docs/img/pr_curve.png   leave-one-out precision-recall, pooled over all queries, on the demo
                          collection and on instances-dev (../shared/data; skipped if absent)

Only the demo collection's photos appear in a figure: the instances-dev photos are for
evaluation inside the project and are never redistributed, so they enter as curves only.

    python bench/figures.py            # also prints each collection's mAP and recall@1
"""

from __future__ import annotations

import argparse
import sys
import tempfile
from pathlib import Path

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402

from cfcd import demo  # noqa: E402
from cfcd.data.decoding import load_image  # noqa: E402
from cfcd.model import load_model  # noqa: E402

ROOT = Path(__file__).resolve().parents[1]
INSTANCES_DEV = ROOT.parent / "shared" / "data" / "instances-dev" / "images"
IMG = ROOT / "docs" / "img"


def pooled_pr(result: demo.DemoResult) -> tuple[np.ndarray, np.ndarray]:
    """Precision and recall at each cut-off k = 1..n-1, summed over all leave-one-out queries."""
    groups = np.asarray(result.groups)
    n = len(groups)
    hits = np.zeros(n - 1)
    positives = 0
    for q in range(n):
        ranked = [j for j in result.ranks[:, q] if j != q]
        rel = groups[ranked] == groups[q]
        hits += np.cumsum(rel)
        positives += rel.sum()
    k = np.arange(1, n)
    return hits / (k * n), hits / positives


def grid(result: demo.DemoResult, path: Path, top_k: int = 5, rows: int = 6) -> None:
    queries = result.queries[:rows]
    fig, axes = plt.subplots(len(queries), top_k + 1, figsize=(2 * (top_k + 1), 2.1 * len(queries)))
    for r, q in enumerate(queries):
        shown = [q, *demo.neighbours(result, q, top_k)]
        for c, i in enumerate(shown):
            ax = axes[r, c]
            img = load_image(result.paths[i])
            img.thumbnail((256, 256))
            ax.imshow(img)
            ax.set_xticks([])
            ax.set_yticks([])
            colour = "#36c" if c == 0 else ("#2a2" if result.groups[i] == result.groups[q] else "#d33")
            for side in ax.spines.values():
                side.set_edgecolor(colour)
                side.set_linewidth(4)
            name = f"{result.groups[i]}/{result.paths[i].stem}"
            ax.set_title("query\n" + name if c == 0 else f"#{c}  {result.similarities[i, q]:.3f}\n{name}", fontsize=7)
    fig.suptitle(f"cfcd demo collection: leave-one-out mAP {100 * result.mean_ap:.2f}", fontsize=11)
    fig.tight_layout()
    fig.savefig(path, dpi=80)
    plt.close(fig)


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--model", default="default")
    p.add_argument("--out", type=Path, default=IMG)
    args = p.parse_args(argv)
    args.out.mkdir(parents=True, exist_ok=True)
    model = load_model(args.model)
    curves = {}
    with tempfile.TemporaryDirectory() as tmp:
        collections = {"demo collection (scikit-image photos)": None}
        if INSTANCES_DEV.is_dir():
            collections["instances-dev"] = INSTANCES_DEV
        else:
            print(f"instances-dev not found at {INSTANCES_DEV}: its curve is left out")
        for k, (label, images) in enumerate(collections.items()):
            result = demo.run(model, images, Path(tmp) / str(k), n_queries=8)
            print(f"{label}: {len(result.paths)} images, mAP {100 * result.mean_ap:.2f}, recall@1 {100 * result.recall_at_1:.2f}")
            curves[label] = (pooled_pr(result), result.mean_ap)
            if images is None:
                grid(result, args.out / "demo_grid.png")
    fig, ax = plt.subplots(figsize=(5, 4))
    for label, ((precision, recall), mean_ap) in curves.items():
        ax.plot(recall, precision, label=f"{label}, mAP {100 * mean_ap:.1f}")
    ax.set_xlabel("recall")
    ax.set_ylabel("precision")
    ax.set_xlim(0, 1)
    ax.set_ylim(0, 1.02)
    ax.grid(alpha=0.3)
    ax.legend(fontsize=8, loc="lower left")
    ax.set_title(f"Leave-one-out precision-recall\ndefault model: {model.name}", fontsize=9)
    fig.tight_layout()
    fig.savefig(args.out / "pr_curve.png", dpi=100)
    print(f"wrote {args.out / 'demo_grid.png'} and {args.out / 'pr_curve.png'}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
