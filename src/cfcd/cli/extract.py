"""cfcd extract: multi-scale descriptors of a folder or list of images into .npy shards."""

from __future__ import annotations

import json
import os
from pathlib import Path

from ..errors import InputError, NotFound


def register(p) -> None:
    p.add_argument("images", help="a folder of images, or a text file with one image path per line")
    p.add_argument("-o", "--output", required=True, help="output directory (rerun the same command to resume)")
    add_model_arguments(p)
    p.add_argument("--shard-size", type=int, default=1024)
    p.add_argument("--float16", action="store_true", help="store float16 shards (half the disk)")
    p.set_defaults(func=run)


def add_model_arguments(p) -> None:
    """Options shared by every command that extracts descriptors: the model, the settings
    (``cfcd.settings.ExtractionSettings``; unset ones come from what an index or features
    directory stores, else the defaults) and the runtime (``cfcd.settings.Runtime``)."""
    from ..settings import preparation_names

    p.add_argument("--model", default="default", help="model name, A+B (a concatenation) or weights file (default: ImageNet MobileNetV2 + EfficientNet-Lite2)")
    p.add_argument("--backbone", help="backbone of a timm state dict, e.g. timm:convnext_tiny")
    add_settings_arguments(p)
    p.add_argument("--preparation", choices=preparation_names(), default=None,
                   help="image preparation: official (OpenCV-equivalent resizing of official CFCD) or cfcd "
                   "(Pillow, antialiased) (default: the model's)")
    add_runtime_arguments(p)


def add_runtime_arguments(p) -> None:
    """How the network runs (``cfcd.settings.Runtime``), for commands whose model and settings
    come from elsewhere (``cfcd index sync``: the index's)."""
    p.add_argument("--batch-size", type=int, default=None, help="images per step (default: 1 on CPU, 16 on GPU)")
    p.add_argument("--workers", type=int, default=None, help="decoding processes (default: 0 on CPU, up to 8 on GPU)")
    p.add_argument("--decode-threads", type=int, default=None,
                   help="threads decoding the next images while the network runs, without --workers; 0: in turn "
                   "(default: on CPU 1 + cores // 8, at most 4; on GPU 0)")
    p.add_argument("--image-threads", type=int, default=None,
                   help="with onnxruntime on a CPU: images decoded and run through the network at once, each by its own "
                   "thread; 1: one image at a time on every core (default: min(cores, 4))")
    p.add_argument("--device", default=None, help="cpu, cuda, cuda:1 ... (default: cuda if available)")
    p.add_argument("--amp", action="store_true", help="mixed precision (bf16 on CPU, fp16 on GPU)")
    add_engine_argument(p)


def add_engine_argument(p) -> None:
    from ..settings import ENGINES

    p.add_argument("--runtime", choices=ENGINES, default=None,
                   help="what runs the network: auto = onnxruntime on a CPU when installed (the model exported once "
                   "to ~/.cache/cfcd/onnx and checked against PyTorch), else PyTorch; onnx; torch "
                   "(default: $CFCD_RUNTIME, else auto). Descriptors and indexes are the same either way")


def add_settings_arguments(p, scales_help: str | None = None, max_side_help: str | None = None) -> None:
    from ..settings import DEFAULT_MAX_SIDE, DEFAULT_MAX_WORKING_SIDE, DEFAULT_SCALES, PRESETS, parse_scales

    scales_help = scales_help or ",".join(f"{s:g}" for s in DEFAULT_SCALES) + "; official CFCD checkpoints: the paper's five"
    max_side_help = max_side_help or f"{DEFAULT_MAX_SIDE}; official CFCD checkpoints: original size"
    p.add_argument("--settings", choices=list(PRESETS), default=None, dest="preset",
                   help="start from these settings instead of the model's defaults: paper = the CFCD paper's five "
                   "scales at the original size (Revisited Oxford/Paris); --scales and --max-side still apply")
    p.add_argument("--scales", type=parse_scales, default=None, help=f"comma-separated scales (default: {scales_help})")
    p.add_argument("--max-side", type=int, default=None,
                   help=f"resize so the long side is this many px before scaling; 0: original size (default: {max_side_help})")
    p.add_argument("--max-working-side", type=int, default=None,
                   help="largest long side the network sees at any scale; larger images are reduced "
                   f"(default: {DEFAULT_MAX_WORKING_SIDE})")


def settings_overrides(args) -> dict:
    """The extraction settings given on the command line (None: not given; see
    ``cfcd.settings.resolve``)."""
    return {
        "preset": getattr(args, "preset", None),
        "scales": args.scales,
        "max_side": args.max_side,
        "max_working_side": args.max_working_side,
        "preparation": getattr(args, "preparation", None),
    }


def runtime(args, progress: bool = True):
    """``cfcd.settings.Runtime`` from the shared options."""
    from ..settings import Runtime

    return Runtime(device=getattr(args, "device", None), batch_size=getattr(args, "batch_size", None),
                   num_workers=getattr(args, "workers", None), decode_threads=getattr(args, "decode_threads", None),
                   image_threads=getattr(args, "image_threads", None),
                   amp=getattr(args, "amp", False), progress=progress,
                   engine=getattr(args, "runtime", None))


def read_image_list(source: str) -> list[Path]:
    from ..data.images import list_images

    path = Path(source)
    if path.is_dir():
        return list_images(path)
    if path.is_file():
        base = path.parent
        lines = [line.strip() for line in path.read_text().splitlines()]
        return [p if p.is_absolute() else base / p for p in (Path(line) for line in lines if line)]
    raise NotFound(f"{source}: neither a folder of images nor a list file")


def run(args) -> None:
    import torch
    import torch.distributed as dist

    from ..extraction import extract_to_dir
    from ..model import load_model
    from ..settings import resolve

    if int(os.environ.get("WORLD_SIZE", "1")) > 1 and not dist.is_initialized():
        dist.init_process_group("gloo")  # only carries the shard bookkeeping; devices stay local
    images = read_image_list(args.images)
    if not images:
        raise InputError(f"{args.images}: no images found")
    model = load_model(args.model, backbone=args.backbone)
    rank = dist.get_rank() if dist.is_initialized() else 0
    if args.device is None and "LOCAL_RANK" in os.environ and torch.cuda.is_available():
        args.device = f"cuda:{os.environ['LOCAL_RANK']}"
    out = extract_to_dir(
        model,
        images,
        args.output,
        ids=[str(p) for p in images],
        settings=resolve(None, settings_overrides(args), model),
        runtime=runtime(args, progress=rank == 0),
        shard_size=args.shard_size,
        dtype="float16" if args.float16 else "float32",
        skip_errors=True,
    )
    if rank == 0:
        manifest = json.loads((out / "manifest.json").read_text())
        print(f"{len(images) - len(manifest['failed'])} descriptors in {out}")
        for row in manifest["failed"]:
            print(f"skipped unreadable image: {manifest['errors'].get(str(row), images[row])}")
    if dist.is_initialized():
        dist.destroy_process_group()
