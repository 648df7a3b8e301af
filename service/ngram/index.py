"""In-memory index of one n-gram table (DESIGN.md §5): sorted context keys → [start, end) into
(token, count, example image) arrays. DuckDB stays the source of truth; this is a cache of it."""

from __future__ import annotations

from dataclasses import dataclass, field
from functools import cached_property

import duckdb
import numpy as np

from service.errors import InvalidInputError
from service.ngram import depth_first
from service.ngram.store import TableInfo, get_table, iter_context_tokens, read_rows
from service.ngram.windows import above_size, context_keys, context_size


def sorted_unique(values: np.ndarray) -> np.ndarray:
    """np.unique of int64 values by a sort: numpy's own hashes them, several times slower on
    millions of keys."""
    values = np.sort(values)
    return values[np.r_[True, values[1:] != values[:-1]]] if len(values) else values


def read_above_filter(con: duckdb.DuckDBPyConnection, info: TableInfo) -> np.ndarray:
    """The Bloom filter words (KeyFilter) of the distinct keys of the above parts of a table's
    contexts, read a batch of contexts at a time: only the keys are held, never every context's
    tokens, and they are dropped once the filter is made."""
    width, size = context_size(info.gamma), above_size(info.gamma)
    no_positions = np.zeros(0, np.int64)
    parts = [
        depth_first.prefix_keys(tokens, width, size, no_positions if at is None else at)
        for tokens, at in iter_context_tokens(con, info)
    ]
    keys = sorted_unique(np.concatenate(parts)) if parts else np.zeros(0, np.int64)
    return KeyFilter(keys).words


def group_offsets(sorted_keys: np.ndarray) -> np.ndarray:
    """(M + 1,) offsets of the runs of equal values in a sorted array: run m is [o[m], o[m+1])."""
    first = np.flatnonzero(np.r_[True, sorted_keys[1:] != sorted_keys[:-1]])
    return np.r_[first, len(sorted_keys)].astype(np.int64)


@dataclass(frozen=True)
class Histogram:
    """q(token | context) of one context, with one training image per token."""

    tokens: np.ndarray  # (k,) int64
    counts: np.ndarray  # (k,) int64
    examples: np.ndarray  # (k,) int64 image ids


@dataclass(frozen=True)
class Lookup:
    """Batched lookup result: for each query, whether its context is known and its row range."""

    found: np.ndarray  # (M,) bool
    start: np.ndarray  # (M,) int64, valid where found
    end: np.ndarray  # (M,) int64


