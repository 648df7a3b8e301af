"""One picture in any file form gives the same pixels: 8-bit, 16-bit, palette, alpha, CMYK."""

from __future__ import annotations

import io
from pathlib import Path

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis.extra.numpy import arrays
from PIL import Image

from service.data.images import background_colour, read_image
from service.data.sources import load_images
from service.errors import InvalidInputError, SourceError

SIZE = 12
MAX_PIXELS = 10_000
greys = arrays(np.uint8, (SIZE, SIZE))
colours = arrays(np.uint8, (SIZE, SIZE, 3))


def encoded(image: Image.Image, fmt: str = "PNG") -> bytes:
    buffer = io.BytesIO()
    image.save(buffer, format=fmt)
    return buffer.getvalue()


def grey_forms(grey: np.ndarray) -> dict[str, bytes]:
    """The picture as 8-bit, 16-bit, palette, LA, and white drawn in alpha over nothing."""
    palette = Image.fromarray(grey).convert("P")  # exact: at most 256 greys
    glyph = np.dstack([np.full_like(grey, 255)] * 3 + [grey])  # white, coverage = the picture
    return {
        "L": encoded(Image.fromarray(grey)),
        "I;16": encoded(Image.fromarray(grey.astype(np.uint16) * 257)),
        "P": encoded(palette),
        "LA": encoded(Image.fromarray(np.dstack([grey, np.full_like(grey, 255)]), "LA")),
        "RGBA glyph": encoded(Image.fromarray(glyph, "RGBA")),
    }


@settings(max_examples=25, deadline=None)
@given(grey=greys)
def test_grey_picture_reads_the_same_in_every_form(grey: np.ndarray) -> None:
    """A run with a black background (Fashion-MNIST): every form gives the 8-bit pixels exactly,
    so they encode to the same bits (distance 0)."""
    for form, data in grey_forms(grey).items():
        pixels = read_image(data, channels=1, size=SIZE, max_pixels=MAX_PIXELS, field=form)
        np.testing.assert_array_equal(pixels[0], grey, err_msg=form)


@settings(max_examples=25, deadline=None)
@given(rgb=colours)
def test_colour_picture_reads_the_same_in_every_form(rgb: np.ndarray) -> None:
    cmyk = Image.fromarray(rgb).convert("CMYK")  # K = 0: converting back is exact
    opaque = np.dstack([rgb, np.full(rgb.shape[:2], 255, np.uint8)])
    forms = {
        "RGB": encoded(Image.fromarray(rgb)),
        "CMYK": encoded(cmyk, "TIFF"),
        "RGBA": encoded(Image.fromarray(opaque, "RGBA")),
    }
    for form, data in forms.items():
        pixels = read_image(data, channels=3, size=SIZE, max_pixels=MAX_PIXELS, field=form)
        np.testing.assert_array_equal(pixels.transpose(1, 2, 0), rgb, err_msg=form)


def test_alpha_is_composited_over_the_run_background() -> None:
    """Half-covered white over a grey background lands half way; the transparent part is the
    background, not whatever colour hides under alpha 0."""
    rgba = np.zeros((SIZE, SIZE, 4), np.uint8)
    rgba[:, : SIZE // 2] = (255, 255, 255, 128)
    rgba[:, SIZE // 2 :] = (255, 0, 0, 0)
    data = encoded(Image.fromarray(rgba, "RGBA"))
    pixels = read_image(data, channels=3, size=SIZE, max_pixels=MAX_PIXELS, background=(100,) * 3)
    assert pixels[:, 0, 0].tolist() == [178, 178, 178]  # 255·128/255 + 100·127/255, rounded
    assert pixels[:, 0, -1].tolist() == [100, 100, 100]


def test_glyph_drawn_in_the_background_colour_is_refused() -> None:
    """Black ink in alpha over a black-background run would encode as a blank image."""
    ink = np.zeros((SIZE, SIZE, 4), np.uint8)
    ink[3:9, 3:9, 3] = 255
    data = encoded(Image.fromarray(ink, "RGBA"))
    with pytest.raises(InvalidInputError, match=r"only in its alpha channel.*\(0, 0, 0\)"):
        read_image(data, channels=1, size=SIZE, max_pixels=MAX_PIXELS, field="files[0]")
    white = read_image(data, channels=1, size=SIZE, max_pixels=MAX_PIXELS, background=(255,) * 3)
    assert white[0, 5, 5] == 0 and white[0, 0, 0] == 255  # over white the ink shows


def test_float_and_32_bit_images_are_refused() -> None:
    floats = encoded(Image.fromarray(np.ones((SIZE, SIZE), np.float32)), "TIFF")
    with pytest.raises(InvalidInputError, match="floating-point image; send an 8- or 16-bit"):
        read_image(floats, channels=1, size=SIZE, max_pixels=MAX_PIXELS)
    wide = encoded(Image.fromarray(np.full((SIZE, SIZE), 1 << 20, np.int32)), "TIFF")
    with pytest.raises(InvalidInputError, match="32-bit values"):
        read_image(wide, channels=1, size=SIZE, max_pixels=MAX_PIXELS)


def test_folder_loader_converts_like_uploads(tmp_path: Path) -> None:
    """16-bit and alpha files in a folder keep their pixels, composited over the folder's own
    background (its opaque files' border colour, here white)."""
    rng = np.random.default_rng(0)
    pictures = [rng.integers(0, 256, (SIZE, SIZE), dtype=np.uint8) for _ in range(3)]
    for picture in pictures:
        picture[0], picture[-1], picture[:, 0], picture[:, -1] = 255, 255, 255, 255
    (tmp_path / "a").mkdir()
    Image.fromarray(pictures[0]).save(tmp_path / "a" / "0.png")
    Image.fromarray(pictures[1].astype(np.uint16) * 257).save(tmp_path / "a" / "1.png")
    # Black ink whose coverage is 255 - picture: over white, exactly the picture.
    ink = np.dstack([np.zeros_like(pictures[2])] * 3 + [255 - pictures[2]])
    Image.fromarray(ink, "RGBA").save(tmp_path / "a" / "2.png")
    data = load_images(f"folder:{tmp_path}")
    assert data.images.shape == (3, 1, SIZE, SIZE)
    for i, picture in enumerate(pictures):
        np.testing.assert_array_equal(data.images[i, 0], picture, err_msg=f"file {i}")
    assert background_colour(data.images) == (255, 255, 255)


def test_folder_of_glyphs_drawn_only_in_alpha_names_the_file(tmp_path: Path) -> None:
    ink = np.zeros((SIZE, SIZE, 4), np.uint8)
    ink[3:9, 3:9, 3] = 255
    (tmp_path / "a").mkdir()
    Image.fromarray(ink, "RGBA").save(tmp_path / "a" / "glyph.png")
    with pytest.raises(SourceError, match=r"glyph\.png draws its picture only in its alpha"):
        load_images(f"folder:{tmp_path}")
