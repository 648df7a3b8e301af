"""Uploaded image bytes → a uint8 (C, H, W) array the BL-AE takes, refusing what is unsafe.

The pixel count is read from the header and checked before any pixel is decoded, so a small
file that claims a huge image (a decompression bomb) is refused without being expanded.
"""

from __future__ import annotations

import io
import warnings

import numpy as np
from PIL import Image, UnidentifiedImageError

from service.errors import InvalidInputError
from service.imaging import to_pil


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
