"""Report sheets: samples beside their nearest training images, each pair captioned with how
close it is (PSNR, Hamming distance, the training image's label, whether it is an exact copy)."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import numpy as np
from PIL import Image, ImageDraw, ImageFont

from service.files import atomic_path

CELL_PIXELS = 84  # images are scaled up to about this height, so 28² digits stay readable
COLUMNS = 4  # pairs per row
CAPTION_HEIGHT, GAP, FONT_SIZE = 30, 8, 11
INK, COPY_INK, PAPER = (20, 20, 20), (190, 30, 30), (255, 255, 255)


@dataclass(frozen=True)
class PairCaption:
    """What a pair's caption says; also stored in the report JSON beside the sheet."""

    psnr_db: float  # sample to the training image shown
    hamming_bits: int  # sample's latent to that image's latent
    training_id: int  # the training image shown: the one copied, else the nearest by pixels
    label: str  # its class
    exact_copy: bool  # Hamming distance 0: the sample's latent is that image's latent

    def lines(self) -> tuple[str, str]:
        first = f"{self.psnr_db:.1f} dB · {self.hamming_bits} bits"
        return first, f"#{self.training_id} {self.label}" + (
            " · exact copy" if self.exact_copy else ""
        )


def write_sheet(
    samples: np.ndarray, nearest: np.ndarray, captions: list[PairCaption], path: Path
) -> Path:
    """samples, nearest: (P, C, H, W) uint8; one captioned cell per pair, COLUMNS per row."""
    count = len(captions)
    h, w = samples.shape[2:]
    scale = max(1, round(CELL_PIXELS / h))
    cell_w, cell_h = 2 * w * scale + GAP, h * scale + CAPTION_HEIGHT
    rows = max(1, -(-count // COLUMNS))
    sheet = Image.new("RGB", (COLUMNS * (cell_w + GAP) + GAP, rows * (cell_h + GAP) + GAP), PAPER)
    draw = ImageDraw.Draw(sheet)
    font = ImageFont.load_default(size=FONT_SIZE)
    for i, caption in enumerate(captions):
        row, col = divmod(i, COLUMNS)
        x, y = GAP + col * (cell_w + GAP), GAP + row * (cell_h + GAP)
        for k, image in enumerate((samples[i], nearest[i])):
            tile = _rgb(image).resize((w * scale, h * scale), Image.Resampling.NEAREST)
            sheet.paste(tile, (x + k * (w * scale + GAP), y))
        top, bottom = caption.lines()
        draw.text((x, y + h * scale + 2), top, fill=INK, font=font)
        draw.text(
            (x, y + h * scale + 15), bottom, fill=COPY_INK if caption.exact_copy else INK, font=font
        )
    with atomic_path(path) as tmp:
        sheet.save(tmp, format="PNG")
    return path


def _rgb(image: np.ndarray) -> Image.Image:
    pixels = np.repeat(image, 3, axis=0) if image.shape[0] == 1 else image
    return Image.fromarray(np.ascontiguousarray(pixels.transpose(1, 2, 0)), mode="RGB")
