"""Images ↔ binary latents through a trained BL-AE, batched (no Python loop per image)."""

from __future__ import annotations

from collections.abc import Callable

import numpy as np
import torch

from models import BLAE
from models.blae import binarize
from models.code_search import search_codes
from models.common import to_unit
from service.errors import InvalidInputError
from service.latents.bits import pack_bits, packed_size, unpack_bits

ENCODE_BATCH = 1024  # images per forward pass; larger gains nothing on a CPU
SEARCH_BATCH = 128  # images per code search: 0.14 ms an image and pass on 2 cores, 0.25 at 1,024


def _check_images(model: BLAE, images: np.ndarray) -> None:
    cfg = model.config
    expected = (cfg.image_channels, cfg.image_size, cfg.image_size)
    if images.ndim != 4 or images.shape[1:] != expected or images.dtype != np.uint8:
        raise InvalidInputError(
            f"images must be uint8 of shape (N, {expected[0]}, {expected[1]}, {expected[2]}) "
            f"for this BL-AE, got {images.dtype} {images.shape}"
        )


@torch.inference_mode()
def encode_images(
    model: BLAE,
    images: np.ndarray,
    *,
    batch_size: int = ENCODE_BATCH,
    search_passes: int = 0,
    on_batch: Callable[[int], None] | None = None,
) -> tuple[np.ndarray, float]:
    """uint8 (N, channels, size, size) → (packed bits (N, bytes), brate of the soft codes).

    search_passes > 0 stores each code improved for the decoder by that many proposed bit flips
    (models/code_search.py) instead of the encoder's signs. on_batch gets each batch's size.
    """
    _check_images(model, images)
    device = next(model.parameters()).device
    packed, saturated = [], 0
    for start in range(0, len(images), batch_size):
        batch = np.require(images[start : start + batch_size], requirements="W")  # torch writes
        x = to_unit(torch.from_numpy(batch).to(device))
        codes = model.encode(x)  # (B, C, H, W) in (−1, 1)
        saturated += int((codes.abs() > 0.95).sum().item())
        if search_passes:
            codes = _searched_codes(model, x, binarize(codes), search_passes)
        packed.append(pack_bits((codes > 0).cpu().numpy()))
        if on_batch is not None:
            on_batch(len(batch))
    shape = model.config.latent_shape
    if not packed:
        return np.zeros((0, packed_size(shape)), np.uint8), 0.0
    return np.concatenate(packed), saturated / (len(images) * int(np.prod(shape)))


def _searched_codes(
    model: BLAE, images: torch.Tensor, signs: torch.Tensor, passes: int
) -> torch.Tensor:
    """The signs improved by search_codes, SEARCH_BATCH images at a time."""
    found = [
        search_codes(model, images[i : i + SEARCH_BATCH], signs[i : i + SEARCH_BATCH], passes)
        for i in range(0, len(images), SEARCH_BATCH)
    ]
    return torch.cat(found)


@torch.inference_mode()
def decode_bits(model: BLAE, bits: np.ndarray, *, batch_size: int = ENCODE_BATCH) -> np.ndarray:
    """(N, C, H, W) bool → uint8 images (N, channels, size, size)."""
    shape = model.config.latent_shape
    if bits.ndim != 4 or bits.shape[1:] != shape:
        raise InvalidInputError(f"latents must have shape (N, {shape}), got {bits.shape}")
    device = next(model.parameters()).device
    out = []
    for start in range(0, len(bits), batch_size):
        signs = torch.from_numpy(bits[start : start + batch_size]).to(device).float() * 2 - 1
        images = model.decode(signs)
        out.append(images.mul(255).round_().clamp_(0, 255).to(torch.uint8).cpu().numpy())
    if not out:
        cfg = model.config
        return np.zeros((0, cfg.image_channels, cfg.image_size, cfg.image_size), np.uint8)
    return np.concatenate(out)


def decode_packed(model: BLAE, packed: np.ndarray) -> np.ndarray:
    """(N, bytes) packed latents → uint8 images."""
    return decode_bits(model, unpack_bits(packed, model.config.latent_shape))
