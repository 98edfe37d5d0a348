"""The tiers of `cfcd duplicates` (exact / near / similar), measured on planted copies.

    OMP_NUM_THREADS=1 .venv/bin/python bench/duplicate_tiers.py --work /tmp/cfcd-tiers

For each photo set (instances-dev, instances-hard): ``--identities`` identities drawn at random
(seed 0), two photos each (two shots of one place or object: 60 photos for 30 identities), and
``--copies`` planted copies of each of those photos, written to ``--work`` (never the repository):
one exact copy (the same pixels: a PNG re-save, the JPEG with a comment segment added, or a
lossless PNG stored rotated with an EXIF orientation tag that turns it back) and near copies
(a resize to 35-75 %, a JPEG re-encode at quality 50-95, a crop of 5-10 % of each side pair, a
copy stored rotated as JPEG with its EXIF tag, a brightness edit of +-10-30 %), the kinds taken in
turn. Every other photo of the set (the other identities and the distractors) joins as it is, so
different places have every chance to chain. `cfcd index build` indexes each set's list with the
default model and settings (the index learns its projection, as a user's would), and
`cfcd.index.duplicates.near_duplicates` groups it at the defaults.

Truth for a pair of images: ``exact`` when both show the same pixels (a photo and its exact copy),
``near`` when both come from one shot otherwise (one shot: the same file bytes, so byte-identical
files of the set count as one shot), ``similar`` for two shots of one identity, none otherwise. Two
shots of the fixed-camera series of oxford-affine (``FIXED_CAMERA``: one image JPEG-compressed step
by step, or one viewpoint under blur or light changes) are left out of the scores: they are edits
of one shot as much as other shots, and are counted apart. A pair is predicted with the tier
``near_duplicates`` gives it when both images share a group, none otherwise. Precision and recall
per tier and per set; "other shots in exact or near" counts pairs of two shots predicted exact or
near (must be 0); "groups mixing places" counts groups holding two identities (or a distractor with
anything). The sweeps show where the thresholds were chosen: same-shot pairs below the descriptor
floor, the pixel threshold (pairs of one identity, no grouping) and the similar threshold (grouped
again at each, pixel checks shared). ``--json`` writes the numbers.
"""

from __future__ import annotations

import argparse
import csv
import hashlib
import json
import random
import tempfile
from collections import Counter
from itertools import combinations
from pathlib import Path

import numpy as np
from PIL import Image, ImageEnhance

from cfcd.cli import main as cfcd
from cfcd.data.decoding import load_image
from cfcd.index import Index
from cfcd.index.duplicates import DEFAULT_THRESHOLD, NEAR_SCORE, TIERS, near_duplicates
from cfcd.index.same_shot import NEAR_PIXELS, PixelChecks, aligned_similarity, grey

SHARED = Path(__file__).resolve().parents[1] / ".." / "shared" / "data"
DEFAULT_SETS = [SHARED / "instances-dev", SHARED / "instances-hard"]
EXACT_KINDS = ("png", "comment", "exif-png")
NEAR_KINDS = ("resize", "jpeg", "crop", "exif-jpeg", "brightness")
# EXIF orientation tags and the rotation that stores an upright photo so that the tag turns it back.
STORED_ROTATED = {6: Image.Transpose.ROTATE_90, 8: Image.Transpose.ROTATE_270}
# oxford-affine series shot from one place: ubc is one image JPEG-compressed step by step, bikes
# and trees one viewpoint blurred, leuven one viewpoint under less and less light.
FIXED_CAMERA = {"affine_ubc", "affine_bikes", "affine_trees", "affine_leuven"}
SIMILAR_THRESHOLDS = (0.70, 0.725, 0.75, 0.775, 0.80, 0.825, 0.85)


