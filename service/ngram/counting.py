"""Counting a chunk of token grids into its histogram, compiled with numba: the GROUP BY of
eq. 9 for one chunk of whole images, done where the grids already are.

A window costs two passes and no table lookups out of cache:
1. Each window's context key is hashed straight from the padded grid (as windows.context_keys
   hashes it), with a second, independent hash of the same tokens, and the windows are
   partitioned by the top bits of their key (a stable counting sort, so each partition keeps the
   windows image by image in raster order).
2. Each partition is counted on its own, in hash tables small enough for the core's cache: the
   distinct contexts, and per (context, token) the windows, the distinct images and the smallest
   image id. A partition's new rows and contexts are numbered consecutively, so they stay in
   cache too. The rows and contexts come out in partition order, so grouped by the top
   KEY_BUCKET_BITS bits of their keys: how the merge of many chunks (ngram/merge.py) splits them.
Table lookups over a whole chunk (millions of windows) miss the cache several times each: that
was about 2× slower (a 4 M-window chunk at γ = 3: 1.85 s against 0.8 s).

The check of the 64-bit keys: every window with a known key must have the same second hash as
that key's first window. Two different contexts pass only if both 64-bit hashes collide, about
2^-128 per pair. Chunks hold whole images, so the histograms of different chunks merge by
summing counts and images and taking the smallest id (ngram/merge.py, and the Spark build); the
merge checks the keys across chunks by the same second hashes.
"""

from __future__ import annotations

from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from itertools import pairwise
from typing import Any, NamedTuple, TypeVar, cast

import numpy as np
from numba import njit

from service.ngram.depth_first import NO_POSITION, splitmix64, table_size
from service.ngram.windows import _GOLDEN, _MIX1, _MIX2, context_offsets, pad_grids, token_dtype

compiled = cast(Any, njit)(cache=True, nogil=True)
T = TypeVar("T")

_EMPTY = -1
_CHECK_SEED = np.uint64(0xD1B54A32D192ED03)  # the second hash starts elsewhere and mixes apart
_CHECK_MIX = np.uint64(0xAEF17502108EF2D9)
_PARTITION_WINDOWS = 1 << 13  # windows per partition, on average: its tables fit in L2
KEY_BUCKET_BITS = 10  # a chunk's output is grouped by at least this many top bits of its keys
# Columns of a histogram row.
_KEY, _TOKEN, _COUNT, _IMAGES, _MIN, _LAST = range(6)


class ChunkCounts(NamedTuple):
    """A chunk's histogram rows and distinct contexts, each grouped by the top KEY_BUCKET_BITS
    bits of their keys."""

    rows: np.ndarray  # (R, 5) int64: context key, next token, windows, images, smallest image id
    context_keys: np.ndarray  # (M,) int64
    context_checks: np.ndarray  # (M,) int64 second hash of its tokens
    context_tokens: np.ndarray  # (M, K) uint16 or uint32 (windows.token_dtype)
    context_positions: np.ndarray | None  # (M,) int64 position of its first window, if positional

    @property
    def keys(self) -> np.ndarray:
        return self.rows[:, 0]

    @property
    def tokens(self) -> np.ndarray:
        return self.rows[:, 1]

    @property
    def counts(self) -> np.ndarray:
        return self.rows[:, 2]

    @property
    def images(self) -> np.ndarray:
        return self.rows[:, 3]

    @property
    def example_images(self) -> np.ndarray:
        return self.rows[:, 4]


@compiled
def _hash_windows(
    padded: np.ndarray, offsets: np.ndarray, r: int, positional: bool
) -> tuple[np.ndarray, np.ndarray]:
    """(N·H·W,) context keys (windows.context_keys's) and second hashes of every window, image
    by image in raster order."""
    n, k = len(padded), len(offsets)
    height, width = padded.shape[1] - r, padded.shape[2] - 2 * r
    keys = np.empty(n * height * width, np.int64)
    checks = np.empty(n * height * width, np.uint64)
    w = 0
    for i in range(n):
        for y in range(r, r + height):
            for x in range(r, r + width):
                h, c = _GOLDEN, _CHECK_SEED
                for j in range(k):
                    v = np.uint64(padded[i, y + offsets[j, 0], x + offsets[j, 1]])
                    h = (h ^ v) * _MIX1
                    h = h ^ (h >> np.uint64(29))
                    c = (c ^ v) * _CHECK_MIX
                    c = c ^ (c >> np.uint64(31))
                p = np.uint64((y - r) * width + (x - r))
                keys[w] = np.int64(splitmix64(h ^ (p if positional else NO_POSITION)))
                checks[w] = splitmix64(c)
                w += 1
    return keys, checks


