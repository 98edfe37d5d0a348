"""cfcd whiten: give a model a projection head learned from unlabelled photos (PCA / whitening)."""

from __future__ import annotations


def register(p) -> None:
    from ..settings import WHITENING_SETTINGS
    from .extract import add_settings_arguments

    p.description = ("Learn a Linear(C, dim) -> BatchNorm1d head from the GeM vectors of unlabelled photos (no labels "
                     "needed) and write the model with it as a cfcd checkpoint, usable as --model everywhere. "
                     "See docs/your-photos.md for when it helps.")
    p.add_argument("images", nargs="+", help="image files or folders (searched recursively)")
    p.add_argument("-o", "--output", required=True, metavar="OUT.pt", help="the checkpoint to write")
    p.add_argument("--model", default="mobilenet_v2-imagenet",
                   help="the one network whose backbone is kept (default: mobilenet_v2-imagenet, with which whitening was "
                   "measured in docs/results.md)")
    p.add_argument("--dim", type=int, default=512, help="descriptor dimensions (default 512, the CFCD head's)")
    p.add_argument("--power", type=float, default=0.5, help="0: PCA, 0.5: full whitening (default)")
    p.add_argument("--shrinkage", type=float, default=1.0,
                   help="eps = shrinkage x the mean kept eigenvalue, added before whitening (default 1)")
    p.add_argument("--regions", default="2,3", help="region grid levels for extra vectors, '' for none (default 2,3)")
    add_settings_arguments(p, scales_help=",".join(f"{s:g}" for s in WHITENING_SETTINGS.scales),
                           max_side_help=str(WHITENING_SETTINGS.max_side))
    p.set_defaults(func=run)


def _parse_regions(text: str) -> tuple[int, ...]:
    from ..errors import ConfigError

    try:
        return tuple(int(v) for v in text.split(",") if v.strip())
    except ValueError:
        raise ConfigError(f"--regions {text!r}: expected comma-separated whole numbers") from None


def run(args) -> None:
    from ..data.images import gather_images
    from ..errors import InputError
    from ..model import load_model, save_checkpoint
    from ..settings import WHITENING_SETTINGS, resolve
    from ..whiten import learn_head
    from .extract import settings_overrides

    paths = gather_images(args.images)
    if len(paths) < 2:
        raise InputError(f"{' '.join(args.images)}: {len(paths)} image(s) found; a head needs at least two photos")
    regions = _parse_regions(args.regions)
    model = load_model(args.model)
    settings = resolve(WHITENING_SETTINGS, settings_overrides(args), model)
    whitened, w = learn_head(model, paths, args.dim, args.power, args.shrinkage, regions, settings, progress=True)
    info = {"images": len(paths), "power": args.power, "shrinkage": args.shrinkage, "regions": list(regions),
            "scales": list(settings.scales), "max_side": settings.max_side, "from_model": str(args.model)}
    save_checkpoint(args.output, whitened, whitening=info)
    print(f"wrote {args.output}: {model.config.backbone} + a {w.projection.shape[1]} -> {w.projection.shape[0]} "
          f"{'PCA' if args.power == 0 else f'whitening (power {args.power:g})'} head learned from {len(paths)} photos")
