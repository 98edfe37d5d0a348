"""Multi-scale global descriptors, in memory or as resumable ``.npy`` shards.

``extract(model, images, settings, runtime)``: ``settings`` (``cfcd.settings.ExtractionSettings``)
say what the descriptor is, ``runtime`` (``cfcd.settings.Runtime``) how it is computed. For an
image of size (w, h) and a scale s, the network sees the image resized to
(round(w f s), round(h f s)) by the model's image preparation (``cfcd.data.images``), with
f = max_side / max(w, h) when a long side is given and f = 1 otherwise, lowered so that the
largest scale stays within ``max_working_side``. Each scale's descriptor is L2-normalised; the
descriptor of the image is the L2-normalised sum over scales (spec section 6). For a
concatenation of models (``cfcd.model.concat``) each model's part is normalised on its own. Query crops
are (image, (x0, y0, x1, y1)) pairs, cropped before anything else.

Speed comes from overlap and what PyTorch offers: the next images are decoded and resized while
the model runs (on a CPU by threads of this process, ``cfcd.data.prefetch``; on a GPU by
DataLoader workers), tensors of equal size are batched (within a pixel budget), inference mode,
channels-last memory, and BatchNorm folded into the convolutions (``torch.fx`` fusion) on a
copy of the model. ``bench/extract_speed.py`` measures this against the official loop.
"""

from __future__ import annotations

import copy as _copy
import json
import logging
import math
import os
import threading
import weakref
from collections import defaultdict
from contextlib import closing
from functools import partial
from pathlib import Path
from typing import Sequence, Union

import numpy as np
import torch
from PIL import Image
from torch.fx.experimental.optimization import fuse
from torch.utils.data import DataLoader, Dataset
from tqdm import tqdm

from .atomic import atomic_write
from .data.decoding import DEFAULT_MAX_PIXELS, Decoded, ImageError, decode_image
from .data.images import get_preparation
from .data.prefetch import decode_threads, image_threads, in_order, usable_cores
from .errors import ConfigError, InputError, MismatchError, NotFound
from .failpoints import failpoint
from .model.concat import normalize_parts, part_dims
from .model.onnx import OnnxRuntimeModel
from .settings import CFCD_SCALES, ExtractionSettings, Runtime, resolve
from .sharded import ShardedArray

log = logging.getLogger(__name__)

__all__ = ["CFCD_SCALES", "ExtractionSettings", "Runtime", "extract", "extract_to_dir", "load_features", "prepare"]

FEATURES_FORMAT = "cfcd-features"
MANIFEST = "manifest.json"

BBox = tuple[float, float, float, float]
ImageInput = Union[str, os.PathLike, Image.Image, tuple]


def check_bbox(box, shown: str | None = None) -> BBox:
    """``box`` as four finite floats (x0, y0, x1, y1), or ``ValueError`` naming it (as ``shown``)."""
    try:
        values = tuple(float(v) for v in box)
    except (TypeError, ValueError):
        values = ()
    if len(values) != 4 or not all(math.isfinite(v) for v in values):
        raise ConfigError(f"query box {shown or repr(box)}: expected four finite numbers x0,y0,x1,y1 in pixels, "
                         "e.g. 10,20,300,400")
    return values


def parse_bbox(text: str) -> BBox:
    """``"x0,y0,x1,y1"`` -> a box with x1 > x0 and y1 > y0, or ``ValueError`` saying what is wrong."""
    box = check_bbox(text.split(","), repr(text))
    if box[2] <= box[0] or box[3] <= box[1]:
        raise ConfigError(f"query box {text!r}: expected x1 > x0 and y1 > y0")
    return box


def split_input(item: ImageInput) -> tuple[object, BBox | None]:
    """``path`` / ``PIL.Image`` / ``(image, bbox)`` -> (image source, bbox or None)."""
    if isinstance(item, tuple):
        if len(item) != 2:
            raise ConfigError(f"a query crop is (image, (x0, y0, x1, y1)); got {item!r}")
        return item[0], check_bbox(item[1])
    return item, None


