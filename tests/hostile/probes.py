"""The inputs a hostile but fair tester sends, each with the status docs/serving.md documents."""

from __future__ import annotations

import io

import numpy as np
from PIL import Image

from samples import png_canvas


def encoded(img: Image.Image, fmt: str, **kw) -> bytes:
    out = io.BytesIO()
    img.save(out, fmt, **kw)
    return out.getvalue()


def picture(size=(120, 90), seed: int = 0) -> Image.Image:
    rng = np.random.default_rng(seed)
    return Image.fromarray(rng.integers(0, 256, (size[1], size[0], 3), dtype=np.uint8))


def png_48bit(width: int = 40, height: int = 30) -> bytes:
    """RGB at 16 bits per channel (Pillow reads it, but cannot write it)."""
    row = np.arange(width * 3, dtype=">u2").tobytes()
    return png_canvas(width, height, bit_depth=16, color_type=2, rows=b"".join(b"\x00" + row for _ in range(height)))


def bilevel_png(side: int) -> bytes:
    """A real, complete 1-bit PNG of side x side white pixels: tiny file, huge canvas."""
    row = b"\x00" + b"\xff" * ((side + 7) // 8)
    return png_canvas(side, side, bit_depth=1, color_type=0, rows=row * side)


def uploads() -> dict[str, tuple[bytes, int]]:
    """name -> (file bytes, expected status of POST /search) under the default limits."""
    pic = picture()
    png = encoded(pic, "PNG")
    jpeg = encoded(pic, "JPEG", quality=90)
    palette = pic.convert("P", palette=Image.ADAPTIVE, colors=16)
    palette.info["transparency"] = 0
    frames = [picture(seed=s).convert("P") for s in range(3)]
    gif = io.BytesIO()
    frames[0].save(gif, "GIF", save_all=True, append_images=frames[1:])
    return {
        "empty": (b"", 400),
        "text": (b"hello, I am plain text and not a picture\n" * 10, 400),
        "svg": (b'<svg xmlns="http://www.w3.org/2000/svg" width="10" height="10"><rect width="10" height="10"/></svg>', 400),
        "truncated png": (png[: len(png) // 2], 400),
        "truncated jpeg": (jpeg[: len(jpeg) // 2], 400),
        "png signature only": (png[:8], 400),
        "png header only": (png[:33], 400),
        "jpeg header only": (jpeg[:200], 400),
        "cmyk jpeg": (encoded(pic.convert("CMYK"), "JPEG"), 200),
        "16-bit gray png": (encoded(Image.fromarray((np.arange(1200, dtype=np.uint16) * 50).reshape(30, 40)), "PNG"), 200),
        "48-bit png": (png_48bit(), 200),
        "palette png with transparency": (encoded(palette, "PNG"), 200),
        "webp": (encoded(pic, "WEBP"), 200),
        "tiff": (encoded(pic, "TIFF"), 200),
        "animated gif": (gif.getvalue(), 200),
        "over --max-pixels (7000x7000 declared)": (png_canvas(7000, 7000), 413),
        "bomb over Pillow's warning (10000^2)": (png_canvas(10000, 10000), 413),
        "bomb over Pillow's error (15000^2, complete 1-bit PNG)": (bilevel_png(15000), 413),
        "bomb 60000^2 declared": (png_canvas(60000, 60000), 413),
    }


# name -> (form fields besides a valid image, expected status)
FORMS = {
    "k = 0": ({"k": "0"}, 422),
    "k huge": ({"k": str(10**30)}, 422),
    "k not a number": ({"k": "ten"}, 422),
    "qe negative": ({"qe": "-1"}, 422),
    "bbox NaN": ({"bbox": "nan,0,10,10"}, 400),
    "bbox infinite": ({"bbox": "0,0,inf,10"}, 400),
    "bbox three numbers": ({"bbox": "1,2,3"}, 400),
    "bbox reversed": ({"bbox": "30,30,10,10"}, 400),
    "bbox outside the image": ({"bbox": "0,0,5000,5000"}, 400),
    "bbox thinner than a pixel": ({"bbox": "10,10,10.2,30"}, 400),
}

# GET path -> allowed statuses
PATHS = {
    "/images/-1": {422},
    "/images/9223372036854775807": {404},
    "/images/9223372036854775808": {422},
    "/images/18446744073709551616": {422},
    f"/images/{10**30}": {422},
    "/images/999999": {404},
    "/images/abc": {422},
    "/images/1.5": {422},
    "/images/0;ls": {422},
    "/thumbnails/9223372036854775808": {422},
    "/thumbnails/-5?size=64": {422},
    "/thumbnails/0?size=5000": {400},
    "/thumbnails/0?size=abc": {422},
    f"/thumbnails/0?size={10**30}": {400, 422},
    "/images/../../etc/passwd": {404},
    "/images/%2e%2e%2f%2e%2e%2fetc%2fpasswd": {404, 422},
    "/images/..%2F..%2Fetc%2Fpasswd": {404, 422},
    "/thumbnails/%2Fetc%2Fpasswd": {404, 422},
    "/static/../../../../etc/passwd": {404},
    "/static/%2e%2e/%2e%2e/%2e%2e/etc/passwd": {404},
    "/nothing-here": {404},
}
