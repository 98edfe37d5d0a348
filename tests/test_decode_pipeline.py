"""Decoding beside the network (cfcd.data.prefetch): same descriptors, same order, bounded, errors kept."""

import json
import threading
from collections.abc import Sequence

import numpy as np
import pytest
import torch
from refmodels import randomize_batchnorm
from samples import scene

import cfcd
from cfcd.data.decoding import ImageError
from cfcd.data.prefetch import ahead, decode_threads, in_order
from cfcd.errors import ConfigError
from cfcd.extraction import extract_to_dir, failed_rows
from cfcd.settings import ExtractionSettings, Runtime

SETTINGS = ExtractionSettings((0.7071, 1.0), max_side=64)


@pytest.fixture
def tiny_model(tiny_model):
    """The shared tiny model with BatchNorm statistics that let distinct photos differ."""
    return randomize_batchnorm(tiny_model)


def quiet(**kw) -> Runtime:
    return Runtime(device="cpu", progress=False, **kw)


@pytest.fixture
def photos(tmp_path):
    """Ten distinct images of three sizes, two of them larger than the views (reduced decode)."""
    sizes = [(64, 48), (40, 56), (300, 200)]
    paths = [tmp_path / f"p{i:02d}.jpg" for i in range(10)]
    for i, path in enumerate(paths):
        scene(i, sizes[i % 3]).save(path, quality=90)
    return paths


class Recorded(Sequence):
    """A list of inputs that records which items were taken, and by which thread."""

    def __init__(self, items):
        self.items, self.taken, self.threads = list(items), [], set()

    def __len__(self):
        return len(self.items)

    def __getitem__(self, i):
        if isinstance(i, slice):
            return Recorded(self.items[i])
        item = self.items[i]  # past the end: IndexError, the end of iteration, not an item taken
        self.taken.append(i)
        self.threads.add(threading.current_thread().name)
        return item


@pytest.mark.parametrize("threads,batch,network_threads", [(1, 1, 1), (3, 1, 1), (2, 4, 1), (2, 1, 2)])
def test_descriptors_are_bit_identical_with_and_without_decode_threads(tiny_model, photos, threads, batch, network_threads):
    """Also with the network on two threads while each decode thread keeps to one."""
    previous = torch.get_num_threads()
    torch.set_num_threads(network_threads)
    try:
        serial = cfcd.extract(tiny_model, photos, SETTINGS, quiet(decode_threads=0, batch_size=batch))
        overlapped = cfcd.extract(tiny_model, photos, SETTINGS, quiet(decode_threads=threads, batch_size=batch))
    finally:
        torch.set_num_threads(previous)
    assert len({r.tobytes() for r in serial}) == len(photos)  # distinct rows: a swapped order would show
    assert np.array_equal(serial, overlapped)


class ThreadNames(torch.nn.Module):
    """A stand-in network recording which threads are alive while it runs (descriptor: mean colour)."""

    def __init__(self):
        super().__init__()
        self.config = cfcd.ModelConfig(backbone="mobilenet_v2", dim=3)
        self.output_dim, self.name, self.alive = 3, "thread-names", set()

    def forward(self, x):
        self.alive |= {t.name.split("_")[0] for t in threading.enumerate()}
        return x.mean(dim=(2, 3))


def test_the_cpu_default_decodes_in_threads_and_zero_turns_them_off(photos):
    net = ThreadNames()
    cfcd.extract(net, photos, SETTINGS, quiet())
    assert "cfcd-decode" in net.alive
    net.alive.clear()
    cfcd.extract(net, photos, SETTINGS, quiet(decode_threads=0))
    assert "cfcd-decode" not in net.alive
    assert not any(t.name.startswith("cfcd-decode") for t in threading.enumerate())  # none left behind


def test_results_come_in_order_when_a_later_item_finishes_first():
    later_done = threading.Event()

    def work(i):
        if i == 0:  # the first item finishes only after the second has
            assert later_done.wait(30)
        elif i == 1:
            later_done.set()
        return i * 10

    assert list(in_order(work, range(7), threads=2)) == [i * 10 for i in range(7)]


@pytest.mark.parametrize("threads", [1, 3])
def test_items_in_flight_never_exceed_the_bound(threads):
    """The consumer holds each result while the generator is paused: only the bound's worth of
    items have been taken from the input, whatever the threads have finished."""
    items = Recorded(range(20))
    results = in_order(lambda i: i, items, threads)
    for k, value in enumerate(results, start=1):
        assert value == k - 1
        assert len(items.taken) == min(len(items), k - 1 + ahead(threads))
    assert items.threads == {threading.current_thread().name}  # taken by the consumer, not the threads


