"""The ``cfcd`` command: a thin layer that parses arguments and calls the library.

Each subcommand lives in its own module under ``cfcd.cli`` with ``register(subparsers)``
that adds its parser and sets ``func``; errors users can act on are printed without a
traceback and exit with status 2.
"""

from __future__ import annotations

import argparse
import importlib
import logging
import sys

COMMANDS = ("weights", "extract", "eval", "data", "demo", "export", "index", "search", "serve", "train", "hem",)

USER_ERRORS: tuple[type[BaseException], ...] = (ValueError, FileNotFoundError, RuntimeError, KeyError)


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="cfcd", description="Single-stage image retrieval with CFCD descriptors.")
    parser.add_argument("-v", "--verbose", action="store_true", help="log debug messages")
    sub = parser.add_subparsers(dest="command", metavar="COMMAND")
    for name in COMMANDS:
        importlib.import_module(f"cfcd.cli.{name}").register(sub)
    return parser


def main(argv: list[str] | None = None) -> int:
    parser = build_parser()
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
    except USER_ERRORS as err:
        if args.verbose:
            raise
        print(f"cfcd {args.command}: error: {err}", file=sys.stderr)
        return 2
