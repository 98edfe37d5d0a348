"""Time of `cfcd duplicates --resolve` and `--restore` on real files, and a check that the
restore leaves the folder and the index as they were.

    OMP_NUM_THREADS=1 .venv/bin/python bench/duplicate_cleanup.py --photos 300 --work /tmp/cfcd-cleanup

``--photos`` synthetic 400x300 JPEG photos (smooth random textures, ``tests/samples.scene``), and
for every other one an exact copy (a PNG re-save) and a near copy (a half-size JPEG) in a second
folder; descriptors planted (each photo and its copies nearly equal, photos unrelated), so the
files and the pixel checks are real and no model runs. A FAISS index of them; then the commands as
a user runs them, each in a fresh process, timed from outside (imports included): the dry run,
the resolve (exact,near: every copy but the kept one moved), the restore. Prints a table row.
"""

from __future__ import annotations

import argparse
import hashlib
import json
import shutil
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
from PIL import Image

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "tests"))
from samples import scene  # noqa: E402

DIM = 512


def make(work: Path, photos: int) -> tuple[Path, list[Path]]:
    folder = work / "photos"
    files, rows = [], []
    rng = np.random.default_rng(0)
    for n in range(photos):
        base = rng.normal(size=DIM)
        path = folder / "camera" / f"{n:04d}.jpg"
        path.parent.mkdir(parents=True, exist_ok=True)
        scene(n).save(path, quality=90)
        files.append(path)
        copies = []
        if n % 2 == 0:
            img = Image.open(path).convert("RGB")
            copies = [folder / "copies" / f"{n:04d}.png", folder / "copies" / f"{n:04d}-small.jpg"]
            copies[0].parent.mkdir(parents=True, exist_ok=True)
            img.save(copies[0])
            img.resize((200, 150), Image.Resampling.LANCZOS).save(copies[1], quality=85)
            files += copies
        rows += [base + 0.005 * np.linalg.norm(base) * rng.normal(size=DIM) / np.sqrt(DIM) for _ in range(1 + len(copies))]
    rows = np.array(rows)
    from cfcd.index import Index

    index = Index.build((rows / np.linalg.norm(rows, axis=1, keepdims=True)).astype(np.float32), [str(f) for f in files])
    index.save(work / "idx")
    return folder, files


def state(folder: Path) -> str:
    h = hashlib.sha256()
    for p in sorted(folder.rglob("*")):
        if p.is_file():
            h.update(f"{p.relative_to(folder)} {p.stat().st_mtime_ns}".encode() + p.read_bytes())
    return h.hexdigest()


def timed(*args) -> tuple[float, str]:
    start = time.perf_counter()
    done = subprocess.run([sys.executable, "-m", "cfcd", "duplicates", *map(str, args)], capture_output=True,
                          text=True, check=True)
    return time.perf_counter() - start, done.stdout


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--photos", type=int, default=300)
    parser.add_argument("--work", type=Path, required=True)
    args = parser.parse_args()
    if args.work.exists():
        shutil.rmtree(args.work)
    folder, files = make(args.work, args.photos)
    from cfcd.index import Index

    before, index = state(folder), Index.load(args.work / "idx")
    ids, vectors = index.ids(), index.descriptors(index.ids())
    trash = args.work / "trash"
    plan_s, out = timed(args.work / "idx", "--resolve", "--trash", trash, "--dry-run", "--json")
    planned = len(json.loads(out)["planned"])
    resolve_s, _ = timed(args.work / "idx", "--resolve", "--trash", trash)
    left = len(Index.load(args.work / "idx"))
    restore_s, _ = timed(args.work / "idx", "--restore", "--trash", trash)
    after = Index.load(args.work / "idx")
    same = state(folder) == before and after.ids() == ids and np.array_equal(after.descriptors(ids), vectors)
    print("| files | moved | dry run | resolve | restore | folder and index as before |")
    print("|---:|---:|---:|---:|---:|---|")
    print(f"| {len(files)} | {planned} (index {len(files)} -> {left}) | {plan_s:.1f} s | {resolve_s:.1f} s | "
          f"{restore_s:.1f} s | {'yes' if same else 'NO'} |")


if __name__ == "__main__":
    main()