def test_extraction_takes_only_the_bound_of_images_ahead(photos):
    """Counted inside the network: while it runs on image k, at most ahead(threads) images have
    been taken from the input beyond those already described."""
    items = Recorded(photos)
    seen = []

    class Counting(ThreadNames):
        def forward(self, x):
            seen.append(len(items.taken))
            return super().forward(x)

    cfcd.extract(Counting(), items, ExtractionSettings((1.0,), max_side=64), quiet(decode_threads=2))
    assert len(seen) == len(photos)
    assert all(taken <= k + ahead(2) for k, taken in enumerate(seen))


def test_a_corrupt_file_in_the_middle_is_named_and_nothing_else_is_lost(tiny_model, photos, tmp_path):
    bad = tmp_path / "bad.jpg"
    bad.write_bytes(photos[0].read_bytes()[:300])  # a truncated JPEG
    paths = [*photos[:5], bad, *photos[5:]]
    with pytest.raises(ImageError, match="bad.jpg"):
        cfcd.extract(tiny_model, paths, SETTINGS, quiet(decode_threads=2))
    assert not any(t.name.startswith("cfcd-decode") for t in threading.enumerate())

    errors = {}
    got = cfcd.extract(tiny_model, paths, SETTINGS, quiet(decode_threads=2), skip_errors=True, errors=errors)
    assert failed_rows(got).tolist() == [5] and "bad.jpg" in errors[5]
    serial = cfcd.extract(tiny_model, photos, SETTINGS, quiet(decode_threads=0))
    assert np.array_equal(np.delete(got, 5, axis=0), serial)

    out = extract_to_dir(tiny_model, paths, tmp_path / "features", settings=SETTINGS, runtime=quiet(decode_threads=2),
                         shard_size=4, skip_errors=True)
    manifest = json.loads((out / "manifest.json").read_text())
    assert manifest["failed"] == [5] and "bad.jpg" in manifest["errors"]["5"]


def test_the_thread_count_rule_and_bad_values():
    assert [decode_threads(c) for c in (1, 2, 4, 7, 8, 16, 64)] == [1, 1, 1, 1, 2, 3, 4]
    with pytest.raises(ConfigError, match="decode_threads -1"):
        Runtime(decode_threads=-1)


def test_the_command_line_option(tiny_model, photos, tmp_path, capsys):
    from cfcd.cli import main
    from cfcd.extraction import load_features
    from cfcd.model import save_checkpoint

    ckpt = tmp_path / "tiny.pt"
    save_checkpoint(ckpt, tiny_model)
    folder = photos[0].parent
    common = ["extract", str(folder), "--model", str(ckpt), "--scales", "1", "--max-side", "64"]
    for threads in ("0", "2"):
        assert main([*common, "-o", str(tmp_path / f"t{threads}"), "--decode-threads", threads]) == 0
    assert np.array_equal(load_features(tmp_path / "t0")[1], load_features(tmp_path / "t2")[1])
    assert main([*common, "-o", str(tmp_path / "bad"), "--decode-threads", "-1"]) != 0
    assert "decode_threads -1: expected a whole number >= 0" in capsys.readouterr().err


def test_a_killed_extraction_resumes_to_the_same_descriptors(tiny_model, photos, tmp_path):
    """A real `cfcd extract` (decode threads on, as by default) SIGKILLed after its first shard:
    the rerun keeps that shard and ends with the uninterrupted run's descriptors."""
    import os
    import signal
    import subprocess
    import sys
    import time
    from pathlib import Path

    from cfcd.extraction import load_features
    from cfcd.failpoints import FAILPOINT_ENV
    from cfcd.model import save_checkpoint

    ckpt = tmp_path / "tiny.pt"
    save_checkpoint(ckpt, tiny_model)
    out = tmp_path / "killed"
    argv = [sys.executable, "-m", "cfcd", "extract", str(photos[0].parent), "-o", str(out), "--model", str(ckpt),
            "--scales", "0.7071,1", "--max-side", "64", "--shard-size", "4", "--decode-threads", "2"]
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    proc = subprocess.Popen(argv, env={**env, FAILPOINT_ENV: "extract.shard"}, stdout=subprocess.PIPE,
                            stderr=subprocess.PIPE)
    deadline = time.monotonic() + 300
    while Path(f"/proc/{proc.pid}/stat").read_text().split(") ")[1][0] != "T":  # stopped at the failpoint
        assert proc.poll() is None, proc.communicate()
        assert time.monotonic() < deadline, "cfcd extract never reached its failpoint"
        time.sleep(0.02)
    assert sorted(p.name for p in out.iterdir()) == ["manifest.json.partial", "shard-00000.npy"]
    first = (out / "shard-00000.npy").stat().st_mtime_ns
    os.kill(proc.pid, signal.SIGKILL)
    proc.wait()

    subprocess.run(argv, env=env, check=True, capture_output=True)
    assert (out / "shard-00000.npy").stat().st_mtime_ns == first  # kept, not extracted again
    subprocess.run([*argv[:6], str(tmp_path / "whole"), *argv[7:]], env=env, check=True, capture_output=True)
    ids, resumed, _ = load_features(out)
    assert ids == [str(p) for p in photos] and np.array_equal(resumed, load_features(tmp_path / "whole")[1])


