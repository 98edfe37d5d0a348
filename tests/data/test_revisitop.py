import io
import os
import pickle
import tarfile
import threading
from dataclasses import replace
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import numpy as np
import pytest

from cfcd.cli import main
from cfcd.data import revisitop
from cfcd.data.revisitop import UnsafeArchiveError, download_dataset, extract_archive, load_dataset, read_gnd
from cfcd.download import DownloadError
from cfcd.safe_pickle import UnsafePickleError

IMLIST = ["all_souls_000001", "all_souls_000002", "radcliffe_camera_000003", "magdalen_000004"]
QIMLIST = ["all_souls_000013", "radcliffe_camera_000519"]


def gnd_dict():
    return {
        "imlist": IMLIST,
        "qimlist": QIMLIST,
        "gnd": [
            {"bbx": np.array([136.5, 34.2, 648.5, 955.7]), "easy": np.array([0]), "hard": np.array([1]), "junk": np.array([], dtype=np.int64)},
            {"bbx": [10.0, 20.0, 30.0, 40.0], "easy": np.array([2]), "hard": np.array([], dtype=np.int64), "junk": np.array([3])},
        ],
    }


def write_layout(root, name="roxford5k"):
    jpg = root / name / "jpg"
    jpg.mkdir(parents=True)
    for n in IMLIST + QIMLIST:
        (jpg / f"{n}.jpg").write_bytes(b"jpeg bytes")
    with open(root / name / f"gnd_{name}.pkl", "wb") as f:
        pickle.dump(gnd_dict(), f)


class RunsCode:
    """Unpickling calls os.system, which must never happen."""

    def __init__(self, marker):
        self.marker = marker

    def __reduce__(self):
        return (os.system, (f"touch {self.marker}",))


def test_load_dataset(tmp_path):
    write_layout(tmp_path)
    ds = load_dataset(tmp_path, "ROxford5k")
    jpg = tmp_path / "roxford5k" / "jpg"
    assert ds.name == "roxford5k"
    assert ds.images == [jpg / f"{n}.jpg" for n in IMLIST]
    assert ds.queries == [jpg / f"{n}.jpg" for n in QIMLIST]
    assert ds.query_crops[0] == (jpg / "all_souls_000013.jpg", (136.5, 34.2, 648.5, 955.7))
    assert ds.bboxes[1] == (10.0, 20.0, 30.0, 40.0)
    assert ds.gnd[1]["junk"].tolist() == [3]


def test_load_dataset_errors_say_what_to_run(tmp_path):
    with pytest.raises(FileNotFoundError, match=f"gnd_rparis6k.pkl not found; run `cfcd data download rparis6k --root {tmp_path}`"):
        load_dataset(tmp_path, "rparis6k")
    write_layout(tmp_path)
    (tmp_path / "roxford5k" / "jpg" / "magdalen_000004.jpg").unlink()
    with pytest.raises(FileNotFoundError, match="1 images of roxford5k are missing, e.g. .*magdalen_000004.jpg; run `cfcd data download"):
        load_dataset(tmp_path, "roxford5k")
    with pytest.raises(ValueError, match="unknown dataset 'oxford5k'"):
        load_dataset(tmp_path, "oxford5k")


def test_load_distractors(tmp_path):
    data = tmp_path / "revisitop1m"
    (data / "jpg").mkdir(parents=True)
    (data / "revisitop1m.txt").write_text("a/1.jpg\nb/2.jpg\n")
    ds = load_dataset(tmp_path, "revisitop1m")
    assert ds.images == [data / "jpg" / "a/1.jpg", data / "jpg" / "b/2.jpg"]
    assert ds.queries == [] and ds.gnd == []


