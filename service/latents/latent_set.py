"""The packed latents of a set of images, with their ids, splits and labels: the in-memory form of
latents.parquet (data/parquet.py reads and writes it)."""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from service.latents.bits import unpack_bits
from service.ngram.tokens import TokenGrids, bits_to_tokens


@dataclass(frozen=True)
class LatentSet:
    """Packed latents of a set of images, with their provenance."""

    ids: np.ndarray  # (N,) int64, the images.parquet ids
    splits: np.ndarray  # (N,) str
    labels: np.ndarray  # (N,) int64
    packed: np.ndarray  # (N, bytes) uint8
    shape: tuple[int, int, int]  # (C, H, W) of one latent
    model_sha256: str  # the BL-AE that encoded them
    search_passes: int = 0  # bit flips searched per code after the encoder (models/code_search.py)

    def __len__(self) -> int:
        return len(self.ids)

    def bits(self) -> np.ndarray:
        """(N, C, H, W) bool."""
        return unpack_bits(self.packed, self.shape)

    def token_grids(self) -> TokenGrids:
        """The latents as token grids for the n-gram engine, with their image ids."""
        tokens = bits_to_tokens(self.bits())  # (N, H, W)
        return TokenGrids(tokens, self.ids.astype(np.int64), self.shape[0], self.model_sha256)

    def holdout_halves(self) -> tuple[LatentSet, LatentSet]:
        """The test split cut in two by image id: (even ids, odd ids). A held-out figure that
        chooses something (an epoch, a weight) is taken on the first, and the figure reported
        on the second, so the images that choose never grade."""
        test = self.splits == "test"
        even = self.ids % 2 == 0
        return self.select(test & even), self.select(test & ~even)

    def select(self, mask: np.ndarray) -> LatentSet:
        return LatentSet(
            self.ids[mask],
            self.splits[mask],
            self.labels[mask],
            self.packed[mask],
            self.shape,
            self.model_sha256,
            self.search_passes,
        )