@pytest.fixture
def onnx_forwards(monkeypatch):
    """The names of the threads onnxruntime's graph ran in, one per view."""
    pytest.importorskip("onnxruntime")
    from cfcd.model.onnx import OnnxRuntimeModel

    names: list[str] = []
    real = OnnxRuntimeModel.forward

    def recording(self, x):
        names.append(threading.current_thread().name)
        return real(self, x)

    monkeypatch.setattr(OnnxRuntimeModel, "forward", recording)
    return names


class MeanColour(torch.nn.Module):
    """A network whose descriptor is the image's mean colour: distinct photos, distinct rows."""

    def __init__(self):
        super().__init__()
        self.config = cfcd.ModelConfig(backbone="mobilenet_v2", dim=3)
        self.output_dim, self.name = 3, "mean-colour"

    def forward(self, x):
        return x.mean(dim=(2, 3))


def test_onnx_runs_several_images_at_once_with_the_same_descriptors(tiny_model, photos, tmp_path, onnx_forwards):
    """Each image decoded and run by a thread of its own: the rows are those of one image at a
    time (up to onnxruntime's rounding across thread counts), in order; a corrupt file is named at
    its row and nothing else is lost."""
    colours = cfcd.extract(MeanColour(), photos, SETTINGS, quiet(engine="onnx", image_threads=3))
    assert np.abs(colours - cfcd.extract(MeanColour(), photos, SETTINGS, quiet(engine="torch"))).max() < 1e-6
    assert len({tuple(np.round(r, 4)) for r in colours}) == len(photos)  # distinct rows: the order shows
    onnx_forwards.clear()
    one = cfcd.extract(tiny_model, photos, SETTINGS, quiet(engine="onnx", image_threads=1, decode_threads=0))
    assert set(onnx_forwards) == {threading.current_thread().name}
    onnx_forwards.clear()
    at_once = cfcd.extract(tiny_model, photos, SETTINGS, quiet(engine="onnx", image_threads=3))
    assert len(onnx_forwards) == 2 * len(photos) and len(set(onnx_forwards)) > 1
    assert all(name.startswith("cfcd-decode") for name in onnx_forwards)
    assert np.abs(at_once - one).max() < 1e-5

    bad = tmp_path / "bad.jpg"
    bad.write_bytes(photos[0].read_bytes()[:300])
    paths = [*photos[:5], bad, *photos[5:]]
    with pytest.raises(ImageError, match="bad.jpg"):
        cfcd.extract(tiny_model, paths, SETTINGS, quiet(engine="onnx", image_threads=3))
    errors = {}
    got = cfcd.extract(tiny_model, paths, SETTINGS, quiet(engine="onnx", image_threads=3), skip_errors=True, errors=errors)
    assert failed_rows(got).tolist() == [5] and "bad.jpg" in errors[5]
    assert np.abs(np.delete(got, 5, axis=0) - one).max() < 1e-5


def test_onnx_images_at_once_by_default_on_a_cpu_and_the_rule(tiny_model, photos, onnx_forwards):
    from cfcd.data.prefetch import image_threads

    assert [image_threads(c) for c in (1, 2, 3, 4, 8, 16, 64)] == [(1, 1), (2, 1), (3, 1), (4, 1), (4, 2), (4, 4), (4, 16)]
    cfcd.extract(tiny_model, photos, SETTINGS, quiet(engine="onnx"))
    if len(__import__("os").sched_getaffinity(0)) > 1:
        assert len(set(onnx_forwards)) > 1
    onnx_forwards.clear()
    cfcd.extract(tiny_model, photos[:1], SETTINGS, quiet(engine="onnx"))  # one image: in the caller's thread
    assert set(onnx_forwards) == {threading.current_thread().name}
    with pytest.raises(ConfigError, match="image_threads 0: expected a whole number >= 1"):
        Runtime(image_threads=0)
