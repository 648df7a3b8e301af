"""Binary latents as bits, packed bytes and text (DESIGN.md §1).

A latent is C×H×W bits in (channel, row, column) order; packed, it is ceil(C·H·W / 8) bytes in
numpy's big-endian bit order, as latents.parquet stores it; as text, hex or base64 of those bytes.
"""

from __future__ import annotations

import base64
import re
from functools import cache
from typing import Literal

import numpy as np

from service.errors import InvalidInputError


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


TextEncoding = Literal["hex", "base64"]  # how a packed latent is written as a string


def packed_to_text(row: np.ndarray, encoding: TextEncoding = "hex") -> str:
    """One packed latent (bytes,) uint8 → hex or base64 text."""
    data = np.asarray(row, dtype=np.uint8).tobytes()
    return data.hex() if encoding == "hex" else base64.b64encode(data).decode("ascii")


# Base64's last character before "=" padding carries unused low bits that must be zero: after
# one final byte, 4 of them (the characters at multiples of 16); after two, 2 (multiples of 4).
_BASE64_TAIL = {0: "", 1: "[A-Za-z0-9+/][AQgw]==", 2: "[A-Za-z0-9+/]{2}[AEIMQUYcgkosw048]="}


@cache
def text_pattern(nbytes: int, encoding: TextEncoding) -> str:
    """The regular expression (JSON Schema and Python alike) of a packed latent of `nbytes`
    bytes written in `encoding`: exact length, canonical form, no whitespace. The API's schema
    states it and packed_from_text enforces it, so the two cannot disagree."""
    if encoding == "hex":
        return f"^[0-9a-fA-F]{{{2 * nbytes}}}$"
    groups, rest = divmod(nbytes, 3)
    return f"^[A-Za-z0-9+/]{{{4 * groups}}}{_BASE64_TAIL[rest]}$"


def packed_from_text(
    text: str, shape: tuple[int, int, int], encoding: TextEncoding = "hex"
) -> np.ndarray:
    """Hex or base64 text → one packed latent (bytes,) uint8 of the given latent shape."""
    expected = packed_size(shape)
    if not re.fullmatch(text_pattern(expected, encoding), text):
        if encoding == "hex":
            length, form = 2 * expected, "hex digits"
        else:
            length, form = 4 * -(-expected // 3), "characters of padded base64"
        got = f"{len(text)} characters" if len(text) != length else "other characters"
        raise InvalidInputError(
            f"bits must be {expected} bytes for latents of shape {shape}, written as {length} "
            f"{form} with no spaces; got {got}"
        )
    data = bytes.fromhex(text) if encoding == "hex" else base64.b64decode(text, validate=True)
    return np.frombuffer(data, dtype=np.uint8).copy()