def plant(src: Path, dest: Path, kind: str, rng: random.Random) -> Path:
    """Write a copy of ``src`` of the given kind at ``dest`` (its suffix added); returns its path."""
    if kind == "comment":  # same JPEG data, other bytes: a COM segment right after the SOI marker
        data = src.read_bytes()
        note = b"planted copy"
        out = dest.with_suffix(".jpg")
        out.write_bytes(data[:2] + b"\xff\xfe" + (len(note) + 2).to_bytes(2, "big") + note + data[2:])
        return out
    img = load_image(src)
    if kind == "png":
        out = dest.with_suffix(".png")
        img.save(out)
        return out
    if kind in ("exif-png", "exif-jpeg"):
        tag = rng.choice(sorted(STORED_ROTATED))
        exif = Image.Exif()
        exif[0x0112] = tag
        out = dest.with_suffix(".png" if kind == "exif-png" else ".jpg")
        extra = {} if kind == "exif-png" else {"quality": rng.randint(85, 95)}
        img.transpose(STORED_ROTATED[tag]).save(out, exif=exif, **extra)
        return out
    w, h = img.size
    if kind == "resize":
        f = rng.uniform(0.35, 0.75)
        img = img.resize((max(1, round(w * f)), max(1, round(h * f))), Image.Resampling.LANCZOS)
    elif kind == "crop":
        fx, fy = rng.uniform(0.05, 0.10), rng.uniform(0.05, 0.10)
        left, top = rng.uniform(0, fx), rng.uniform(0, fy)
        img = img.crop((round(left * w), round(top * h), round((1 - fx + left) * w), round((1 - fy + top) * h)))
    elif kind == "brightness":
        img = ImageEnhance.Brightness(img).enhance(rng.choice([-1, 1]) * rng.uniform(0.1, 0.3) + 1)
    out = dest.with_suffix(".jpg")
    img.save(out, quality=rng.randint(50, 95) if kind == "jpeg" else 90)
    return out


def prepare(images: Path, work: Path, identities: int, copies: int, seed: int) -> tuple[Path, list[dict]]:
    """Plant the copies of ``images`` (a set with manifest.csv) under ``work``; (list file of every
    image to index, one truth row per image: path, identity, shot, kind)."""
    rows = list(csv.DictReader(open(images / "manifest.csv")))
    by_identity: dict[str, list[str]] = {}
    for r in rows:
        if r["identity"]:
            by_identity.setdefault(r["identity"], []).append(r["path"])
    rng = random.Random(seed)
    chosen = rng.sample(sorted(i for i, p in by_identity.items() if len(p) >= 2), identities)
    shots = {p: i for i in chosen for p in rng.sample(sorted(by_identity[i]), 2)}
    shot_of = {r["path"]: hashlib.sha256((images / r["path"]).read_bytes()).hexdigest() for r in rows}
    truth = [{"path": str((images / r["path"]).resolve()), "identity": r["identity"] or None,
              "shot": shot_of[r["path"]], "kind": "original"} for r in rows]
    (work / "copies").mkdir(parents=True, exist_ok=True)
    for n, (shot, identity) in enumerate(sorted(shots.items())):
        kinds = [EXACT_KINDS[n % len(EXACT_KINDS)]] + [NEAR_KINDS[(n + j) % len(NEAR_KINDS)] for j in range(copies - 1)]
        for j, kind in enumerate(kinds):
            out = plant(images / shot, work / "copies" / f"{n:03d}-{j}-{kind}", kind, rng)
            truth.append({"path": str(out.resolve()), "identity": identity, "shot": shot_of[shot], "kind": kind})
    listing = work / "images.txt"
    listing.write_text("".join(t["path"] + "\n" for t in truth))
    (work / "truth.json").write_text(json.dumps(truth))
    return listing, truth


def true_tier(a: dict, b: dict) -> str | None:
    if a["shot"] == b["shot"]:
        same_pixels = {"original", *EXACT_KINDS}
        return "exact" if a["kind"] in same_pixels and b["kind"] in same_pixels else "near"
    if a["identity"] is not None and a["identity"] == b["identity"]:
        return "fixed camera" if a["identity"] in FIXED_CAMERA else "similar"
    return None


