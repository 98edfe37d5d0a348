"""The ``cfcd`` command: a thin layer that parses arguments and calls the library.

Each subcommand lives in its own module under ``cfcd.cli`` with ``register(parser)`` that
adds its arguments and sets ``func``. Errors users can act on (``cfcd.errors.CfcdError``) are
printed as one line and exit with status 2; any other exception is a bug and keeps its
traceback.
"""

from __future__ import annotations

import argparse
import importlib
import logging
import sys

from ..errors import CfcdError

# Command -> its one-line help. A command's module (and what it imports: numpy, torch, FAISS)
# loads only when that command is named, as pip does, so `cfcd --help` answers at once.
COMMANDS = {
    "weights": "install or list pretrained weights",
    "extract": "extract descriptors into .npy shards + manifest (resumable, torchrun-aware)",
    "eval": "mAP on Revisited Oxford/Paris (+1M) or a folder-per-identity set (leave-one-out)",
    "data": "download evaluation datasets; synthesize a training set from unlabelled photos",
    "demo": "index photos, query them, print ranked neighbours + mAP, write an HTML results page",
    "export": "write the deploy model as ONNX (dynamic batch, height, width)",
    "index": "build, update or describe an image index",
    "search": "find the indexed images most similar to query images",
    "duplicates": "group the near-duplicate images (same scene) of an index",
    "serve": "serve an index over HTTP, with a search page at /",
    "train": "train a CFCD model (stage 1, hard negatives, stage 2)",
    "hem": "write the hard-negative table (path,true,pred,score) for stage 2",
    "whiten": "learn a PCA / whitening head from unlabelled photos; write a cfcd checkpoint",
}

def build_parser(argv: list[str] | None = None) -> argparse.ArgumentParser:
    """The parser with every command listed and the arguments of the command named in
    ``argv`` (the first word that is not an option); ``argv=None`` reads ``sys.argv``."""
    argv = sys.argv[1:] if argv is None else argv
    named = next((a for a in argv if not a.startswith("-")), None)
    parser = argparse.ArgumentParser(prog="cfcd", description="Single-stage image retrieval with CFCD descriptors.")
    parser.add_argument("-v", "--verbose", action="store_true", help="log debug messages")
    sub = parser.add_subparsers(dest="command", metavar="COMMAND")
    for name, summary in COMMANDS.items():
        p = sub.add_parser(name, help=summary)
        if name == named:
            importlib.import_module(f"cfcd.cli.{name}").register(p)
    return parser


def main(argv: list[str] | None = None) -> int:
    parser = build_parser(argv)
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.DEBUG if args.verbose else logging.INFO, format="%(message)s")
    if not getattr(args, "func", None):
        parser.print_help()
        return 0
    try:
        return args.func(args) or 0
    except KeyboardInterrupt:
        print("interrupted", file=sys.stderr)
        return 130
    except Exception as err:
        if args.verbose or not isinstance(err, CfcdError):
            raise
        print(f"cfcd {args.command}: error: {err}", file=sys.stderr)
        return 2