def resolved(settings: ExtractionSettings | None, model) -> ExtractionSettings:
    """``settings`` as they are when resolved already (an ``ExtractionSettings`` with its
    preparation, as ``cfcd.settings.resolve`` returns them), else ``resolve(None, settings, model)``:
    each path resolves once, in whichever function it enters first."""
    if isinstance(settings, ExtractionSettings) and settings.preparation is not None:
        return settings
    return resolve(None, settings, model)


def working_sizes(width: int, height: int, settings: ExtractionSettings) -> list[tuple[int, int]]:
    """(w, h) the network sees at each scale for an image (or crop) of ``width`` x ``height``."""
    long_side = max(width, height)
    base = settings.max_side / long_side if settings.max_side else 1.0
    largest = base * max(settings.scales) * long_side
    if largest > settings.max_working_side:
        base *= settings.max_working_side / largest
    prep = get_preparation(settings.preparation)
    return [prep.size(width, height, base * s) for s in settings.scales]


def prepare(item: ImageInput, settings: ExtractionSettings, max_pixels: int = DEFAULT_MAX_PIXELS) -> list[torch.Tensor]:
    """Decode, crop and resize one input: one normalised tensor (3, H, W) per scale.
    ``settings.preparation`` must be resolved (see ``ExtractionSettings.for_model``).

    Sizes and boxes are those of the upright image as stored; a preparation that allows it
    decodes a JPEG at a reduced size that is still ``decode_margin`` times the largest view
    (``decode_image``), so a 24 Mpx photo costs little more than a 1 Mpx one."""
    prep = get_preparation(settings.preparation)
    source, bbox = split_input(item)

    def region_of(size):
        return prep.crop_box(size, bbox) if bbox is not None else (0, 0, *size)

    def need(size):
        """The smallest size of the whole image to resample the largest view of the region
        from: the preparation's margin times the view's size."""
        try:
            x0, y0, x1, y1 = region_of(size)
        except ImageError:
            return None  # reported below, with the file's name
        w, h = max(working_sizes(x1 - x0, y1 - y0, settings), key=lambda s: s[0] * s[1])
        k = prep.decode_margin
        return math.ceil(k * w * size[0] / (x1 - x0)), math.ceil(k * h * size[1] / (y1 - y0))

    if isinstance(source, Image.Image):
        decoded = Decoded.full(source.convert("RGB"))
    else:
        decoded = decode_image(source, max_pixels, need if prep.decode_margin else None)
    try:
        region = region_of(decoded.size)
    except ImageError as err:
        raise ImageError(f"{source if not isinstance(source, Image.Image) else 'image'}: {err}") from None
    sizes = working_sizes(region[2] - region[0], region[3] - region[1], settings)
    if decoded.reduced:
        part, box = decoded.region(region)
        return prep.views(part, sizes, box)
    img = decoded.image if bbox is None else decoded.image.crop(region)
    return prep.views(img, sizes)


def _prepared(item: ImageInput, settings: ExtractionSettings, max_pixels: int):
    """``prepare(item)``, or the ``ImageError`` naming the file: the consumer decides whether
    it stops the extraction (in order, after the images before it are done)."""
    try:
        return prepare(item, settings, max_pixels)
    except ImageError as err:
        return err


class _Prepared(Dataset):
    def __init__(self, items: Sequence[ImageInput], settings: ExtractionSettings, max_pixels: int):
        self.items, self.settings, self.max_pixels = items, settings, max_pixels

    def __len__(self) -> int:
        return len(self.items)

    def __getitem__(self, i: int):
        return i, _prepared(self.items[i], self.settings, self.max_pixels)


def _collate(batch):
    return batch


