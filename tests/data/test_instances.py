import pytest

from cfcd.data.instances import NO_SOURCE, load_instances
from samples import make_image


def test_load_with_manifest(tmp_path):
    for name in ("p/1.jpg", "p/2.jpg", "q/1.jpg"):
        make_image(tmp_path / "images" / name)
    (tmp_path / "manifest.csv").write_text(
        "path,identity,source\nimages/q/1.jpg,q,s2\nimages/p/1.jpg,p,s1\nimages/p/2.jpg,p,s1\n"
    )
    for folder in (tmp_path, tmp_path / "images"):  # the set's root or its images folder
        data = load_instances(folder)
        assert data.paths == [tmp_path / "images" / n for n in ("q/1.jpg", "p/1.jpg", "p/2.jpg")]
        assert data.identities == ["q", "p", "p"]
        assert data.sources == ["s2", "s1", "s1"]


def test_load_without_manifest(image_folder):
    data = load_instances(image_folder)
    assert len(data) == 6
    assert data.identities == [p.parent.name for p in data.paths] == ["g0"] * 3 + ["g1"] * 3
    assert set(data.sources) == {NO_SOURCE}


def test_manifest_errors_name_the_file(tmp_path):
    (tmp_path / "manifest.csv").write_text("path,identity\nimages/a/1.jpg,a\n")
    with pytest.raises(FileNotFoundError, match="missing"):
        load_instances(tmp_path)
    (tmp_path / "manifest.csv").write_text("file,label\nx,y\n")
    with pytest.raises(ValueError, match="path, identity"):
        load_instances(tmp_path)
    with pytest.raises(FileNotFoundError, match="not a folder"):
        load_instances(tmp_path / "nowhere")