@pytest.mark.parametrize("protocol", [2, 4, 5])
def test_read_gnd_of_every_protocol(tmp_path, protocol):
    path = tmp_path / "gnd.pkl"
    path.write_bytes(pickle.dumps(gnd_dict(), protocol=protocol))
    cfg = read_gnd(path)
    assert cfg["imlist"] == IMLIST
    np.testing.assert_array_equal(cfg["gnd"][0]["bbx"], [136.5, 34.2, 648.5, 955.7])


def test_read_gnd_refuses_code_without_running_it(tmp_path):
    marker = tmp_path / "ran"
    path = tmp_path / "gnd_roxford5k.pkl"
    path.write_bytes(pickle.dumps({"imlist": [], "qimlist": [], "gnd": [RunsCode(marker)]}))
    with pytest.raises(UnsafePickleError, match=r"gnd_roxford5k.pkl: refused to load global \w+\.system"):
        read_gnd(path)
    assert not marker.exists()


def test_read_gnd_rejects_other_dicts(tmp_path):
    path = tmp_path / "gnd.pkl"
    path.write_bytes(pickle.dumps({"imlist": []}))
    with pytest.raises(ValueError, match="not a revisitop ground-truth file"):
        read_gnd(path)


def tgz(members: dict[str, bytes]) -> bytes:
    buf = io.BytesIO()
    with tarfile.open(fileobj=buf, mode="w:gz") as tar:
        for name, data in members.items():
            info = tarfile.TarInfo(name)
            info.size = len(data)
            tar.addfile(info, io.BytesIO(data))
    return buf.getvalue()


def test_extract_archive_refuses_escaping_members(tmp_path):
    for bad in ("../evil.jpg", "/tmp/evil.jpg", "a/../../evil.jpg"):
        archive = tmp_path / "bad.tgz"
        archive.write_bytes(tgz({"ok.jpg": b"x", bad: b"y"}))
        with pytest.raises(UnsafeArchiveError, match="points outside the folder"):
            extract_archive(archive, tmp_path / "out", flatten=False)
    assert not (tmp_path / "evil.jpg").exists()


class Server:
    """Serves a folder over HTTP with Range support, recording (path, Range header) per request."""

    def __init__(self, folder: Path):
        self.folder, self.requests = folder, []
        server = self

        class Handler(BaseHTTPRequestHandler):
            def do_GET(self):
                rng = self.headers.get("Range")
                server.requests.append((self.path, rng))
                path = server.folder / self.path.lstrip("/")
                if not path.is_file():
                    self.send_error(404)
                    return
                data = path.read_bytes()
                start = int(rng.removeprefix("bytes=").split("-")[0]) if rng else 0
                if start >= len(data) and rng:
                    self.send_response(416)
                    self.end_headers()
                    return
                self.send_response(206 if rng else 200)
                if rng:
                    self.send_header("Content-Range", f"bytes {start}-{len(data) - 1}/{len(data)}")
                self.send_header("Content-Length", str(len(data) - start))
                self.end_headers()
                self.wfile.write(data[start:])

            def log_message(self, *args):
                pass

        self.httpd = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.url = f"http://127.0.0.1:{self.httpd.server_port}"
        threading.Thread(target=self.httpd.serve_forever, daemon=True).start()

    def paths(self):
        return [p for p, _ in self.requests]


OXFORD_ARCHIVE = tgz({f"oxbuild/{n}.jpg": n.encode() for n in IMLIST + QIMLIST})


@pytest.fixture
def mirror(tmp_path, monkeypatch):
    served = tmp_path / "served"
    (served / "roxford5k").mkdir(parents=True)
    (served / "roxford5k" / "gnd_roxford5k.pkl").write_bytes(pickle.dumps(gnd_dict()))
    (served / "roxford5k" / "oxbuild_images-v1.tgz").write_bytes(OXFORD_ARCHIVE)
    server = Server(served)
    monkeypatch.setenv(revisitop.MIRROR_ENV, server.url)
    yield server
    server.httpd.shutdown()
    server.httpd.server_close()


