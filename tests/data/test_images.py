import io

import numpy as np
import pytest
import torch
from PIL import Image

from samples import png_canvas

from cfcd.data.decoding import ImageError, ImageTooLarge, load_image
from cfcd.data.images import get_preparation, to_tensor


def save(img: Image.Image, path, **kw):
    img.save(path, **kw)
    return path


def test_exif_orientation_is_applied(tmp_path):
    img = Image.new("RGB", (40, 20), (255, 0, 0))
    exif = Image.Exif()
    exif[0x0112] = 6  # rotate 90 degrees clockwise on display
    path = save(img, tmp_path / "rot.jpg", exif=exif.tobytes())
    assert load_image(path).size == (20, 40)


@pytest.mark.parametrize("mode", ["L", "CMYK", "RGBA", "P", "LA", "I;16", "1"])
def test_every_mode_becomes_rgb(tmp_path, mode):
    base = Image.fromarray(np.random.default_rng(0).integers(0, 256, (16, 24, 3), dtype=np.uint8))
    img = base.convert(mode) if mode != "I;16" else Image.fromarray((np.arange(16 * 24).reshape(16, 24) * 100).astype(np.uint16))
    ext = {"CMYK": "jpg", "I;16": "png", "1": "png"}.get(mode, "png")
    out = load_image(save(img, tmp_path / f"x.{ext}"))
    assert out.mode == "RGB" and out.size == (24, 16)


def test_sixteen_bit_keeps_contrast(tmp_path):
    ramp = np.tile(np.linspace(0, 65535, 32).astype(np.uint16), (8, 1))
    out = np.asarray(load_image(save(Image.fromarray(ramp), tmp_path / "ramp.png")))
    assert out[..., 0].min() == 0 and out[..., 0].max() == 255


def test_transparent_pixels_become_white(tmp_path):
    img = Image.new("RGBA", (4, 4), (0, 0, 0, 0))
    assert np.asarray(load_image(save(img, tmp_path / "t.png"))).min() == 255


def test_pixel_limit_stops_decompression_bombs(tmp_path):
    path = save(Image.new("RGB", (200, 200)), tmp_path / "big.png")
    with pytest.raises(ImageTooLarge, match="big.png.*exceeds the limit"):
        load_image(path, max_pixels=10_000)


@pytest.mark.parametrize("side", [10000, 60000])  # Pillow warns above 89 Mpx, refuses above 179 Mpx
def test_canvas_over_pillows_own_limit_is_too_large(tmp_path, side):
    path = tmp_path / "bomb.png"
    path.write_bytes(png_canvas(side, side))
    with pytest.raises(ImageTooLarge, match="bomb.png.*pixels"):
        load_image(path, max_pixels=side * side + 1)


