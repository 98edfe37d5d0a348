"""Which photo of a duplicate group to keep: facts read from real files, the rules in order,
``--prefer`` reordering them, and the reason given."""

from __future__ import annotations

import os

import pytest
from PIL import Image

from cfcd.index.keeper import choose, rules_order
from cfcd.index.photo_facts import PhotoFacts, pixel_hash, read_facts


def photo(path, size=(120, 90), exif: dict | None = None, mtime: float | None = None, **save) -> str:
    path.parent.mkdir(parents=True, exist_ok=True)
    tags = Image.Exif()
    for tag, value in (exif or {}).items():
        if tag == 0x9003:  # DateTimeOriginal lives in the Exif IFD
            tags.get_ifd(0x8769)[tag] = value
        else:
            tags[tag] = value
    Image.new("RGB", size, (90, 140, 200)).save(path, exif=tags, **save)
    if mtime is not None:
        os.utime(path, (mtime, mtime))
    return str(path)


def keep(paths, prefer=()) -> tuple[str, str]:
    ids = list(range(len(paths)))
    kept, why = choose(ids, [read_facts(p) for p in paths], rules_order(prefer))
    return os.path.basename(paths[kept]), why


def test_facts_from_the_header(tmp_path):
    p = photo(tmp_path / "a.jpg", (120, 90), {0x0112: 6, 0x010F: "Acme", 0x9003: "2020:05:01 10:00:00"})
    facts = read_facts(p)
    # Stored 120 x 90 with orientation 6: upright it is 90 x 120; the orientation is not metadata.
    assert (facts.width, facts.height, facts.format, facts.exif_tags) == (90, 120, "JPEG", 2)
    assert facts.date == "2020-05-01T10:00:00" and facts.file_size == os.path.getsize(p)
    assert read_facts(str(tmp_path / "gone.jpg")) == PhotoFacts(str(tmp_path / "gone.jpg"))
    assert pixel_hash(str(tmp_path / "gone.jpg")) is None


def test_heic_is_read_and_kept_over_its_jpeg(tmp_path):
    pillow_heif = pytest.importorskip("pillow_heif", reason="HEIC needs the heif extra: pip install -e .[heif]")
    img = Image.new("RGB", (160, 120), (90, 140, 200))
    pillow_heif.from_pillow(img).save(tmp_path / "phone.heic", quality=90)
    jpeg = photo(tmp_path / "phone.jpg", (160, 120), mtime=1)  # older: only the format tells them apart
    facts = read_facts(str(tmp_path / "phone.heic"))
    assert (facts.width, facts.height, facts.format) == (160, 120, "HEIF")
    assert keep([jpeg, str(tmp_path / "phone.heic")]) == ("phone.heic", "better format (HEIF over JPEG)")


def test_rules_in_order(tmp_path):
    big = photo(tmp_path / "big.jpg", (160, 120), mtime=2_000)
    small = photo(tmp_path / "small.png", (80, 60), mtime=1_000)
    assert keep([small, big]) == ("big.jpg", "largest pixel count")
    png = photo(tmp_path / "same.png", (160, 120), mtime=3_000)
    assert keep([big, png]) == ("same.png", "better format (PNG over JPEG)")
    tagged = photo(tmp_path / "tagged.jpg", (160, 120), {0x010F: "Acme", 0x0110: "One"}, mtime=4_000)
    assert keep([big, tagged]) == ("tagged.jpg", "more metadata (EXIF)")
    old = photo(tmp_path / "old.jpg", (160, 120), mtime=500)
    assert keep([big, old]) == ("old.jpg", "older file")
    twin = photo(tmp_path / "twin.jpg", (160, 120), mtime=2_000)
    assert keep([twin, big]) == ("twin.jpg", "lowest id")
    # Rules narrow the field in turn; the reason names each that left photos out.
    assert keep([small, big, png, old]) == ("same.png", "largest pixel count, then better format (PNG over JPEG)")


def test_prefer_reorders_the_rules(tmp_path):
    original = photo(tmp_path / "Originals" / "2019" / "a.jpg", (80, 60), mtime=5_000)
    bigger = photo(tmp_path / "Edits" / "a.jpg", (160, 120), mtime=1_000)
    facts = [read_facts(bigger), read_facts(original)]
    assert choose([0, 1], facts, rules_order()) == (0, "largest pixel count")
    # A folder named Originals anywhere in the path, or that very folder.
    assert choose([0, 1], facts, rules_order(["folder:Originals"])) == (1, "in folder Originals")
    absolute = f"folder:{tmp_path / 'Originals'}"
    assert choose([0, 1], facts, rules_order([absolute])) == (1, f"in folder {tmp_path / 'Originals'}")
    assert choose([0, 1], facts, rules_order(["folder:2019"])) == (1, "in folder 2019")
    assert choose([0, 1], facts, rules_order(["folder:a.jpg"])) == (0, "largest pixel count")  # a file is no folder
    assert choose([0, 1], facts, rules_order(["older"])) == (0, "older file")
    assert rules_order(["older", "folder:X"]) == ["older", "folder:X", "pixels", "format", "metadata"]
    for bad in ("biggest", "folder:"):
        with pytest.raises(ValueError, match=f"keep rule '{bad}': use one of pixels, format, metadata, older or folder:NAME"):
            rules_order([bad])
