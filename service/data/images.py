"""Pixels in and out: uint8 (C, H, W) arrays ↔ PNG files and bytes, image grids, and uploaded
image bytes checked and converted for the BL-AE.

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


def read_image(
    data: bytes, *, channels: int, size: int, max_pixels: int, field: str = "image"
) -> np.ndarray:
    """Decode PNG/JPEG/… bytes, convert to the run's channels and resize to size × size."""
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
    converted = image.convert("L" if channels == 1 else "RGB")
    if converted.size != (size, size):
        converted = converted.resize((size, size), Image.Resampling.BILINEAR)
    pixels = np.asarray(converted, dtype=np.uint8)
    return pixels[None] if channels == 1 else np.ascontiguousarray(pixels.transpose(2, 0, 1))


def png_bytes(image: np.ndarray) -> bytes:
    """(C, H, W) uint8 → PNG file bytes."""
    buffer = io.BytesIO()
    to_pil(image).save(buffer, format="PNG")
    return buffer.getvalue()
