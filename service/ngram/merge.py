"""Merging the counts of many chunks into one table's rows and contexts (DESIGN.md §10): an
external hash aggregation, so that a build's memory does not grow with its corpus.

Each chunk's counts (ngram/counting.py) come grouped by the top KEY_BUCKET_BITS bits of their
keys. They are appended to three files in the build's temp directory (histogram rows, contexts,
context tokens), with where each chunk's key buckets start. The merge then reads a group of
consecutive buckets from every chunk at a time (about MERGE_GROUP_BYTES of spilled rows) and
merges each bucket in a hash table that fits the core's cache: a chunk holds whole images, so
the histogram of eq. 9 with its provenance is the sum of the chunks' counts and distinct images
and the smallest of their example ids, and each context is kept once. A key that comes with two
different second hashes is two contexts sharing it: the merge records it (`collided`).

The next group is merged on a thread while the caller (DuckDB's insert) reads this one. A single
chunk needs no merge: its counts are held as they are and never written.
"""

from __future__ import annotations

import shutil
from collections.abc import Iterable, Iterator
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any, TypeVar, cast

import numpy as np
import pyarrow as pa
from numba import njit

from service.ngram.counting import KEY_BUCKET_BITS, ChunkCounts
from service.ngram.depth_first import table_size
from service.ngram.windows import _MIX1, _MIX2

compiled = cast(Any, njit)(cache=True, nogil=True)

MERGE_GROUP_BYTES = 64 << 20  # spilled bytes merged at once: ~4× this is held while merging
# The buckets of negative keys (top bit set) first: merged rows then come in int64 key order.
SIGNED_ORDER = ((1 << KEY_BUCKET_BITS - 1, 1 << KEY_BUCKET_BITS), (0, 1 << KEY_BUCKET_BITS - 1))
_EMPTY = -1
_SIGN = np.uint64(1 << 63)  # flips int64 order into uint64 order
_INSERTION_ROWS = 32  # rows of one counting-sort value left to insertion; more: sorted first
_NO_POSITION = -1  # a spilled context's position in a table without positions
HISTOGRAM_SCHEMA = pa.schema(
    [
        ("context_key", pa.int64()),
        ("token", pa.int32()),
        ("count", pa.int64()),
        ("images", pa.int64()),
        ("example_image", pa.int64()),
    ]
)
CONTEXT_SCHEMA = pa.schema(
    [("context_key", pa.int64()), ("position", pa.int32()), ("context", pa.large_list(pa.uint32()))]
)
T = TypeVar("T")
_END = object()  # what `next` gives past the last item


def histogram_batch(rows: np.ndarray) -> pa.RecordBatch:
    """(R, 5) rows (context key, token, count, distinct images, smallest image id) as a batch of
    HISTOGRAM_SCHEMA."""
    keys, tokens, counts, images, examples = rows.T
    return pa.record_batch(
        [keys, tokens.astype(np.int32), counts, images, examples], schema=HISTOGRAM_SCHEMA
    )


def context_batch(
    keys: np.ndarray, positions: np.ndarray | None, tokens: np.ndarray
) -> pa.RecordBatch:
    """Contexts as a batch of CONTEXT_SCHEMA: their keys, positions (None: no positions) and
    (M, K) tokens, as M lists sharing one values buffer."""
    m, k = tokens.shape
    offsets = pa.array(np.arange(0, (m + 1) * k, k, dtype=np.int64))
    values = pa.array(np.ascontiguousarray(tokens, np.uint32).reshape(-1))
    return pa.record_batch(
        [
            keys,
            pa.nulls(m, pa.int32()) if positions is None else pa.array(positions, pa.int32()),
            pa.LargeListArray.from_arrays(offsets, values),
        ],
        schema=CONTEXT_SCHEMA,
    )


