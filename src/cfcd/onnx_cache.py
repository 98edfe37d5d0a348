"""A PyTorch model's ONNX graph, exported once per model identity and run by onnxruntime.

``cached_graph(model)`` returns an ``OnnxRuntimeModel`` standing in for ``model`` in
``cfcd.extract``. The graph is kept in ``cache_dir()`` under a key that hashes what the graph is
made of: every parameter and buffer (names, shapes, bytes), the model config, the ONNX opset, the
torch version (the exporter) and ``GRAPH_FORMAT``. Beside each ``KEY.onnx`` lies ``KEY.json``,
the verdict of checking that file against PyTorch on ``check_images()`` (cosine of every
descriptor >= ``MIN_COSINE``), with the file's SHA-256: a file the verdict does not describe
(written by hand, or changed since) is checked again before use, and a refused graph stays
refused (``GraphRefused``) until its files are deleted. Files are written atomically, so
processes that export the same model at once each write a whole file and agree on it.

The cache keeps the most recently used graphs within ``MAX_CACHE_BYTES``: each use of an accepted
graph touches ``KEY.json`` (the graph's own file keeps its time: it says when it was exported), and after an
export the least recently used graphs other than the new one are deleted until the rest fit. A
process that already loaded a deleted graph keeps running it; the next one exports it again.
"""

from __future__ import annotations

import hashlib
import importlib.util
import json
import logging
import os
from pathlib import Path

import torch
import torch.nn.functional as F

from .atomic import atomic_write
from .errors import MismatchError, Unavailable
from .settings import cache_root

log = logging.getLogger(__name__)

# Lowest cosine between onnxruntime's and PyTorch's descriptor of any check image for a graph to be
# used; the default model's graphs agree to 0.9999999 (issue 32).
MIN_COSINE = 0.9999
# Raise to make every cached graph be exported again (a change of how export_onnx builds graphs).
GRAPH_FORMAT = 1
# The cache's size after an export (the new graph stays even alone over it): a ResNet-50's graph
# is about 100 MB, smaller backbones' tens of MB, so a few dozen models fit.
MAX_CACHE_BYTES = 2 * 2**30


class GraphRefused(MismatchError):
    """The model's ONNX graph could not be exported, or its descriptors disagree with PyTorch's."""

    def __init__(self, message: str, key: str):
        super().__init__(message)
        self.key = key


def cache_dir() -> Path:
    """``$CFCD_CACHE/onnx``, else ``$XDG_CACHE_HOME/cfcd/onnx`` (default ``~/.cache/cfcd/onnx``)."""
    return cache_root() / "onnx"


def require_onnxruntime() -> None:
    """``Unavailable`` saying how to install onnx and onnxruntime, unless both are installed.
    Looked up, not imported: importing onnx costs 0.7 s of every command's start-up, and it is
    needed only to export a graph, once per model."""
    for name in ("onnx", "onnxruntime"):
        if importlib.util.find_spec(name) is None:
            raise Unavailable(f"--runtime onnx: {name} is not installed; pip install 'cfcd[onnx]' "
                              "(or onnx onnxruntime), or use --runtime torch")


def onnxruntime_available() -> bool:
    try:
        require_onnxruntime()
    except Unavailable:
        return False
    return True


def graph_key(model: torch.nn.Module) -> str:
    """The hex SHA-256 of everything the exported graph depends on (see the module docstring)."""
    from .export import DEFAULT_OPSET

    h = hashlib.sha256()
    h.update(json.dumps({"format": GRAPH_FORMAT, "opset": DEFAULT_OPSET, "torch": torch.__version__,
                         "config": model.config.to_dict()}, sort_keys=True).encode())
    for name, t in model.state_dict().items():
        t = t.detach().cpu().contiguous()
        h.update(f"{name}:{t.dtype}:{tuple(t.shape)}".encode())
        h.update(t.reshape(-1).view(torch.uint8).numpy().tobytes() if t.numel() else b"")
    return h.hexdigest()


def check_images() -> list[torch.Tensor]:
    """Fixed smooth RGB [0, 1] batches of a few sizes (odd and even sides, batch of 1 and 2):
    low-frequency noise upsampled, so the network sees structure, not only pixel noise."""
    g = torch.Generator().manual_seed(0)
    sizes = [(1, 224, 224), (2, 171, 256), (1, 320, 239)]
    return [F.interpolate(torch.rand(n, 3, 9, 9, generator=g), size=(h, w), mode="bilinear", align_corners=False)
            for n, h, w in sizes]


def min_cosine(graph, model: torch.nn.Module) -> float:
    """The lowest cosine between ``graph``'s and ``model``'s descriptors of ``check_images()``."""
    lowest = 1.0
    with torch.inference_mode():
        for x in check_images():
            lowest = min(lowest, F.cosine_similarity(graph(x), model(x).float(), dim=1).min().item())
    return lowest


