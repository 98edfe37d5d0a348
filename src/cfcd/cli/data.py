"""cfcd data: fetch the evaluation datasets in revisitop's layout; synthesize a training set from unlabelled photos."""

from __future__ import annotations

from ..data import revisitop
from ..errors import InputError


def register(p) -> None:
    dsub = p.add_subparsers(dest="action", required=True, metavar="ACTION")
    dl = dsub.add_parser(
        "download",
        help="download Revisited Oxford / Paris or the 1M distractors (resumes; rerun after an interruption)",
    )
    dl.add_argument("datasets", nargs="+", choices=revisitop.DATASETS, metavar="DATASET",
                    help=f"one or more of: {', '.join(revisitop.DATASETS)}")
    dl.add_argument("--root", required=True, help="data folder; each dataset goes to ROOT/DATASET")
    dl.add_argument("--no-progress", action="store_true", help="no progress bars")
    dl.set_defaults(func=download)
    syn = dsub.add_parser(
        "synthesize",
        help="make a training set without labels: each photo a class of strong augmentations of it",
        description="Write OUT/<class>/<k>.jpg: one class per photo, its views made by perspective warps, "
                    "crops, rotation, day/night photometry, blur and JPEG (cfcd.train.synthetic). Train on it "
                    "with: cfcd train --config unsupervised-mobilenet data.train=OUT",
    )
    syn.add_argument("photos", nargs="+", help="image files or folders (searched recursively)")
    syn.add_argument("-o", "--out", required=True, help="the folder to write (one sub-folder per photo)")
    syn.add_argument("--views", type=int, default=6, help="images per class, the photo included (default 6)")
    syn.add_argument("--size", type=int, default=384, help="long side of the written images (default 384)")
    syn.add_argument("--warp", type=float, default=0.25, help="perspective strength, fraction of a side (default 0.25)")
    syn.add_argument("--seed", type=int, default=0)
    syn.set_defaults(func=synthesize)


def download(args) -> None:
    for name in args.datasets:
        path = revisitop.download_dataset(name, args.root, progress=not args.no_progress)
        print(f"{name}: {path}")


def synthesize(args) -> None:
    from ..data.images import gather_images
    from ..train.synthetic import make_identities

    photos = gather_images(args.photos)
    if len(photos) < 2:
        raise InputError(f"{len(photos)} photo(s) found; training needs at least two classes")
    folders = make_identities(photos, args.out, args.views, args.size, args.warp, args.seed)
    print(f"{args.out}: {len(folders)} classes x {args.views} images")