def measure(index: Index, truth: list[dict]) -> dict:
    ids = index.ids()
    recs = index.records(ids)
    by_path = {t["path"]: t for t in truth}
    row = {i: by_path[recs[i].path] for i in ids}
    positives = {}
    for a, b in combinations(sorted(ids), 2):
        tier = true_tier(row[a], row[b])
        if tier:
            positives[(a, b)] = tier
    pixels = PixelChecks(lambda i: recs[i].path)  # shared by every grouping: each pair is compared once
    out = {"similar_sweep": {}}
    for threshold in SIMILAR_THRESHOLDS:
        found = near_duplicates(index, threshold, pixels=pixels)
        scores = tier_scores(found, positives, row)
        out["similar_sweep"][threshold] = {**scores["tiers"]["similar"],
                                           "groups_mixing_places": scores["groups_mixing_places"]}
    out.update(tier_scores(near_duplicates(index, pixels=pixels), positives, row), images=len(ids))
    out["sweep"] = sweep(index, ids, row)
    return out


def tier_scores(groups: list, positives: dict, row: dict) -> dict:
    """Precision and recall per tier of ``groups`` against the true tiers ``positives``."""
    predicted = {(a, b): tier for g in groups for a, b, tier, _ in g.pairs}
    out = {"groups": len(groups), "tiers": {}}
    scored = {p: t for p, t in predicted.items() if positives.get(p) != "fixed camera"}
    for tier in TIERS:
        pos = {p for p, t in positives.items() if t == tier}
        pred = {p for p, t in scored.items() if t == tier}
        hit = len(pos & pred)
        out["tiers"][tier] = {"pairs": len(pos), "predicted": len(pred),
                              "precision": hit / len(pred) if pred else 1.0, "recall": hit / len(pos) if pos else 1.0}
    out["other_shots_in_exact_or_near"] = sum(1 for p, t in predicted.items()
                                              if t in ("exact", "near") and positives.get(p) == "similar")
    fixed = [p for p, t in positives.items() if t == "fixed camera"]
    out["fixed_camera"] = {"pairs": len(fixed), **Counter(predicted.get(p, "none") for p in fixed)}
    out["groups_mixing_places"] = sum(1 for g in groups
                                      if len({row[i]["identity"] or f"distractor {i}" for i in g.ids}) > 1)
    out["same_shot_missed"] = dict(Counter(
        "-".join(sorted((row[a]["kind"], row[b]["kind"]))) for (a, b), t in positives.items()
        if t in ("exact", "near") and predicted.get((a, b)) != t))
    return out


def sweep(index: Index, ids: list[int], row: dict) -> dict:
    """Over the pairs of one identity (fixed-camera series left out): how many same-shot pairs
    fall below the descriptor floor ``NEAR_SCORE``, and for those above it the aligned pixel
    similarity of same-shot pairs against other shots at a range of thresholds."""
    stored = index.descriptors(ids)
    cosine = stored @ stored.T
    thumbs = {}
    same, other, below = [], [], 0
    for n, m in combinations(range(len(ids)), 2):
        tier = true_tier(row[ids[n]], row[ids[m]])
        if tier not in ("exact", "near", "similar"):
            continue
        if cosine[n, m] < NEAR_SCORE:
            below += tier != "similar"
            continue
        for i in (n, m):
            if i not in thumbs:
                thumbs[i] = grey(row[ids[i]]["path"])
        (same if tier != "similar" else other).append(aligned_similarity(thumbs[n], thumbs[m]))
    same, other = np.array(same), np.array(other)
    table = {float(t): {"same_shot_recall": float((same >= t).mean()), "other_shots_above": int((other >= t).sum())}
             for t in np.round(np.arange(0.90, 0.991, 0.01), 2)}
    return {"same_shot_below_near_score": below, "same_shot_pairs": len(same), "other_shot_pairs": len(other),
            "same_shot_min": float(same.min()), "other_shot_max": float(other.max()), "table": table}


