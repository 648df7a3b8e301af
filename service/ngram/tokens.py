"""Tokens, the alphabet of the n-gram engine (DESIGN.md §3): the token at (y, x) of a latent is the
integer whose bit c is channel c, so 0 … 2^C − 1, and PAD = 2^C marks positions off the grid."""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from service.errors import InvalidInputError

MAX_TOKEN_BITS = 16  # PAD = 2^C must fit the uint16/uint32 context columns and stay indexable


def check_channels(channels: int) -> int:
    """C itself, or InvalidInputError when tokens of C bits are not supported."""
    if not 1 <= channels <= MAX_TOKEN_BITS:
        raise InvalidInputError(
            f"tokens hold 1 to {MAX_TOKEN_BITS} bits, latents have {channels} channels"
        )
    return channels


def pad_token(channels: int) -> int:
    """PAD, the token of positions outside the grid: 2^C, never a real token."""
    return 1 << channels


def bits_to_tokens(bits: np.ndarray) -> np.ndarray:
    """(N, C, H, W) bool → (N, H, W) int64 tokens, bit c of a token = channel c."""
    c = check_channels(bits.shape[1])
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


@dataclass(frozen=True)
class TokenGrids:
    """Token grids of a set of training images: what a table is built from."""

    tokens: np.ndarray  # (N, H, W) int64, 0 … 2^C − 1
    image_ids: np.ndarray  # (N,) int64: the images.parquet id of each grid
    channels: int  # C
    model_sha256: str = ""  # the BL-AE whose latents these are, recorded in the catalogue

    def __post_init__(self) -> None:
        check_channels(self.channels)
        if self.tokens.ndim != 3 or len(self.tokens) != len(self.image_ids):
            raise InvalidInputError(
                f"need (N, H, W) token grids and N image ids, got {self.tokens.shape} grids and "
                f"{len(self.image_ids)} ids"
            )

    def __len__(self) -> int:
        return len(self.image_ids)

    @property
    def pad(self) -> int:
        return pad_token(self.channels)