@compiled
def _partition(
    padded: np.ndarray,
    image_ids: np.ndarray,
    keys: np.ndarray,
    checks: np.ndarray,
    r: int,
    bits: int,
) -> tuple[np.ndarray, np.ndarray]:
    """The windows' records (key, second hash, next token, image id, window) in order of the
    top `bits` bits of their keys, stable, and the (2^bits + 1,) offsets of each partition: one
    sequential read, 2^bits sequential writes."""
    height, width = padded.shape[1] - r, padded.shape[2] - 2 * r
    per_image = height * width
    shift = np.uint64(64 - bits)
    starts = np.zeros((1 << bits) + 1, np.int64)
    for w in range(len(keys)):
        starts[(np.uint64(keys[w]) >> shift) + 1] += 1
    for p in range(1 << bits):
        starts[p + 1] += starts[p]
    at = starts[:-1].copy()
    records = np.empty((len(keys), 5), np.int64)
    for w in range(len(keys)):
        part = np.int64(np.uint64(keys[w]) >> shift)
        i = w // per_image
        q = w - i * per_image
        to = at[part]
        records[to, 0], records[to, 1] = keys[w], np.int64(checks[w])
        records[to, 2] = padded[i, q // width + r, q % width + r]
        records[to, 3], records[to, 4] = image_ids[i], w
        at[part] = to + 1
    return records, starts


@compiled
def _count(
    records: np.ndarray, starts: np.ndarray
) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray, bool]:
    """(R, 6) histogram rows (_KEY … _LAST), the (M,) keys, second hashes and first windows of
    the distinct contexts, and whether a key came with two contexts; one partition at a time."""
    windows = len(records)
    hist = np.empty((windows, 6), np.int64)
    context_key = np.empty(windows, np.int64)
    context_check = np.empty(windows, np.int64)
    context_first = np.empty(windows, np.int64)
    largest = 0
    for p in range(len(starts) - 1):
        largest = max(largest, starts[p + 1] - starts[p])
    context_slots = np.empty(table_size(largest), np.int64)  # → context
    pair_slots = np.empty(table_size(largest), np.int64)  # → row
    rows = contexts = 0
    collision = False
    for p in range(len(starts) - 1):
        n = starts[p + 1] - starts[p]
        if n == 0:
            continue
        mask = table_size(n) - 1
        context_slots[: mask + 1] = _EMPTY
        pair_slots[: mask + 1] = _EMPTY
        for at in range(starts[p], starts[p + 1]):
            key, check = records[at, 0], records[at, 1]
            token, image = records[at, 2], records[at, 3]
            s = np.int64((np.uint64(key) * _MIX2) & np.uint64(mask))
            while True:  # the context: new, or the same second hash as its first window
                c = context_slots[s]
                if c == _EMPTY:
                    context_slots[s] = contexts
                    context_key[contexts], context_check[contexts] = key, check
                    context_first[contexts] = records[at, 4]
                    contexts += 1
                    break
                if context_key[c] == key:
                    if context_check[c] != check:
                        collision = True
                    break
                s = (s + 1) & mask
            s = np.int64(((np.uint64(key) ^ (np.uint64(token) * _MIX1)) * _MIX2) & np.uint64(mask))
            while True:  # the (context, token) row: new, or counted once more
                row = pair_slots[s]
                if row == _EMPTY:
                    pair_slots[s] = rows
                    hist[rows, _KEY], hist[rows, _TOKEN], hist[rows, _COUNT] = key, token, 1
                    hist[rows, _IMAGES], hist[rows, _MIN], hist[rows, _LAST] = 1, image, image
                    rows += 1
                    break
                if hist[row, _KEY] == key and hist[row, _TOKEN] == token:
                    hist[row, _COUNT] += 1
                    if hist[row, _LAST] != image:
                        hist[row, _IMAGES] += 1
                        hist[row, _LAST] = image
                        hist[row, _MIN] = min(hist[row, _MIN], image)
                    break
                s = (s + 1) & mask
    m = contexts
    return hist[:rows], context_key[:m], context_check[:m], context_first[:m], collision


