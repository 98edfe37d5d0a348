"""The pixel check of the near tier: one shot aligns (crops, resizes either way, brightness),
another shot of the same scene does not, a flat image matches nothing."""

from __future__ import annotations

from PIL import Image, ImageEnhance

from cfcd.index.same_shot import NEAR_PIXELS, aligned_similarity
from samples import scene


def test_one_shot_aligns_and_another_does_not():
    view = scene(3, (480, 360)).convert("L")
    photo = view.crop((0, 0, 400, 300))
    assert aligned_similarity(photo, photo) > 0.999
    cropped = photo.crop((14, 10, 378, 282))  # 9 % of each axis
    assert aligned_similarity(photo, cropped) >= NEAR_PIXELS
    assert aligned_similarity(cropped, photo) == aligned_similarity(photo, cropped)  # either role
    bigger = cropped.resize((728, 544), Image.Resampling.LANCZOS)
    assert aligned_similarity(photo.resize((200, 150)), bigger) >= NEAR_PIXELS
    assert aligned_similarity(photo, ImageEnhance.Brightness(photo).enhance(0.7)) >= NEAR_PIXELS
    # Moved along by a fifth of the frame: most of the scene is shared, yet no placement fits.
    moved = view.crop((80, 40, 480, 340))
    assert aligned_similarity(photo, moved) < NEAR_PIXELS
    # A crop larger than the tier allows (30 % of each axis) is not one shot either.
    assert aligned_similarity(photo, photo.crop((60, 45, 340, 255))) < NEAR_PIXELS


def test_a_flat_image_matches_nothing():
    flat = Image.new("L", (200, 150), 128)
    assert aligned_similarity(flat, flat) == -1.0
    assert abs(aligned_similarity(scene(4).convert("L"), flat)) < 0.01  # placed on a flat window: no correlation