class KeyFilter:
    """A blocked Bloom filter over a table's context keys: four bits in one 64-bit word per key,
    ~20 bits per key, say "not in the table" for all but ~0.3 % of the keys it lacks, in one
    memory read. The exact search's forward check asks mostly about contexts no table has (at
    γ = 3, seven in ten), so it tests them here first. Keys are splitmix64 outputs, so their top
    bits choose the word and their low bits the four bits (depth_first._filter_bits)."""

    BITS_PER_KEY = 20

    def __init__(self, keys: np.ndarray, words: np.ndarray | None = None) -> None:
        """The filter of `keys`, or the one whose bit `words` were built before (then `keys`
        is not read)."""
        if words is not None:
            self.words = words
            return
        self.words = np.zeros(max(1, -(-self.BITS_PER_KEY * len(keys) // 64)), np.uint64)
        depth_first.fill_filter(self.words, np.ascontiguousarray(keys, np.int64))

    def might_contain(self, keys: np.ndarray) -> np.ndarray:
        """(M,) bool: False for a key certainly absent."""
        return depth_first.filter_contains(self.words, np.ascontiguousarray(keys, np.int64))


def read_keyed_rows(
    con: duckdb.DuckDBPyConnection, info: TableInfo
) -> tuple[np.ndarray, np.ndarray, dict[str, np.ndarray]]:
    """A table's distinct keys, their row offsets, and its other row columns (token, count,
    example_image) as read_rows gives them."""
    rows = read_rows(con, info)
    starts = group_offsets(rows["context_key"])
    return rows.pop("context_key")[starts[:-1]], starts, rows


def key_hash_table(keys: np.ndarray, starts: np.ndarray) -> np.ndarray:
    """SearchAids.key_slots of a table's keys and row offsets."""
    return depth_first.hash_table(keys, depth_first.row_ranges(starts))


@dataclass(frozen=True)
class SearchAids:
    """What the exact search looks keys up in, built from the index's keys: saved with the index
    (ngram/index_files.py) so that no process builds them again."""

    key_slots: np.ndarray  # (S, 2) int64 hash table: key → its rows (depth_first.row_ranges)
    key_words: np.ndarray  # (B,) uint64 Bloom filter words of keys (KeyFilter)


@dataclass(frozen=True)
class NgramIndex:
    info: TableInfo
    keys: np.ndarray  # (M,) int64, sorted, unique
    starts: np.ndarray  # (M + 1,) int64 row offsets
    tokens: np.ndarray  # (R,) int64
    counts: np.ndarray  # (R,) int64
    examples: np.ndarray  # (R,) int64
    # (B',) uint64 Bloom filter words (KeyFilter) of the keys of the contexts' above parts: the
    # search only asks whether an above part may start a context, so the keys are not kept
    above_words: np.ndarray
    built: SearchAids | None = field(default=None, repr=False, compare=False)  # None: build them

    @property
    def gamma(self) -> int:
        return self.info.gamma

    @property
    def pad(self) -> int:
        """The PAD token, 2^C."""
        return 1 << self.info.latent_channels

    @property
    def nbytes(self) -> int:
        """The table's arrays (search aids such as the hash table and filters not counted)."""
        arrays = (self.keys, self.starts, self.tokens, self.counts, self.examples)
        return sum(a.nbytes for a in arrays)

    @staticmethod
    def nbytes_of(info: TableInfo) -> int:
        """What `nbytes` will be once the table is loaded, from its catalogue row alone:
        keys and offsets per context, token, count and example per row, 8 bytes each."""
        return 8 * (2 * info.contexts + 1) + 3 * 8 * info.rows

    @classmethod
    def load(
        cls, con: duckdb.DuckDBPyConnection, gamma: int, positional: bool = False
    ) -> NgramIndex:
        """Read a ready table through Arrow into arrays; no Python loop over rows."""
        info = get_table(con, gamma, positional)
        keys, starts, rows = read_keyed_rows(con, info)
        return cls(
            info=info,
            keys=keys,
            starts=starts,
            tokens=rows["token"],
            counts=rows["count"],
            examples=rows["example_image"],
            above_words=read_above_filter(con, info),
        )

    @cached_property
    def key_filter(self) -> KeyFilter:
        """Built on first use (the exact search's forward check), unless it came built."""
        return KeyFilter(self.keys, self.built.key_words if self.built else None)

    @cached_property
    def key_slots(self) -> np.ndarray:
        """(S, 2) int64 hash table of the keys for the exact search, built on first use unless
        it came built."""
        return self.built.key_slots if self.built else self._key_slots()

    def _key_slots(self) -> np.ndarray:
        return key_hash_table(self.keys, self.starts)

    def search_aids(self) -> SearchAids:
        """The hash table and filters, built now if they were not."""
        return SearchAids(self.key_slots, self.key_filter.words)

    def lookup_keys(self, keys: np.ndarray) -> Lookup:
        """Row ranges of many context keys at once (binary search)."""
        where = np.searchsorted(self.keys, keys)
        clipped = np.minimum(where, len(self.keys) - 1)
        found = (where < len(self.keys)) & (self.keys[clipped] == keys)
        return Lookup(found, self.starts[clipped], self.starts[clipped + 1])

    def key_for(self, contexts: np.ndarray, positions: np.ndarray | None = None) -> np.ndarray:
        """Keys of (M, K) contexts, with positions when the table is positional."""
        k = context_size(self.gamma)
        if contexts.ndim != 2 or contexts.shape[1] != k:
            raise InvalidInputError(f"gamma={self.gamma} contexts have {k} tokens")
        if self.info.positional and positions is None:
            raise InvalidInputError(f"table {self.info.name} is positional: give positions")
        return context_keys(contexts, positions if self.info.positional else None)

    def histogram(self, context: np.ndarray, position: int | None = None) -> Histogram | None:
        """The histogram of one context, or None when training never saw it."""
        pos = None if position is None else np.array([position])
        result = self.lookup_keys(self.key_for(np.asarray(context)[None, :], pos))
        if not result.found[0]:
            return None
        rows = slice(int(result.start[0]), int(result.end[0]))
        return Histogram(self.tokens[rows], self.counts[rows], self.examples[rows])
