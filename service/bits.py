"""Binary latents as bits, packed bytes and tokens (DESIGN.md §1 and §3).

A latent is C×H×W bits in (channel, row, column) order; packed, it is ceil(C·H·W / 8) bytes in
numpy's big-endian bit order. The token at (y, x) is the integer whose bit c is channel c.
"""

from __future__ import annotations

import base64
import binascii

import numpy as np

from service.errors import InvalidInputError

MAX_TOKEN_BITS = 16  # tokens must fit PAD = 2^C into a uint32 key part and stay indexable


def packed_size(shape: tuple[int, int, int]) -> int:
    """Bytes of one packed latent of shape (C, H, W)."""
    c, h, w = shape
    return (c * h * w + 7) // 8


def pack_bits(bits: np.ndarray) -> np.ndarray:
    """(N, C, H, W) bool → (N, bytes) uint8, one row per latent."""
    bits = np.asarray(bits, dtype=bool)
    flat = bits.reshape(len(bits), int(np.prod(bits.shape[1:])))
    return np.packbits(flat, axis=1)


def unpack_bits(packed: np.ndarray, shape: tuple[int, int, int]) -> np.ndarray:
    """(N, bytes) uint8 → (N, C, H, W) bool."""
    packed = np.asarray(packed, dtype=np.uint8)
    if packed.ndim != 2 or packed.shape[1] != packed_size(shape):
        raise InvalidInputError(
            f"packed latents must have {packed_size(shape)} bytes each for shape {shape}, "
            f"got array of shape {packed.shape}"
        )
    count = shape[0] * shape[1] * shape[2]
    flat = np.unpackbits(packed, axis=1, count=count)
    return flat.astype(bool).reshape(len(packed), *shape)


def bits_to_tokens(bits: np.ndarray) -> np.ndarray:
    """(N, C, H, W) bool → (N, H, W) int64 tokens, bit c of a token = channel c."""
    c = bits.shape[1]
    if c > MAX_TOKEN_BITS:
        raise InvalidInputError(f"tokens hold at most {MAX_TOKEN_BITS} bits, latents have {c}")
    tokens = np.zeros((bits.shape[0], *bits.shape[2:]), dtype=np.int64)
    for channel in range(c):  # one pass per channel: far cheaper than a weighted sum over axis 1
        tokens |= bits[:, channel].astype(np.int64) << channel
    return tokens


def tokens_to_bits(tokens: np.ndarray, channels: int) -> np.ndarray:
    """(N, H, W) tokens → (N, C, H, W) bool."""
    tokens = np.asarray(tokens, dtype=np.int64)
    if tokens.size and (tokens.min() < 0 or tokens.max() >= 1 << channels):
        raise InvalidInputError(f"tokens must be in 0..{(1 << channels) - 1} for C={channels}")
    shifts = np.arange(channels, dtype=np.int64).reshape(1, channels, 1, 1)
    return ((tokens[:, None, :, :] >> shifts) & 1).astype(bool)


TEXT_ENCODINGS = ("hex", "base64")  # how the API writes one packed latent as a string


def packed_to_text(row: np.ndarray, encoding: str = "hex") -> str:
    """One packed latent (bytes,) uint8 → hex or base64 text."""
    data = np.asarray(row, dtype=np.uint8).tobytes()
    return data.hex() if encoding == "hex" else base64.b64encode(data).decode("ascii")


def packed_from_text(text: str, shape: tuple[int, int, int], encoding: str = "hex") -> np.ndarray:
    """Hex or base64 text → one packed latent (bytes,) uint8 of the given latent shape."""
    try:
        data = bytes.fromhex(text) if encoding == "hex" else base64.b64decode(text, validate=True)
    except (ValueError, binascii.Error):
        raise InvalidInputError(f"bits are not valid {encoding}") from None
    expected = packed_size(shape)
    if len(data) != expected:
        raise InvalidInputError(
            f"bits must be {expected} bytes ({2 * expected} hex digits) for latents of shape "
            f"{shape}, got {len(data)} bytes"
        )
    return np.frombuffer(data, dtype=np.uint8).copy()