class _SpillFile:
    """Rows of one width and type appended chunk by chunk, with where each chunk's key buckets
    start."""

    def __init__(self, path: Path, dtype: np.dtype, width: int) -> None:
        self.path, self.dtype, self.width = path, np.dtype(dtype), width
        self.rows = 0
        self.starts: list[np.ndarray] = []  # per chunk: (2^KEY_BUCKET_BITS + 1,) row offsets

    def append(self, rows: np.ndarray, bucket_starts: np.ndarray) -> None:
        with self.path.open("ab") as file:
            np.ascontiguousarray(rows, self.dtype).tofile(file)
        self.starts.append(self.rows + bucket_starts)
        self.rows += len(rows)

    def groups(self) -> list[tuple[int, int]]:
        """Consecutive buckets [first, last) of about MERGE_GROUP_BYTES over every chunk, in
        SIGNED_ORDER."""
        starts = np.stack(self.starts)
        sizes = (starts[:, 1:] - starts[:, :-1]).sum(axis=0) * self.width * self.dtype.itemsize
        groups = []
        for low, high in SIGNED_ORDER:
            first, size = low, 0
            for bucket in range(low, high):
                size += int(sizes[bucket])
                if size >= MERGE_GROUP_BYTES or bucket == high - 1:
                    groups.append((first, bucket + 1))
                    first, size = bucket + 1, 0
        return groups

    def read(self, first: int, last: int) -> tuple[np.ndarray, np.ndarray]:
        """The rows of buckets [first, last) of every chunk, chunk by chunk, and (chunks,
        last − first + 1) offsets of each chunk's buckets in them."""
        parts, local, at = [], [], 0
        for starts in self.starts:
            begin, end = int(starts[first]), int(starts[last])
            parts.append(
                np.fromfile(
                    self.path,
                    self.dtype,
                    count=(end - begin) * self.width,
                    offset=begin * self.width * self.dtype.itemsize,
                ).reshape(-1, self.width)
            )
            local.append(starts[first : last + 1] - begin + at)
            at += end - begin
        return np.concatenate(parts), np.stack(local)


def bucket_starts(keys: np.ndarray) -> np.ndarray:
    """(2^KEY_BUCKET_BITS + 1,) offsets of the buckets of keys grouped by their top bits."""
    buckets = keys.view(np.uint64) >> np.uint64(64 - KEY_BUCKET_BITS)
    return np.searchsorted(buckets, np.arange((1 << KEY_BUCKET_BITS) + 1, dtype=np.uint64))


class SpilledCounts:
    """The counts of a table's chunks, merged when read (histogram_batches, context_batches)."""

    def __init__(self, folder: Path) -> None:
        self.folder = folder
        self.chunks = 0
        self.collided = False  # set by context_batches: two contexts share a key
        self._positional = False
        self._single: ChunkCounts | None = None  # the first chunk, until a second one comes
        self._files: tuple[_SpillFile, _SpillFile, _SpillFile] | None = None

    def add(self, counts: ChunkCounts) -> None:
        self.chunks += 1
        if self.chunks == 1:
            self._single = counts
            return
        if self._single is not None:
            self._spill(self._single)
            self._single = None
        self._spill(counts)

    def _spill(self, counts: ChunkCounts) -> None:
        self._positional = counts.context_positions is not None
        if self._files is None:
            self.folder.mkdir(parents=True, exist_ok=True)
            self._files = (
                _SpillFile(self.folder / "rows.bin", np.dtype(np.int64), 5),
                _SpillFile(self.folder / "contexts.bin", np.dtype(np.int64), 3),
                _SpillFile(
                    self.folder / "tokens.bin",
                    counts.context_tokens.dtype,
                    counts.context_tokens.shape[1],
                ),
            )
        rows, contexts, tokens = self._files
        rows.append(counts.rows, bucket_starts(counts.keys))
        positions = counts.context_positions
        meta = np.empty((len(counts.context_keys), 3), np.int64)
        meta[:, 0], meta[:, 1] = counts.context_keys, counts.context_checks
        meta[:, 2] = _NO_POSITION if positions is None else positions
        starts = bucket_starts(counts.context_keys)
        contexts.append(meta, starts)
        tokens.append(counts.context_tokens, starts)

    def histogram_batches(self) -> Iterator[pa.RecordBatch]:
        """The table's histogram rows, a group of key buckets at a time, sorted by (context key,
        token) when merged from several chunks (so that the index reads them as they are
        stored, ngram/store.read_rows); a single chunk's as they were counted, which the index
        sorts when it reads them (the default run's 770 k rows at γ = 7 in about 0.4 s), so
        that a one-chunk build stays as fast as before there was a merge."""
        if self._files is None:
            if self._single is not None:
                yield histogram_batch(self._single.rows)
            return
        rows = self._files[0]

        def merged(group: tuple[int, int]) -> pa.RecordBatch:
            return histogram_batch(_merge_rows(*rows.read(*group)))

        yield from ahead(map(merged, rows.groups()))

    def context_batches(self) -> Iterator[pa.RecordBatch]:
        """The table's distinct contexts, a group of key buckets at a time; a key that comes
        with two contexts sets `collided`."""
        if self._files is None:
            if self._single is not None:
                one = self._single
                yield context_batch(one.context_keys, one.context_positions, one.context_tokens)
            return
        _, contexts, tokens = self._files

        def merged(group: tuple[int, int]) -> pa.RecordBatch:
            meta, starts = contexts.read(*group)
            first, collided = _first_contexts(meta, starts)
            self.collided |= collided
            return context_batch(
                meta[first, 0],
                meta[first, 2] if self._positional else None,
                tokens.read(*group)[0][first],
            )

        # groups of about MERGE_GROUP_BYTES of the larger file: a context's tokens are 8 bytes
        # at γ = 3 but 960 at γ = 31, 40× its key, check and position (groups sized by those
        # held up to 2.7 GB of tokens, copied twice: 16×16's build then peaked at 14 GB)
        widest = max(contexts, tokens, key=lambda f: f.width * f.dtype.itemsize)
        yield from ahead(map(merged, widest.groups()))

    def remove(self) -> None:
        """Delete the spill files and drop the held chunk."""
        self._single = self._files = None
        shutil.rmtree(self.folder, ignore_errors=True)


