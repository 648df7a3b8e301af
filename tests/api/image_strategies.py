"""Real image files for the fuzzer, so that its schema-valid requests are valid in full.

The schema names images by formats of its own (base64-image in JSON bodies, image-file in
/v1/encode's multipart upload); schemathesis cannot know what either holds, and would send
random bytes the server rightly refuses. Importing this module registers strategies for both.
It is also a hooks module for the command line:

    SCHEMATHESIS_HOOKS=tests.api.image_strategies st run http://HOST:PORT/openapi.json --checks all
"""

from __future__ import annotations

import base64
import io

import numpy as np
import schemathesis
from hypothesis import strategies as st
from PIL import Image

from service.api.openapi import IMAGE_FILE_FORMAT, IMAGE_FORMAT

# Pillow mode → (numpy dtype, channels, largest value): what uploads come as, alpha included
MODES = {
    "L": (np.uint8, 1, 255),
    "I;16": (np.uint16, 1, 65535),
    "LA": (np.uint8, 2, 255),
    "RGB": (np.uint8, 3, 255),
    "RGBA": (np.uint8, 4, 255),
    "P": (np.uint8, 1, 255),
}


@st.composite
def image_files(draw: st.DrawFn, file_format: str = "PNG") -> bytes:
    """A noise image file of 4..40 px a side in one of MODES (JPEG: L or RGB only)."""
    modes = ["L", "RGB"] if file_format == "JPEG" else list(MODES)
    mode = draw(st.sampled_from(modes))
    width, height = draw(st.integers(4, 40)), draw(st.integers(4, 40))
    rng = np.random.default_rng(draw(st.integers(0, 2**32 - 1)))  # noise: alpha never all there is
    dtype, channels, top = MODES[mode]
    pixels = rng.integers(0, top, size=(height, width, channels), endpoint=True).astype(dtype)
    image = Image.fromarray(pixels[..., 0] if channels == 1 else pixels)  # mode from the shape
    if mode == "P":
        image = image.convert("RGB").quantize(colors=16)
    out = io.BytesIO()
    image.save(out, format=file_format)
    return out.getvalue()


any_image_file = image_files() | image_files("JPEG")
schemathesis.openapi.format(
    IMAGE_FORMAT, any_image_file.map(lambda data: base64.b64encode(data).decode("ascii"))
)
schemathesis.openapi.format(IMAGE_FILE_FORMAT, any_image_file)
