"""uint8 CHW arrays ↔ PNG files and image grids."""

from __future__ import annotations

import math
from pathlib import Path

import numpy as np
from PIL import Image


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
