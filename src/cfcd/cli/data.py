"""cfcd data: fetch the evaluation datasets in revisitop's layout."""

from __future__ import annotations

from ..data import revisitop


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


def download(args) -> None:
    for name in args.datasets:
        path = revisitop.download_dataset(name, args.root, progress=not args.no_progress)
        print(f"{name}: {path}")
