"""cfcd hem: predict every training image with a stage-1 model and write the hard-negative table."""

from __future__ import annotations

from .train import add_config_arguments


def register(p) -> None:
    add_config_arguments(p)
    p.add_argument("--checkpoint", help="stage-1 checkpoint (default: <run.out_dir>/stage1/model.pt)")
    p.set_defaults(func=main)


def main(args) -> int:
    from ..train.config import load_config
    from ..train.engine import FINAL, init_runtime, training_data
    from ..train.hem import hem

    cfg = load_config(args.config, args.overrides)
    rt = init_runtime(cfg.run.device)
    train, _ = training_data(cfg)
    table = hem(cfg, args.checkpoint or cfg.out_dir / "stage1" / FINAL, train, rt)
    if rt.main:
        print(table)
    return 0