def ahead(items: Iterable[T]) -> Iterator[T]:
    """The items in order, the next one made on a thread while this one is used: reading the
    latents or merging a group, which release the GIL, beside the counting or DuckDB's insert."""
    iterator = iter(items)
    with ThreadPoolExecutor(1) as pool:
        pending = pool.submit(next, iterator, _END)
        while (item := pending.result()) is not _END:
            pending = pool.submit(next, iterator, _END)
            yield cast(T, item)


@compiled
def _bucket_sizes(starts: np.ndarray) -> np.ndarray:
    """(buckets,) rows of each bucket over every chunk."""
    sizes = np.zeros(starts.shape[1] - 1, np.int64)
    for c in range(starts.shape[0]):
        for b in range(len(sizes)):
            sizes[b] += starts[c, b + 1] - starts[c, b]
    return sizes


@compiled
def _merge_rows(rows: np.ndarray, starts: np.ndarray) -> np.ndarray:
    """(R', 5) merged histogram rows of a group's spilled rows (key, token, count, images,
    smallest image id), bucket by bucket, each bucket's sorted by (key, token)."""
    sizes = _bucket_sizes(starts)
    slots = np.empty(table_size(sizes.max() if len(sizes) else 0), np.int64)  # → merged row
    merged = np.empty_like(rows)
    m = 0
    for b in range(len(sizes)):
        size = table_size(sizes[b])
        mask = np.uint64(size - 1)
        slots[:size] = _EMPTY
        bucket_first = m
        for c in range(starts.shape[0]):
            for i in range(starts[c, b], starts[c, b + 1]):
                key, token = rows[i, 0], rows[i, 1]
                s = np.int64(((np.uint64(key) ^ (np.uint64(token) * _MIX1)) * _MIX2) & mask)
                while True:
                    row = slots[s]
                    if row == _EMPTY:
                        slots[s] = m
                        merged[m] = rows[i]
                        m += 1
                        break
                    if merged[row, 0] == key and merged[row, 1] == token:
                        merged[row, 2] += rows[i, 2]
                        merged[row, 3] += rows[i, 3]
                        merged[row, 4] = min(merged[row, 4], rows[i, 4])
                        break
                    s = np.int64(np.uint64(s + 1) & mask)
        _sort_rows(merged[bucket_first:m])
    return merged[:m]