def test_cli_download_builds_the_layout(tmp_path, mirror, capsys):
    root = tmp_path / "data"
    assert main(["data", "download", "roxford5k", "--root", str(root), "--no-progress"]) == 0
    assert capsys.readouterr().out.strip() == f"roxford5k: {root / 'roxford5k'}"
    ds = load_dataset(root, "roxford5k")
    assert ds.images[2].read_bytes() == b"radcliffe_camera_000003"
    assert not (root / "roxford5k" / "oxbuild_images-v1.tgz").exists()
    assert (root / "roxford5k" / ".oxbuild_images-v1.tgz.extracted").exists()
    before = len(mirror.requests)
    download_dataset("roxford5k", root, progress=False)
    assert len(mirror.requests) == before  # nothing fetched twice


def test_download_resumes_a_partial_file(tmp_path, mirror):
    root = tmp_path / "data"
    half = len(OXFORD_ARCHIVE) // 2
    part = root / "roxford5k" / "oxbuild_images-v1.tgz.part"
    part.parent.mkdir(parents=True)
    part.write_bytes(OXFORD_ARCHIVE[:half])
    download_dataset("roxford5k", root, progress=False)
    assert ("/roxford5k/oxbuild_images-v1.tgz", f"bytes={half}-") in mirror.requests
    assert load_dataset(root, "roxford5k").queries[1].read_bytes() == b"radcliffe_camera_000519"


def test_checksum_mismatch_is_a_user_error(tmp_path, mirror, monkeypatch, capsys):
    source = revisitop.SOURCES["roxford5k"]
    wrong = replace(source, archives=(replace(source.archives[0], sha256="0" * 64),))
    monkeypatch.setitem(revisitop.SOURCES, "roxford5k", wrong)
    root = tmp_path / "data"
    assert main(["data", "download", "roxford5k", "--root", str(root), "--no-progress"]) == 2
    assert "checksum mismatch" in capsys.readouterr().err
    assert not list((root / "roxford5k").glob("oxbuild_images-v1.tgz*"))


def test_damaged_archive_is_deleted(tmp_path, mirror):
    (mirror.folder / "roxford5k" / "oxbuild_images-v1.tgz").write_bytes(OXFORD_ARCHIVE[:-40])
    root = tmp_path / "data"
    with pytest.raises(DownloadError, match="damaged archive"):
        download_dataset("roxford5k", root, progress=False)
    assert not (root / "roxford5k" / "oxbuild_images-v1.tgz").exists()
    assert not (root / "roxford5k" / ".oxbuild_images-v1.tgz.extracted").exists()


def test_malicious_gnd_is_refused_and_deleted(tmp_path, mirror):
    marker = tmp_path / "ran"
    (mirror.folder / "roxford5k" / "gnd_roxford5k.pkl").write_bytes(pickle.dumps(RunsCode(marker)))
    root = tmp_path / "data"
    with pytest.raises(DownloadError, match="refused to load global"):
        download_dataset("roxford5k", root, progress=False)
    assert not marker.exists()
    assert not (root / "roxford5k" / "gnd_roxford5k.pkl").exists()


def test_download_distractors_keeps_member_paths(tmp_path, mirror):
    folder = mirror.folder / "revisitop1m"
    folder.mkdir()
    names = [f"{i % 7}/{i}.jpg" for i in range(1, revisitop.R1M_ARCHIVES + 1)]
    (folder / "revisitop1m.txt").write_text("\n".join(names) + "\n")
    for i, name in enumerate(names, start=1):
        (folder / f"revisitop1m.{i}.tar.gz").write_bytes(tgz({name: name.encode()}))
    root = tmp_path / "data"
    download_dataset("revisitop1m", root, progress=False)
    ds = load_dataset(root, "revisitop1m")
    assert len(ds.images) == revisitop.R1M_ARCHIVES
    assert ds.images[12].read_bytes() == b"6/13.jpg"