def test_truncated_file_names_the_file(tmp_path):
    data = io.BytesIO()
    Image.fromarray(np.random.default_rng(0).integers(0, 256, (64, 64, 3), dtype=np.uint8)).save(data, "JPEG")
    path = tmp_path / "cut.jpg"
    path.write_bytes(data.getvalue()[: len(data.getvalue()) // 2])
    with pytest.raises(ImageError, match="cut.jpg"):
        load_image(path)


@pytest.mark.parametrize("content", [b"", b"not an image at all", b"\x89PNG\r\n\x1a\n garbage"])
def test_non_images_raise_image_error(tmp_path, content):
    path = tmp_path / "fake.jpg"
    path.write_bytes(content)
    with pytest.raises(ImageError, match="fake.jpg"):
        load_image(path)


def test_missing_file_and_directory(tmp_path):
    with pytest.raises(ImageError, match="nope.jpg: no such file"):
        load_image(tmp_path / "nope.jpg")
    with pytest.raises(ImageError, match="is a directory"):
        load_image(tmp_path)


def test_bytes_input():
    buf = io.BytesIO()
    Image.new("RGB", (5, 7), (1, 2, 3)).save(buf, "PNG")
    assert load_image(buf.getvalue()).getpixel((0, 0)) == (1, 2, 3)


def test_to_tensor_is_rgb_in_unit_range():
    img = Image.new("RGB", (2, 3), (255, 0, 128))
    x = to_tensor(img)
    assert x.shape == (3, 3, 2) and x.dtype == torch.float32
    assert torch.equal(x[:, 0, 0], torch.tensor([1.0, 0.0, 128 / 255]))


def test_preparation_sizes_round_and_only_cfcd_keeps_a_minimum_side():
    pillow, official = get_preparation("cfcd"), get_preparation("official")
    assert pillow.size(100, 10, 0.707) == (71, 32)
    assert official.size(100, 10, 0.707) == (71, 7)
    assert official.size(101, 10, 0.5) == (50, 5)  # Python's round: 50.5 -> 50, as the official code
    img = Image.new("RGB", (50, 40), (10, 20, 30))
    for prep in (pillow, official):
        assert torch.equal(prep.views(img, [(50, 40)])[0], to_tensor(img))


def _photo_like(w: int = 157, h: int = 103) -> Image.Image:
    """Smooth shapes plus fine texture: resamplers that differ show it at small scales."""
    y, x = np.mgrid[0:h, 0:w].astype(np.float32)
    noise = np.random.default_rng(0).integers(0, 60, (h, w, 3))
    arr = np.stack([x / w * 180, y / h * 180, 90 + 60 * np.sin(x / 3) * np.cos(y / 5)], axis=-1) + noise
    return Image.fromarray(np.clip(arr, 0, 255).astype(np.uint8))


def test_official_preparation_resizes_as_opencv_does():
    """The official extractor: cv2.imread -> float32 -> cv2.resize(INTER_LINEAR) at
    (int(round(w * s)), int(round(h * s))). Compared with OpenCV itself, run here."""
    cv2 = pytest.importorskip("cv2", reason="opencv-python-headless is in the dev extras: pip install -e .[dev]")
    img = _photo_like()
    official, pillow = get_preparation("official"), get_preparation("cfcd")
    pixels = np.asarray(img, dtype=np.float32)

    def to_pixels(x):  # [0, 1] tensor -> 0..255 pixel values
        return x * 255

    worst_pillow = 0.0
    for s in (0.3535, 0.5, 0.7071, 1.0, 1.4142):
        size = official.size(*img.size, s)
        expected = torch.from_numpy(cv2.resize(pixels, size, interpolation=cv2.INTER_LINEAR)).permute(2, 0, 1)
        assert (to_pixels(official.views(img, [size])[0]) - expected).abs().max() < 0.01, s
        worst_pillow = max(worst_pillow, float((to_pixels(pillow.views(img, [size])[0]) - expected).abs().max()))
    assert worst_pillow > 20  # Pillow's antialiased filter is a different function


def test_official_preparation_truncates_crop_boxes_as_the_official_code():
    img = _photo_like()
    arr = np.asarray(img)
    box = (3.9, 5.5, 40.7, 30.2)  # the official code: im[int(y0):int(y1), int(x0):int(x1)]
    assert np.array_equal(np.asarray(get_preparation("official").crop(img, box)), arr[5:30, 3:40])
    assert np.array_equal(np.asarray(get_preparation("cfcd").crop(img, box)), arr[6:30, 4:41])  # rounded
    assert np.array_equal(np.asarray(get_preparation("official").crop(img, (-2, 0, 500, 20))), arr[0:20, :])
    with pytest.raises(ImageError, match="empty crop box"):
        get_preparation("official").crop(img, (10.2, 5, 10.9, 20))


def _jpeg(path, size=(400, 300)):
    rng = np.random.default_rng(1)
    Image.fromarray(rng.integers(0, 256, (size[1], size[0], 3), dtype=np.uint8)).save(path, quality=90)
    return path


def test_a_jpeg_is_decoded_reduced_only_when_half_its_size_is_enough(tmp_path):
    from cfcd.data.decoding import decode_image

    path = _jpeg(tmp_path / "a.jpg")
    asked = []
    half = decode_image(path, need=lambda size: asked.append(size) or (200, 150))
    assert asked == [(400, 300)] and half.image.size == (200, 150) and half.frame == (0, 0, 200, 150)
    assert half.reduced and half.size == (400, 300)
    for need in (lambda size: (201, 150), lambda size: None, None):
        full = decode_image(path, need=need)
        assert not full.reduced and full.image.size == full.size == (400, 300)
        assert np.array_equal(np.asarray(full.image), np.asarray(load_image(path)))


@pytest.mark.parametrize("fmt", ["PNG", "WEBP", "TIFF"])
def test_other_formats_are_decoded_at_full_size(tmp_path, fmt):
    """Pillow's PNG, WebP and TIFF decoders have no reduced decode: the need is ignored."""
    from cfcd.data.decoding import decode_image

    path = tmp_path / f"a.{fmt.lower()}"
    Image.new("RGB", (400, 300), (10, 20, 30)).save(path, fmt)
    decoded = decode_image(path, need=lambda size: (50, 38))
    assert decoded.image.size == (400, 300) and not decoded.reduced


def test_a_reduced_region_maps_full_size_boxes_onto_the_smaller_image():
    from cfcd.data.decoding import Decoded

    small = Image.new("RGB", (151, 101))
    # 1203 x 805 decoded at 1/8 and flipped top to bottom: the partial last row is now the first
    decoded = Decoded(small, (1203, 805), (0.0, 0.375, 150.375, 101.0))
    part, box = decoded.region((8, 16, 808, 805))  # at 1/8: (1, 2.375, 101, 101), so the pixels (1, 2, 101, 101)
    assert part.size == (100, 99) and box == pytest.approx((0, 0.375, 100, 99))
    assert np.array_equal(np.asarray(part), np.asarray(small.crop((1, 2, 101, 101))))
    part, box = decoded.region((0, 0, 1203, 805))
    assert part is small and box == (0.0, 0.375, 150.375, 101.0)


def test_heic_is_read_upright(tmp_path):
    pillow_heif = pytest.importorskip("pillow_heif", reason="HEIC needs the heif extra: pip install -e .[heif]")
    img = Image.new("RGB", (64, 32), (255, 0, 0))
    img.paste((0, 0, 255), (32, 0, 64, 32))  # red left, blue right
    exif = Image.Exif()
    exif[0x0112] = 6  # shown turned 90 degrees clockwise: red on top
    pillow_heif.from_pillow(img).save(tmp_path / "phone.heic", quality=90, exif=exif.tobytes())
    out = load_image(tmp_path / "phone.heic")
    assert out.size == (32, 64)
    assert np.abs(np.subtract(out.getpixel((16, 8)), (255, 0, 0))).max() < 8
    assert np.abs(np.subtract(out.getpixel((16, 56)), (0, 0, 255))).max() < 8


def test_heic_without_pillow_heif_says_what_to_install(tmp_path, monkeypatch):
    from PIL import Image as PILImage

    path = tmp_path / "phone.heic"
    path.write_bytes(b"\x00\x00\x00\x18ftypheic" + bytes(64))  # a HEIF header is all it takes to be recognised
    monkeypatch.setitem(__import__("sys").modules, "pillow_heif", None)  # import fails as if not installed
    monkeypatch.setattr(PILImage, "ID", [i for i in PILImage.ID if i != "HEIF"])  # nor registered by an earlier test
    with pytest.raises(ImageError, match=r"phone\.heic: a HEIC/HEIF image.*pip install 'cfcd\[heif\]'"):
        load_image(path)
    with open(path, "rb") as f, pytest.raises(ImageError, match=r"phone\.heic: a HEIC/HEIF image"):
        load_image(f)


def test_heic_files_are_listed(tmp_path):
    from cfcd.data.images import list_images

    for name in ("a.HEIC", "b.heif", "c.jpg", "d.txt"):
        (tmp_path / name).write_bytes(b"")
    assert [p.name for p in list_images(tmp_path)] == ["a.HEIC", "b.heif", "c.jpg"]
