"""Exact top-k by Hamming distance over packed binary latents (DESIGN.md §7).

Packed rows (as in latents.parquet) are zero-padded to whole 64-bit words and stored word-major,
(W, N) uint64, so the distances of a few queries are one XOR, one popcount (np.bitwise_count) and
one sum over the W words, on contiguous memory. Selection is exact in two steps: the k-th smallest
distance among every 16th row bounds the true k-th smallest from above, and the few rows within
that bound, which np.flatnonzero lists in position order, are sorted stably by distance. Ties
therefore go to the lower position; NearestIndex orders its rows by id, so ties go to lower ids.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

CHUNK_WORDS = 1 << 20  # uint64 XOR scratch per pass (8 MiB): a few queries × all rows × words
SUBSAMPLE = 16  # column stride of the first, approximate selection
_POPCOUNT_TABLE = np.array([bin(i).count("1") for i in range(256)], dtype=np.uint8)


@dataclass(frozen=True)
class TopK:
    """The k nearest database rows of each query, best first (shared with the pixel search)."""

    positions: np.ndarray  # (Q, k) int64 rows of the database
    distances: np.ndarray  # (Q, k) int64: differing bits, or summed squared pixel errors

    @staticmethod
    def concatenate(parts: list[TopK], k: int) -> TopK:
        """The results of consecutive query blocks as one (an empty one for no blocks)."""
        if not parts:
            empty = np.zeros((0, k), np.int64)
            return TopK(empty, empty.copy())
        return TopK(
            np.concatenate([p.positions for p in parts]),
            np.concatenate([p.distances for p in parts]),
        )


def popcount(words: np.ndarray, out: np.ndarray) -> np.ndarray:
    """Set bits of each uint64 into `out` (uint8, same shape)."""
    if hasattr(np, "bitwise_count"):  # numpy ≥ 2.0: one instruction per word
        return np.bitwise_count(words, out=out)
    table = _POPCOUNT_TABLE[words.view(np.uint8)].reshape(*words.shape, 8)
    return np.sum(table, axis=-1, dtype=np.uint8, out=out)


def to_words(packed: np.ndarray, bits: int) -> np.ndarray:
    """(N, bytes) uint8 → (N, words) uint64, bits past `bits` cleared, zero-padded to whole words.

    Clearing the padding bits of the last byte keeps a query whose unused bits are set from
    counting them as differences.
    """
    n, width = packed.shape
    words = -(-width // 8)
    padded = np.zeros((n, words * 8), np.uint8)
    padded[:, :width] = packed
    if bits % 8:
        padded[:, bits // 8] &= np.uint8((0xFF << (8 - bits % 8)) & 0xFF)  # MSB-first packing
    return padded.view(np.uint64)


def smallest_k(distances: np.ndarray, k: int) -> TopK:
    """The k smallest of each row of (Q, N) non-negative integer distances, ties by lower column."""
    q, n = distances.shape
    # The k-th smallest of every s-th column bounds the row's k-th smallest from above, for a
    # sixteenth of the work of a full selection; few columns are then within the bound.
    stride = max(1, min(SUBSAMPLE, n // (4 * k)))
    bound = np.partition(distances[:, ::stride], k - 1, axis=1)[:, k - 1]  # (Q,)
    flat = np.flatnonzero(distances <= bound[:, None])  # by row, then column
    rows, cols = np.divmod(flat, n)
    found = distances.ravel()[flat].astype(np.int64)
    order = np.lexsort((found, rows))  # by row, distance, then column (lexsort is stable)
    per_row = np.bincount(rows, minlength=q)
    picked = order[(np.cumsum(per_row) - per_row)[:, None] + np.arange(k)]  # (Q, k)
    return TopK(cols[picked].astype(np.int64), found[picked])


class HammingIndex:
    """Packed latents of N database rows, searched exactly by Hamming distance."""

    def __init__(self, packed: np.ndarray, bits: int) -> None:
        """packed: (N, bytes) uint8 rows; bits: latent bits per row (C·H·W)."""
        packed = np.asarray(packed, dtype=np.uint8)
        if packed.ndim != 2 or packed.shape[1] != -(-bits // 8):
            raise ValueError(
                f"{bits}-bit latents need (N, {-(-bits // 8)}) bytes, got {packed.shape}"
            )
        self._hold(np.ascontiguousarray(to_words(packed, bits).T), bits)

    @classmethod
    def from_words(cls, words: np.ndarray, bits: int) -> HammingIndex:
        """An index over the (W, N) uint64 `words` of another (mapped read-only, say), as is."""
        index = cls.__new__(cls)
        index._hold(words, bits)
        return index

    @property
    def words(self) -> np.ndarray:
        """(W, N) uint64: the database rows, word-major."""
        return self._words

    def _hold(self, words: np.ndarray, bits: int) -> None:
        self.bits = bits
        self._words = words  # (W, N) uint64
        # uint8 distances whenever they fit: a quarter of the memory traffic of uint32.
        self._dtype = np.dtype(np.uint8 if bits < 256 else np.uint16 if bits < 65536 else np.uint32)

    def __len__(self) -> int:
        return int(self._words.shape[1])

    def search(self, packed: np.ndarray, k: int) -> TopK:
        """Exact k nearest rows of each query (Q, bytes), ties by lower position."""
        if not 1 <= k <= len(self):
            raise ValueError(f"k must be in 1..{len(self)}, got {k}")
        queries = to_words(np.asarray(packed, dtype=np.uint8), self.bits)  # (Q, W)
        step = max(1, CHUNK_WORDS // self._words.size)
        parts = [
            smallest_k(self._distances(queries[s : s + step]), k)
            for s in range(0, len(queries), step)
        ]
        return TopK.concatenate(parts, k)

    def distances_at(self, packed: np.ndarray, positions: np.ndarray) -> np.ndarray:
        """Distances of each query (Q, bytes) to its own rows `positions` (Q, k) → (Q, k) int64."""
        queries = to_words(np.asarray(packed, dtype=np.uint8), self.bits)  # (Q, W)
        rows = self._words[:, positions]  # (W, Q, k)
        diff = rows ^ queries.T[:, :, None]
        counts = popcount(diff, np.empty(diff.shape, np.uint8))
        return counts.sum(axis=0, dtype=np.int64)

    def _distances(self, queries: np.ndarray) -> np.ndarray:
        """(q, W) uint64 query words → (q, N) distances: XOR, popcount, sum over the words."""
        diff = self._words[:, None, :] ^ queries.T[:, :, None]  # (W, q, N)
        counts = popcount(diff, np.empty(diff.shape, np.uint8))
        return counts.sum(axis=0, dtype=self._dtype)