def _sha256(path: Path) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            h.update(block)
    return h.hexdigest()


def cached_graph(model: torch.nn.Module, threads: int | None = None, directory: str | Path | None = None,
                 max_bytes: int = MAX_CACHE_BYTES):
    """``model``'s graph from the cache (exported and checked first when it is not there), as an
    ``OnnxRuntimeModel`` with ``threads`` intra-op threads; ``GraphRefused`` when the export
    failed, or the graph does not run or disagrees with ``model`` (remembered in the cache). After
    an export, ``evict`` keeps the cache within ``max_bytes``."""
    from .export import export_onnx
    from .model.onnx import OnnxRuntimeModel

    require_onnxruntime()
    model = getattr(model, "module", model).cpu().eval()
    key = graph_key(model)
    root = Path(directory) if directory is not None else cache_dir()
    path, verdict_path = root / f"{key}.onnx", root / f"{key}.json"
    name = getattr(model, "name", "unnamed")
    verdict = json.loads(verdict_path.read_text()) if verdict_path.is_file() else None
    graph, exported = None, False
    if not path.is_file() and not (verdict and "onnx_sha256" not in verdict):  # not a remembered failed export
        log.info("exporting model %r to ONNX for onnxruntime (once per model): %s", name, path)
        try:
            export_onnx(model, path)
            verdict, exported = None, True
        except Exception as err:  # an exporter limit (an operator, data-dependent control flow)
            verdict = {"accepted": False, "reason": _one_line(f"could not be exported ({type(err).__name__}: {err})")}
            _write_verdict(verdict_path, verdict)
    if path.is_file():
        digest = _sha256(path)
        if verdict is None or verdict.get("onnx_sha256") != digest:
            graph, verdict = _check(path, model, threads)
            _write_verdict(verdict_path, {**verdict, "onnx_sha256": digest})
    if exported:
        evict(root, keep=key, max_bytes=max_bytes)
    if not verdict["accepted"]:
        raise GraphRefused(f"model {name!r}: its ONNX graph {path} {verdict['reason']}; delete {path.stem}.* "
                           f"in {root} to export again", key)
    _touch(verdict_path)  # a use: a refused graph's files keep their time, and age out of the cache
    return graph or OnnxRuntimeModel(path, threads=threads)


def _touch(path: Path) -> None:
    """Mark a graph as used now (its verdict's time); a read-only cache is used as it is."""
    try:
        os.utime(path)
    except OSError:
        pass


def evict(root: str | Path, keep: str, max_bytes: int = MAX_CACHE_BYTES) -> list[str]:
    """Delete the least recently used graphs (``KEY.onnx`` and ``KEY.json`` together; last use:
    the later of their times), never ``keep``, until the cache holds at most ``max_bytes``.
    Returns the deleted keys, oldest first."""
    groups: dict[str, list[int]] = {}  # key -> [last use in ns, bytes]
    for p in Path(root).iterdir():
        if p.suffix not in (".onnx", ".json") or p.name.startswith("."):  # atomic_write's temporaries start with "."
            continue
        try:
            st = p.stat()
        except FileNotFoundError:  # deleted by another process meanwhile
            continue
        used, size = groups.setdefault(p.stem, [0, 0])
        groups[p.stem] = [max(used, st.st_mtime_ns), size + st.st_size]
    total = sum(size for _, size in groups.values())
    groups.pop(keep, None)
    deleted = []
    for stem, (_, size) in sorted(groups.items(), key=lambda kv: kv[1][0]):
        if total <= max_bytes:
            break
        for suffix in (".onnx", ".json"):
            (Path(root) / f"{stem}{suffix}").unlink(missing_ok=True)
        total -= size
        deleted.append(stem)
    if deleted:
        log.info("ONNX graph cache %s: deleted the %d least recently used graph(s) to stay within %d MB", root,
                 len(deleted), max_bytes // 2**20)
    return deleted


def _check(path: Path, model: torch.nn.Module, threads: int | None):
    """(the graph at ``path``, or None when it does not run; the verdict on it)."""
    from .model.onnx import OnnxRuntimeModel

    try:
        graph = OnnxRuntimeModel(path, threads=threads)
        cosine = min_cosine(graph, model)
    except Exception as err:  # not a runnable graph of this model: truncated, another model's shapes
        return None, {"accepted": False, "reason": _one_line(f"does not run ({type(err).__name__}: {err})")}
    verdict = {"accepted": cosine >= MIN_COSINE, "min_cosine": cosine, "required": MIN_COSINE}
    if not verdict["accepted"]:
        verdict["reason"] = f"disagrees with PyTorch (min cosine {cosine:.6f} < {MIN_COSINE})"
    return graph, verdict


def _one_line(text: str) -> str:
    return text.splitlines()[0] if text else text


def _write_verdict(path: Path, verdict: dict) -> None:
    with atomic_write(path, "w") as f:
        f.write(json.dumps(verdict, indent=1))