def markdown(results: dict) -> str:
    pct = lambda v: f"{100 * v:.1f}"  # noqa: E731
    lines = ["| set | images | tier | true pairs | predicted | precision | recall |", "|---|---:|---|---:|---:|---:|---:|"]
    for name, out in results.items():
        for tier, s in out["tiers"].items():
            lines.append(f"| {name} | {out['images']} | {tier} | {s['pairs']} | {s['predicted']} | "
                         f"{pct(s['precision'])} | {pct(s['recall'])} |")
    lines += ["", "| set | groups | groups mixing places | other shots in exact or near | same-shot pairs missed (kinds) "
              "| fixed-camera pairs: predicted tiers |", "|---|---:|---:|---:|---|---|"]
    for name, out in results.items():
        missed = ", ".join(f"{k} {v}" for k, v in sorted(out["same_shot_missed"].items())) or "none"
        fixed = ", ".join(f"{k} {v}" for k, v in out["fixed_camera"].items())
        lines.append(f"| {name} | {out['groups']} | {out['groups_mixing_places']} | "
                     f"{out['other_shots_in_exact_or_near']} | {missed} | {fixed} |")
    lines += ["", "| set | same-shot pairs below the descriptor floor | pairs above it: same shot / other shots "
              "| lowest same-shot pixel similarity | highest other-shot |", "|---|---:|---:|---:|---:|"]
    for name, out in results.items():
        w = out["sweep"]
        lines.append(f"| {name} | {w['same_shot_below_near_score']} | {w['same_shot_pairs']} / {w['other_shot_pairs']} | "
                     f"{w['same_shot_min']:.3f} | {w['other_shot_max']:.3f} |")
    lines += ["", "| pixel threshold | " + " | ".join(f"{n}: same-shot recall | other shots above" for n in results) + " |",
              "|---:|" + "---:|---:|" * len(results)]
    for t in next(iter(results.values()))["sweep"]["table"]:
        cells = [f"{pct(out['sweep']['table'][t]['same_shot_recall'])} | {out['sweep']['table'][t]['other_shots_above']}"
                 for out in results.values()]
        mark = " (default)" if abs(t - NEAR_PIXELS) < 1e-6 else ""
        lines.append(f"| {t:.2f}{mark} | " + " | ".join(cells) + " |")
    lines += ["", "| similar threshold | " + " | ".join(f"{n}: precision | recall | groups mixing places" for n in results)
              + " |", "|---:|" + "---:|---:|---:|" * len(results)]
    for t in SIMILAR_THRESHOLDS:
        cells = [f"{pct(s['precision'])} | {pct(s['recall'])} | {s['groups_mixing_places']}"
                 for s in (out["similar_sweep"][t] for out in results.values())]
        mark = " (default)" if abs(t - DEFAULT_THRESHOLD) < 1e-6 else ""
        lines.append(f"| {t:.3f}{mark} | " + " | ".join(cells) + " |")
    return "\n".join(lines)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--images", type=Path, action="append", help="a set with manifest.csv (repeatable; default: "
                                                                     "instances-dev and instances-hard)")
    parser.add_argument("--work", type=Path, help="folder for the copies and indexes, kept and reused (default: a temporary one)")
    parser.add_argument("--identities", type=int, default=30, help="identities per set; two photos each get copies")
    parser.add_argument("--copies", type=int, default=5, help="planted copies per photo: one exact, the rest near")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--json", type=Path, help="write the numbers here")
    args = parser.parse_args()
    with tempfile.TemporaryDirectory(prefix="cfcd-tiers-") as scratch:
        work = args.work or Path(scratch)
        results = {}
        for images in args.images or DEFAULT_SETS:
            name = images.resolve().name
            folder = work / name
            index = folder / "idx"
            if (folder / "truth.json").is_file() and index.is_dir():
                truth = json.loads((folder / "truth.json").read_text())
            else:
                listing, truth = prepare(images, folder, args.identities, args.copies, args.seed)
                if cfcd(["index", "build", str(index), str(listing), "--force"]) != 0:
                    raise SystemExit(f"cfcd index build failed for {name}")
            results[name] = measure(Index.load(index), truth)
    print(markdown(results))
    if args.json:
        args.json.write_text(json.dumps(results, indent=1))


if __name__ == "__main__":
    main()
