"""Pixels in and out: uint8 (C, H, W) arrays ↔ PNG files and bytes, image grids, and image files
of any mode converted for the BL-AE, the same way for uploads and for the folder loader.

Uploads: the pixel count is read from the header and checked before any pixel is decoded, so a
small file that claims a huge image (a decompression bomb) is refused without being expanded.
"""

from __future__ import annotations

import io
import math
import warnings
from pathlib import Path

import numpy as np
from PIL import Image, UnidentifiedImageError

from service.errors import InvalidInputError


def to_pil(image: np.ndarray) -> Image.Image:
    """(C, H, W) uint8 with C = 1 or 3 → a Pillow image."""
    if image.shape[0] == 1:
        return Image.fromarray(image[0], mode="L")
    return Image.fromarray(np.ascontiguousarray(image.transpose(1, 2, 0)), mode="RGB")


def make_grid(images: np.ndarray, *, columns: int | None = None, gap: int = 2) -> np.ndarray:
    """(N, C, H, W) → one (C, rows·(H+gap)−gap, cols·(W+gap)−gap) image, gaps black."""
    n, c, h, w = images.shape
    cols = columns or max(1, math.ceil(math.sqrt(n)))
    rows = max(1, math.ceil(n / cols))
    grid = np.zeros((c, rows * (h + gap) - gap, cols * (w + gap) - gap), np.uint8)
    for i in range(n):  # one slice copy per image; n is at most a few thousand
        r, k = divmod(i, cols)
        grid[:, r * (h + gap) : r * (h + gap) + h, k * (w + gap) : k * (w + gap) + w] = images[i]
    return grid


def save_png(image: np.ndarray, path: Path) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    to_pil(image).save(path, format="PNG")


RGB = tuple[int, int, int]
BLACK: RGB = (0, 0, 0)
SIXTEEN_BIT_MODES = {"I;16", "I;16L", "I;16B", "I;16N", "I"}  # "I": how 16-bit PNGs may open
BLANK_SPREAD = 8  # grey levels: a flattened image flatter than this shows nothing


def background_colour(images: np.ndarray) -> RGB:
    """A data set's background: per channel, the median of its (N, C, H, W) images' borders."""
    sample = images[:10_000]
    border = np.concatenate(
        [sample[:, :, 0], sample[:, :, -1], sample[:, :, :, 0], sample[:, :, :, -1]], axis=2
    )
    per_channel = np.median(border.transpose(1, 0, 2).reshape(border.shape[1], -1), axis=1)
    values = [int(v) for v in per_channel]
    return (values[0],) * 3 if len(values) == 1 else (values[0], values[1], values[2])


def colour_and_alpha(image: Image.Image, field: str) -> tuple[np.ndarray, np.ndarray | None]:
    """Any Pillow image → (H, W, 3) uint8 colour and (H, W) alpha in 0..1 (None if opaque).

    Pillow's own conversions clip 16-bit values to 255 and drop alpha; here 16-bit greyscale is
    scaled (65535 → 255) and alpha, including a palette's or a greyscale image's transparent
    colour, is kept for compositing. Palette, CMYK, YCbCr and LAB go through Pillow's converters.
    """
    if image.mode in SIXTEEN_BIT_MODES:
        values = np.asarray(image, dtype=np.int64)
        if values.size and (values.min() < 0 or values.max() > 65535):
            raise InvalidInputError(f"{field} holds 32-bit values; send an 8- or 16-bit image")
        grey = ((values * 255 + 32767) // 65535).astype(np.uint8)  # rounds; 257·v → v exactly
        return np.repeat(grey[..., None], 3, axis=2), None
    if image.mode == "F":
        raise InvalidInputError(f"{field} is a floating-point image; send an 8- or 16-bit image")
    if "A" in image.getbands() or "a" in image.getbands() or "transparency" in image.info:
        rgba = np.asarray(image.convert("RGBA"), dtype=np.uint8)
        alpha = rgba[..., 3].astype(np.float64) / 255
        return np.ascontiguousarray(rgba[..., :3]), None if alpha.min() == 1 else alpha
    return np.asarray(image.convert("RGB"), dtype=np.uint8), None


def flatten(
    colour: np.ndarray, alpha: np.ndarray | None, background: RGB, field: str
) -> np.ndarray:
    """Composite colour over the background by alpha; refuse a picture drawn only in alpha in
    the background's own colour, which would flatten to a blank image."""
    if alpha is None:
        return colour
    over = np.asarray(background, np.float64)
    mixed = colour * alpha[..., None] + over * (1 - alpha[..., None])
    flat = np.clip(np.rint(mixed), 0, 255).astype(np.uint8)
    if np.ptp(flat) < BLANK_SPREAD <= 255 * np.ptp(alpha):
        raise InvalidInputError(
            f"{field} draws its picture only in its alpha channel, in the colour of the "
            f"background it goes over {background}: it would encode as a blank image; "
            "send it flattened onto a contrasting background"
        )
    return flat


def to_channels(rgb: np.ndarray, channels: int, size: int | None = None) -> np.ndarray:
    """(H, W, 3) uint8 → (channels, size, size) uint8; grey is Pillow's ITU-R 601-2 luma,
    which keeps R = G = B pixels exactly."""
    image = Image.fromarray(rgb, mode="RGB")
    if channels == 1:
        image = image.convert("L")
    if size is not None and image.size != (size, size):
        image = image.resize((size, size), Image.Resampling.BILINEAR)
    pixels = np.asarray(image, dtype=np.uint8)
    return pixels[None] if channels == 1 else np.ascontiguousarray(pixels.transpose(2, 0, 1))


def open_image(data: bytes, *, max_pixels: int, field: str = "image") -> Image.Image:
    """Decode PNG/JPEG/… bytes, checking the pixel count before any pixel is decoded."""
    if not data:
        raise InvalidInputError(f"{field} is empty")
    too_big = f"{field} has more than {max_pixels} pixels; at most {max_pixels} are allowed"
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("error", Image.DecompressionBombWarning)
            image = Image.open(io.BytesIO(data))
            width, height = image.size
            if width * height > max_pixels:
                raise InvalidInputError(
                    f"{field} is {width}×{height} pixels; {too_big[len(field) + 1 :]}"
                )
            image.load()
    except InvalidInputError:
        raise
    except (Image.DecompressionBombError, Image.DecompressionBombWarning):
        raise InvalidInputError(too_big) from None
    except UnidentifiedImageError:
        raise InvalidInputError(
            f"{field} is not an image format Pillow reads (PNG, JPEG, BMP, …)"
        ) from None
    except (OSError, ValueError, SyntaxError) as exc:
        raise InvalidInputError(f"{field} is corrupt or truncated: {exc}") from None
    return image


def read_image(
    data: bytes,
    *,
    channels: int,
    size: int,
    max_pixels: int,
    background: RGB = BLACK,
    field: str = "image",
) -> np.ndarray:
    """Uploaded image bytes → (channels, size, size) uint8, converted as the folder loader
    converts files: 16-bit scaled, alpha composited over the run's background colour."""
    image = open_image(data, max_pixels=max_pixels, field=field)
    colour, alpha = colour_and_alpha(image, field)
    return to_channels(flatten(colour, alpha, background, field), channels, size)


def png_bytes(image: np.ndarray) -> bytes:
    """(C, H, W) uint8 → PNG file bytes."""
    buffer = io.BytesIO()
    to_pil(image).save(buffer, format="PNG")
    return buffer.getvalue()