@compiled
def _context_tokens(
    padded: np.ndarray, offsets: np.ndarray, r: int, first: np.ndarray
) -> np.ndarray:
    """(M, K) tokens of the contexts whose first windows are `first`, read from the padded
    grids."""
    height, width = padded.shape[1] - r, padded.shape[2] - 2 * r
    per_image = height * width
    tokens = np.empty((len(first), len(offsets)), padded.dtype)
    for m in range(len(first)):
        i = first[m] // per_image
        q = first[m] - i * per_image
        y, x = q // width + r, q % width + r
        for j in range(len(offsets)):
            tokens[m, j] = padded[i, y + offsets[j, 0], x + offsets[j, 1]]
    return tokens


def count_chunk(
    tokens: np.ndarray,
    image_ids: np.ndarray,
    gamma: int,
    pad: int,
    *,
    positional: bool = False,
    threads: int = 1,
) -> tuple[ChunkCounts, bool]:
    """The histogram of every γ-window of the (N, H, W) token grids, and whether two different
    contexts share a key. Keys are windows.context_keys's, with positions for positional
    tables. With `threads` > 1 the hashing is split by images, the counting by partitions and
    the contexts' tokens by contexts over that many threads (a build with nothing else to count
    would use one core): the output is the same, as each keeps its order when put back
    together."""
    _, h, w = tokens.shape
    r, offsets = (gamma - 1) // 2, context_offsets(gamma)
    padded = pad_grids(tokens.astype(token_dtype(pad), copy=False), gamma, pad)
    hashed = _on_threads(
        lambda lo, hi: _hash_windows(padded[lo:hi], offsets, r, positional),
        np.linspace(0, len(padded), threads + 1).astype(np.int64),
    )
    keys, checks = (np.concatenate(parts) for parts in zip(*hashed, strict=True))
    bits = max(KEY_BUCKET_BITS, int(np.log2(max(len(keys), 1) / _PARTITION_WINDOWS)))
    ids = np.ascontiguousarray(image_ids, np.int64)
    records, starts = _partition(padded, ids, keys, checks, r, bits)
    # partitions cut where each thread gets about as many windows
    cuts = np.searchsorted(starts, np.linspace(0, len(records), threads + 1)).astype(np.int64)
    cuts[0], cuts[-1] = 0, len(starts) - 1
    counted = _on_threads(
        lambda a, b: _count(records[starts[a] : starts[b]], starts[a : b + 1] - starts[a]), cuts
    )
    hist, context_keys, context_checks, first = (
        np.concatenate(parts) for parts in zip(*(c[:4] for c in counted), strict=True)
    )
    context_tokens = _on_threads(  # a read from a random image per context: split them too
        lambda a, b: _context_tokens(padded, offsets, r, first[a:b]),
        np.linspace(0, len(first), threads + 1).astype(np.int64),
    )
    chunk = ChunkCounts(
        np.ascontiguousarray(hist[:, :_LAST]),
        context_keys,
        context_checks,
        np.concatenate(context_tokens),
        first % (h * w) if positional else None,
    )
    return chunk, any(c[4] for c in counted)


def _on_threads(work: Callable[[int, int], T], bounds: np.ndarray) -> list[T]:
    """work(bounds[i], bounds[i + 1]) for each i, each on its own thread when there are several
    (the compiled passes release the GIL), in order."""
    ranges = [(int(a), int(b)) for a, b in pairwise(bounds)]
    if len(ranges) == 1:
        return [work(*ranges[0])]
    with ThreadPoolExecutor(len(ranges)) as pool:
        return list(pool.map(lambda ab: work(*ab), ranges))