def _prepared_batches(images: Sequence[ImageInput], settings: ExtractionSettings, rt: Runtime, batch_size: int,
                      num_workers: int, threads: int, pin_memory: bool):
    """Lists of (row, views or ImageError), ``batch_size`` rows each, in row order: prepared by
    ``num_workers`` DataLoader processes, else by ``threads`` threads (``cfcd.data.prefetch``)."""
    max_pixels = rt.max_pixels or DEFAULT_MAX_PIXELS
    if num_workers or not threads:
        yield from DataLoader(_Prepared(images, settings, max_pixels), batch_size=batch_size, num_workers=num_workers,
                              collate_fn=_collate, persistent_workers=False, pin_memory=pin_memory)
        return
    # One intra-op thread each (torch's count is per thread): the tensor conversions of a decode
    # thread would otherwise start an OpenMP team of their own beside the network's.
    fn = partial(_prepared, settings=settings, max_pixels=max_pixels)
    with closing(in_order(fn, images, threads, initializer=partial(torch.set_num_threads, 1))) as prepared:
        batch = []
        for row, views in enumerate(prepared):
            batch.append((row, views))
            if len(batch) == batch_size:
                yield batch
                batch = []
        if batch:
            yield batch


def _batches(tensors: list[tuple[int, torch.Tensor]], max_batch_pixels: int):
    """Group (row, tensor) pairs of equal shape into forward passes of at most
    ``max_batch_pixels`` pixels (one tensor at least)."""
    by_shape = defaultdict(list)
    for row, t in tensors:
        by_shape[tuple(t.shape)].append((row, t))
    for shape, group in by_shape.items():
        per_batch = max(1, max_batch_pixels // (shape[1] * shape[2]))
        for start in range(0, len(group), per_batch):
            chunk = group[start:start + per_batch]
            yield [r for r, _ in chunk], torch.stack([t for _, t in chunk])


_FUSE_LOCK = threading.Lock()


def _weights_version(model: torch.nn.Module) -> tuple:
    """Changes whenever a parameter or buffer is modified in place (optimizer step, load)."""
    return tuple((t.device, t._version) for t in (*model.parameters(), *model.buffers()))


# What extraction derives from a model (its fused copy, its ONNX graph), per model: held beside
# the model rather than on it, so copying or pickling a model never copies an onnxruntime session.
_DERIVED: "weakref.WeakKeyDictionary[torch.nn.Module, dict]" = weakref.WeakKeyDictionary()


def _per_weights(model: torch.nn.Module, kind: str, make):
    """``make()``, kept for ``model`` until its weights change. Under one lock: fx tracing
    patches ``nn.Module.__call__`` globally and export traces too, so neither may run while
    other threads (a server's queries) run the model, and each runs once."""
    with _FUSE_LOCK:
        version = _weights_version(model)
        derived = _DERIVED.setdefault(model, {})
        cached = derived.get(kind)
        if cached is not None and cached[0] == version:
            return cached[1]
        value = make()
        derived[kind] = (version, value)
        return value


def inference_copy(model: torch.nn.Module) -> torch.nn.Module:
    """``model`` with the BatchNorm after each convolution of its backbone folded into the
    convolution (``torch.fx`` fusion; same outputs up to rounding) and channels-last weights,
    as a copy: the caller's model is unchanged. On CPU eager BatchNorm costs about a quarter
    of a ResNet-50's time. A backbone that ``torch.fx`` cannot trace (or a model without one)
    is used as it is. The copy is kept for the model until its weights change (tracing is slow).
    """
    members = getattr(model, "members", None)
    if isinstance(members, torch.nn.ModuleList) and not model.training:  # a concatenation: each member
        copy = _copy.copy(model)
        copy._modules = dict(model._modules, members=torch.nn.ModuleList([inference_copy(m) for m in members]))
        return copy
    backbone = getattr(model, "backbone", None)
    if not isinstance(backbone, torch.nn.Module) or model.training:
        return model

    def make():
        try:
            fused = fuse(backbone).to(memory_format=torch.channels_last)
        except Exception as err:  # e.g. a timm model with data-dependent control flow
            log.debug("extract: backbone not fused (%s)", err)
            fused = None
        copy = _copy.copy(model)  # shallow: shares the head, replaces the backbone
        copy._modules = dict(model._modules, backbone=fused or backbone)
        return copy

    return _per_weights(model, "fused", make)


def runtime_device(rt: Runtime) -> torch.device:
    """``rt.device``, else cuda when available, else the CPU."""
    return torch.device(rt.device or ("cuda" if torch.cuda.is_available() else "cpu"))


def warm(model: torch.nn.Module, runtime: Runtime | None = None) -> None:
    """Make now what ``extract(model, ..., runtime=runtime)`` runs (the fused copy, or the ONNX
    graph: exported, checked and loaded), e.g. before a server's queries arrive."""
    rt = runtime or Runtime()
    device = runtime_device(rt)
    network(model.to(device).eval(), device, rt)


# Cache keys of refused graphs already reported in this process: one warning per model.
_WARNED: set[str] = set()


def network(model: torch.nn.Module, device: torch.device, rt: Runtime, threads: int | None = None) -> torch.nn.Module:
    """What runs ``model`` (in eval mode, on ``device``) in ``extract``, as ``rt.engine`` asks:
    ``torch``: ``inference_copy(model)``; ``onnx``: its graph run by onnxruntime
    (``cfcd.onnx_cache``) with ``threads`` intra-op threads (default: PyTorch's count), CPU only;
    ``auto``: the graph on a CPU when onnxruntime is installed and ``amp`` is off, else PyTorch,
    and PyTorch with a one-line warning when the graph is refused. Either way the descriptors are
    the model's, so what is stored about it is too."""
    from .onnx_cache import GraphRefused, cached_graph, onnxruntime_available, require_onnxruntime

    if isinstance(model, OnnxRuntimeModel):  # a .onnx file given as the model
        return model
    engine = rt.chosen_engine()
    if engine == "onnx":
        if device.type != "cpu" or rt.amp:
            raise ConfigError(f"--runtime onnx runs on the CPU in float32; drop {'--amp' if rt.amp else '--device ' + str(device)} "
                              "or use --runtime torch")
        require_onnxruntime()
    elif engine == "torch" or device.type != "cpu" or rt.amp or not onnxruntime_available():
        return inference_copy(model)

    threads = threads or torch.get_num_threads()

    def make():
        try:
            return cached_graph(model, threads=threads)
        except GraphRefused as err:
            return err.with_traceback(None)  # kept: its frames would keep the model alive

    graph = _per_weights(model, f"onnx-{threads}", make)  # a session per thread count (a server and a build)
    if not isinstance(graph, GraphRefused):
        return graph
    if engine == "onnx":
        raise GraphRefused(str(graph), graph.key)
    if graph.key not in _WARNED:
        _WARNED.add(graph.key)
        log.warning("%s: extracting with PyTorch instead", graph)
    return inference_copy(model)


@torch.inference_mode()
def extract(
    model: torch.nn.Module,
    images: Sequence[ImageInput],
    settings: ExtractionSettings | None = None,
    runtime: Runtime | None = None,
    *,
    skip_errors: bool = False,
    errors: dict[int, str] | None = None,
) -> np.ndarray:
    """Descriptors (n, d) float32 with L2-normalised rows, in the order of ``images``.

    ``images`` holds paths, PIL images or (image, bbox) query crops. ``settings`` None:
    ``cfcd.settings.default_settings(model)``, which is ``ExtractionSettings()`` (scales 0.7071
    and 1 of the image resized to a 384 px long side) for most models, and the paper's five
    scales at the original size for models made for the official preparation (official CFCD
    checkpoints); an unset preparation is the model's. A file that cannot be decoded raises
    ``ImageError`` naming it; with ``skip_errors`` its row is all zeros instead (see
    ``failed_rows``) and, when ``errors`` is given, its message (the file and the cause) is
    stored there under its row.

    ``runtime.batch_size``, ``runtime.num_workers``, ``runtime.decode_threads`` and
    ``runtime.image_threads`` default by device: on a CPU one image at a time per thread; with
    the onnxruntime graph, a few images at once, each decoded and run by a thread of its own
    (``cfcd.data.prefetch.image_threads``), with PyTorch one image on every core, decoded and
    resized by a few threads beside it (``cfcd.data.prefetch.decode_threads``; a worker process
    or larger batches were slower in bench/extract_speed.py); on a GPU, 16 images per step fed
    by decoding processes. None of them changes the order of the rows or, beyond float rounding,
    a descriptor.
    """
    settings = resolved(settings, model)
    rt = runtime or Runtime()
    device = runtime_device(rt)
    on_gpu = device.type == "cuda"
    batch_size = rt.batch_size or (16 if on_gpu else 1)
    num_workers = (min(8, os.cpu_count() or 1) if on_gpu else 0) if rt.num_workers is None else rt.num_workers
    threads = (0 if on_gpu else decode_threads()) if rt.decode_threads is None else rt.decode_threads
    threads = min(threads, len(images) - 1)  # one image: nothing to overlap
    at_once, per_image = _image_threads(rt, on_gpu, batch_size, num_workers, len(images))
    model = model.to(device).eval()
    parts = part_dims(model)
    dim = sum(parts)
    model = network(model, device, rt, threads=per_image if at_once > 1 else None)
    out = np.zeros((len(images), dim), dtype=np.float32)
    if at_once > 1 and isinstance(model, OnnxRuntimeModel):  # else PyTorch (refused graph): as below
        describe = partial(_describe, net=model, settings=settings, max_pixels=rt.max_pixels or DEFAULT_MAX_PIXELS,
                           parts=parts)
        # closing: an error stops the image threads now, not when its traceback is collected
        with closing(in_order(describe, images, at_once, initializer=partial(torch.set_num_threads, 1))) as described, \
                tqdm(total=len(images), unit="img", desc="extract", disable=not rt.progress) as bar:
            for i, row in enumerate(described):
                if isinstance(row, ImageError):
                    _skipped(row, i, skip_errors, errors)
                else:
                    out[i] = row
                bar.update(1)
        return out
    loader = _prepared_batches(images, settings, rt, batch_size, num_workers, threads, pin_memory=on_gpu)
    autocast = torch.autocast(device.type, dtype=torch.bfloat16 if device.type == "cpu" else torch.float16, enabled=rt.amp)
    # closing: an error stops the decode threads now, not when its traceback is collected
    with closing(loader), tqdm(total=len(images), unit="img", desc="extract", disable=not rt.progress) as bar:
        for batch in loader:
            rows, tensors = [], []
            for i, prepared in batch:
                if isinstance(prepared, ImageError):
                    _skipped(prepared, i, skip_errors, errors)
                    continue
                rows.append(i)
                tensors.extend((i, t) for t in prepared)
            acc = {i: torch.zeros(dim, device=device) for i in rows}
            for idx, x in _batches(tensors, rt.max_batch_pixels):
                with autocast:
                    d = model(x.to(device, non_blocking=True, memory_format=torch.channels_last))
                d = normalize_parts(d.float(), parts)
                for i, v in zip(idx, d):
                    acc[i] += v
            for i, v in acc.items():
                out[i] = normalize_parts(v, parts).cpu().numpy()
            bar.update(len(batch))
    return out


def _skipped(err: ImageError, row: int, skip_errors: bool, errors: dict[int, str] | None) -> None:
    """An image that could not be read: raised, or (``skip_errors``) its row left at zero and its
    message kept in ``errors``."""
    if not skip_errors:
        raise err
    if errors is not None:
        errors[row] = str(err)


def _image_threads(rt: Runtime, on_gpu: bool, batch_size: int, num_workers: int, n: int) -> tuple[int, int]:
    """(images at once, onnxruntime threads per image) for ``extract``: ``rt.image_threads``, else
    ``cfcd.data.prefetch.image_threads()`` on a CPU asked for one image at a time; never more
    images than there are."""
    if on_gpu or batch_size > 1 or num_workers:
        return 1, 0
    cores = usable_cores()
    at_once = rt.image_threads or image_threads(cores)[0]
    at_once = max(1, min(at_once, n))
    return at_once, max(1, cores // at_once)


def _describe(item: ImageInput, net: torch.nn.Module, settings: ExtractionSettings, max_pixels: int,
              parts: list[int]) -> np.ndarray | ImageError:
    """One image's descriptor, in the calling thread: decoded, each scaled view through ``net``
    alone, the views' normalised descriptors summed and normalised (what ``extract`` computes
    with batches of one image); or the ``ImageError`` naming the file."""
    views = _prepared(item, settings, max_pixels)
    if isinstance(views, ImageError):
        return views
    acc = sum(normalize_parts(net(x[None]).float(), parts)[0] for x in views)
    return normalize_parts(acc, parts).numpy()


def failed_rows(descriptors: np.ndarray) -> np.ndarray:
    """Indices of the rows ``extract(skip_errors=True)`` left at zero."""
    return np.flatnonzero(~descriptors.any(axis=1))


def _write_npy(path: Path, array: np.ndarray) -> None:
    with atomic_write(path) as f:
        np.save(f, array)


def _write_json(path: Path, data: dict) -> None:
    with atomic_write(path, "w") as f:
        f.write(json.dumps(data, indent=1))


def _dist_info() -> tuple[int, int]:
    if torch.distributed.is_available() and torch.distributed.is_initialized():
        return torch.distributed.get_rank(), torch.distributed.get_world_size()
    return 0, 1


def describe_model(model) -> dict:
    """The model identity stored in manifests and indexes: refuse mixing descriptors of
    different models or settings."""
    model = getattr(model, "module", model)
    return {"name": getattr(model, "name", "unnamed"), "config": model.config.to_dict(), "dim": model.output_dim}


def same_model(a: dict, b: dict) -> bool:
    """Whether two stored model descriptions name the same model. A config key that an older
    file did not record takes its default; files written before models were stored by their
    own name say "default": the same model when config and dimension agree."""
    from .model.concat import config_from_dict

    def norm(d: dict) -> dict:
        return {**d, "config": config_from_dict(d.get("config") or {}).to_dict()}

    a, b = norm(a), norm(b)
    if "default" in (a.get("name"), b.get("name")):
        return a["config"] == b["config"] and a.get("dim") == b.get("dim")
    return a == b


def _same_plan(previous: dict, plan: dict) -> bool:
    """Whether a manifest already in a directory describes the same extraction as ``plan``
    (settings and model compared after filling in what older manifests did not record)."""
    if ExtractionSettings.from_dict(previous) != ExtractionSettings.from_dict(plan):
        return False
    if not same_model(previous.get("model") or {}, plan["model"]):
        return False
    skip = {"model", *ExtractionSettings().to_dict()}
    return all(previous.get(k) == v for k, v in plan.items() if k not in skip)


def extract_to_dir(
    model: torch.nn.Module,
    images: Sequence[ImageInput],
    out_dir: str | Path,
    ids: Sequence[str] | None = None,
    settings: ExtractionSettings | None = None,
    runtime: Runtime | None = None,
    shard_size: int = 1024,
    dtype: str = "float32",
    skip_errors: bool = False,
) -> Path:
    """Extract ``images`` into ``out_dir`` as ``.npy`` shards plus ``manifest.json``, which
    records the model and the (resolved) settings.

    Finished shards are kept: rerunning the same command after an interruption extracts only
    the missing ones. Under ``torchrun`` (an initialised process group), rank r extracts the
    shards r, r + N, ...; rank 0 writes the manifest once all ranks are done, so the result
    is the same file set as a single-process run. The manifest lists the rows that could not
    be read (``failed``) and why (``errors``: row -> message).
    """
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    ids = [str(i) for i in (ids if ids is not None else [split_input(x)[0] for x in images])]
    if len(ids) != len(images):
        raise MismatchError(f"{len(ids)} ids for {len(images)} images")
    if dtype not in ("float32", "float16"):
        raise ConfigError(f"dtype {dtype!r}: choose float32 or float16")
    settings = resolved(settings, model)
    plan = {
        "format": FEATURES_FORMAT,
        "version": 1,
        "model": describe_model(model),
        **settings.to_dict(),
        "dtype": dtype,
        "count": len(ids),
        "ids": ids,
        **_boxes(images),
        "shards": [
            {"file": f"shard-{k:05d}.npy", "start": start, "count": min(shard_size, len(ids) - start)}
            for k, start in enumerate(range(0, len(ids), shard_size))
        ],
    }
    manifest = out / MANIFEST
    if manifest.exists():
        if not _same_plan(json.loads(manifest.read_text()), plan):
            raise MismatchError(f"{out}: holds descriptors made with other images or settings; use a new directory")
    rank, world = _dist_info()
    if rank == 0 and not manifest.exists():
        _write_json(out / (MANIFEST + ".partial"), plan)
    reasons: dict[int, str] = {}
    for shard in plan["shards"][rank::world]:
        path = out / shard["file"]
        if path.exists():
            continue
        rows = slice(shard["start"], shard["start"] + shard["count"])
        errors: dict[int, str] = {}
        desc = extract(model, images[rows], settings, runtime, skip_errors=skip_errors, errors=errors)
        for r in failed_rows(desc):
            reasons[shard["start"] + int(r)] = errors.get(int(r), f"{ids[shard['start'] + int(r)]}: not a readable image")
        _write_npy(path, desc.astype(dtype))
        failpoint("extract.shard")
    if world > 1:
        gathered = [None] * world
        torch.distributed.all_gather_object(gathered, reasons)
        reasons = {r: why for part in gathered for r, why in part.items()}
    if rank == 0:
        missing = [s["file"] for s in plan["shards"] if not (out / s["file"]).exists()]
        if missing:
            raise RuntimeError(f"{out}: shards {missing[:5]} are missing after extraction")
        if manifest.exists():  # a resumed run: keep what the earlier runs found
            previous = json.loads(manifest.read_text())
            for r in previous.get("failed", []):
                reasons.setdefault(r, previous.get("errors", {}).get(str(r), f"{ids[r]}: not a readable image"))
        failed = sorted(reasons)
        _write_json(manifest, {**plan, "failed": failed, "errors": {str(r): reasons[r] for r in failed}})
        (out / (MANIFEST + ".partial")).unlink(missing_ok=True)
    if world > 1:
        torch.distributed.barrier()
    return out


def read_manifest(path: str | Path) -> dict:
    """The manifest of a directory written by ``extract_to_dir``: ids, model, settings, shards
    (cheap: no descriptor is read)."""
    path = Path(path)
    manifest_path = path / MANIFEST
    if not manifest_path.is_file():
        hint = " (an extraction is incomplete: rerun it to resume)" if (path / (MANIFEST + ".partial")).exists() else ""
        raise NotFound(f"{path}: no {MANIFEST}; not a cfcd features directory{hint}")
    manifest = json.loads(manifest_path.read_text())
    if manifest.get("format") != FEATURES_FORMAT:
        raise InputError(f"{manifest_path}: not a cfcd features manifest")
    return manifest


def _boxes(images: Sequence[ImageInput]) -> dict:
    """``{"boxes": [bbox or None per image]}`` when some inputs are crops: the manifest says
    which rows describe a crop, and of which box."""
    boxes = [split_input(x)[1] for x in images]
    return {"boxes": [list(b) if b else None for b in boxes]} if any(boxes) else {}


def load_features(path: str | Path, mmap: bool = False) -> tuple[list[str], np.ndarray | ShardedArray, dict]:
    """(ids, descriptors (n, d) float32, manifest) of a directory written by ``extract_to_dir``.

    With ``mmap`` the descriptors stay on disk: a ``cfcd.sharded.ShardedArray`` over the
    shards' memory maps, read block by block by whoever consumes it.
    """
    path = Path(path)
    manifest = read_manifest(path)
    parts = [np.load(path / s["file"], mmap_mode="r" if mmap else None) for s in manifest["shards"]]
    if not parts:
        return manifest["ids"], np.zeros((0, manifest["model"]["dim"]), np.float32), manifest
    if mmap:
        return manifest["ids"], ShardedArray(parts), manifest
    return manifest["ids"], np.concatenate(parts).astype(np.float32, copy=False), manifest
