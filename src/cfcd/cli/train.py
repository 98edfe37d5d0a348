"""cfcd train: the two-stage CFCD recipe (stage 1, hard negatives, stage 2), resumable.

Runs as one process or under torchrun: ``torchrun --nproc-per-node 8 -m cfcd train ...``.
"""

from __future__ import annotations


def add_config_arguments(p) -> None:
    p.add_argument("--config", required=True, metavar="NAME_OR_PATH",
                   help="a packaged recipe (finetune-small, cpu-mobilenet, r50-gldv2, r101-gldv2, ...) or a YAML file")
    p.add_argument("overrides", nargs="*", metavar="KEY=VALUE",
                   help="override recipe settings, e.g. data.train=/data/gldv2/train_clean.csv stage1.epochs=2")


def register(p) -> None:
    from ..losses.registry import HEADS, TERMS
    from ..train.registry import SAMPLERS

    p.epilog = (f"registered: heads (stageN.head) {HEADS.choices()}; loss terms (stageN.terms) {TERMS.choices()}; "
                f"samplers (stageN.sampler) {SAMPLERS.choices()}; their parameters go in loss.<name> / sampler.<name>")
    add_config_arguments(p)
    p.add_argument("--stage", choices=("1", "2", "both"), default="both",
                   help="train one stage only (stage 2 reads <out_dir>/stage1/model.pt and the hard-negative table)")
    p.add_argument("--resume", action="store_true", help="continue an interrupted run in run.out_dir")
    p.set_defaults(func=main)


def main(args) -> int:
    from ..train.config import load_config
    from ..train.engine import run
    from ..train.guard import report

    cfg = load_config(args.config, args.overrides)
    result = run(cfg, args.stage, args.resume)
    for stage, path in result.items():
        print(f"{stage}: {path}")
    text, _ = report(cfg.out_dir)
    if text:
        print(text)
    return 0