@compiled
def _sort_rows(rows: np.ndarray) -> None:
    """A bucket's rows in place by (key, token): a counting sort of their keys (_by_top_bits)
    leaves a few rows per value, and insertion finishes it. A value with many rows (a context
    with many tokens) is sorted on its own first (_shell_sort), so that it never costs the
    square of its rows. np.argsort of the keys, then insertion of the rows that share a key,
    took 1.5× as long: most of the merge at 100× the default corpus."""
    keys = rows[:, 0].view(np.uint64) ^ _SIGN  # int64 order as unsigned order, contiguous
    order, bounds = _by_top_bits(keys)
    for v in range(len(bounds) - 1):
        if bounds[v + 1] - bounds[v] > _INSERTION_ROWS:
            _shell_sort(order[bounds[v] : bounds[v + 1]], keys, rows)
    for i in range(1, len(order)):
        row, j = order[i], i
        while j > 0 and _before(keys, rows, row, order[j - 1]):
            order[j] = order[j - 1]
            j -= 1
        order[j] = row
    ordered = np.empty_like(rows)
    for i in range(len(order)):
        for column in range(rows.shape[1]):
            ordered[i, column] = rows[order[i], column]
    rows[:] = ordered


@compiled
def _by_top_bits(keys: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """The order of a counting sort of uint64 keys on the log2(n) bits below the highest bit
    where two of them differ, and where each value's keys start in it (one more entry than
    values). Keys that are hashes spread evenly over the values: about one key each."""
    n = len(keys)
    differ = np.uint64(0)
    for i in range(1, n):
        differ |= keys[i] ^ keys[0]
    bits = 1
    while (1 << bits) < n:
        bits += 1
    top = 0  # the highest bit where two keys differ
    while top < 63 and differ >> np.uint64(top + 1) != 0:
        top += 1
    shift, mask = np.uint64(max(top + 1 - bits, 0)), np.uint64((1 << bits) - 1)
    bounds = np.zeros((1 << bits) + 1, np.int64)
    for i in range(n):
        bounds[np.int64((keys[i] >> shift) & mask) + 1] += 1
    for v in range(1 << bits):
        bounds[v + 1] += bounds[v]
    order, at = np.empty(n, np.int64), bounds[:-1].copy()
    for i in range(n):
        value = np.int64((keys[i] >> shift) & mask)
        order[at[value]] = i
        at[value] += 1
    return order, bounds


@compiled
def _shell_sort(run: np.ndarray, keys: np.ndarray, rows: np.ndarray) -> None:
    """Row numbers in place by (key, token): Shell's sort with Ciura's gaps, O(n^1.3) where
    insertion is O(n²) (numpy's stable argsort, twice, did as well but compiled 6 s longer)."""
    for gap in (701, 301, 132, 57, 23, 10, 4, 1):
        for i in range(gap, len(run)):
            row, j = run[i], i
            while j >= gap and _before(keys, rows, row, run[j - gap]):
                run[j] = run[j - gap]
                j -= gap
            run[j] = row


@compiled
def _before(keys: np.ndarray, rows: np.ndarray, a: int, b: int) -> bool:
    """Whether row a comes before row b in (key, token) order (keys: theirs, unsigned)."""
    return keys[a] < keys[b] or (keys[a] == keys[b] and rows[a, 1] < rows[b, 1])


@compiled
def _first_contexts(contexts: np.ndarray, starts: np.ndarray) -> tuple[np.ndarray, bool]:
    """Where each key of a group's spilled contexts (key, second hash, position) first comes,
    bucket by bucket, and whether a key came with two second hashes."""
    sizes = _bucket_sizes(starts)
    slots = np.empty(table_size(sizes.max() if len(sizes) else 0), np.int64)  # → its first
    first = np.empty(len(contexts), np.int64)
    m = 0
    collided = False
    for b in range(len(sizes)):
        size = table_size(sizes[b])
        mask = np.uint64(size - 1)
        slots[:size] = _EMPTY
        for c in range(starts.shape[0]):
            for i in range(starts[c, b], starts[c, b + 1]):
                key = contexts[i, 0]
                s = np.int64(np.uint64(key) & mask)
                while True:
                    at = slots[s]
                    if at == _EMPTY:
                        slots[s] = i
                        first[m] = i
                        m += 1
                        break
                    if contexts[at, 0] == key:
                        collided |= contexts[at, 1] != contexts[i, 1]
                        break
                    s = np.int64(np.uint64(s + 1) & mask)
    return first[:m], collided
