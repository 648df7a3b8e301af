"""Smoothed n-gram probabilities: the exact tables interpolated down the γ chain (Witten-Bell).

The contexts of smaller windows are sub-windows of the larger ones (DESIGN.md §3), so the tables
of γ = 3 < 5 < 7 … form a back-off chain like n-gram orders. Interpolated Witten-Bell:

    p_0(t)       = (u(t) + T_0 / V) / (N + T_0)              the unigram, mixed with uniform
    p_γ(t | c)   = (n(c, t) + T(c) · p_lower(t)) / (n(c) + T(c))    where the table knows c
    p_γ(t | c)   = p_lower(t)                                       where it does not

with n(c, t) the table's count, n(c) = Σ_t n(c, t), T(c) the number of distinct tokens seen after
c, and p_lower the next smaller γ (the unigram below the smallest). Each level sums to 1 over the
2^C tokens, so every level does. The same rule mixes a table with any lower-order model, e.g. the
γ-ARVM (evaluation/likelihood.py): the weight of the table, n(c) / (n(c) + T(c)), grows with how
often its context was seen.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from service.ngram.index import NgramIndex


@dataclass(frozen=True)
class ContextCounts:
    """What a table knows about Q queries (context, token)."""

    total: np.ndarray  # (Q,) float64 n(c); 0 where the table never saw c
    types: np.ndarray  # (Q,) float64 T(c)
    count: np.ndarray  # (Q,) float64 n(c, t)


class CountLookup:
    """Batched n(c), T(c), n(c, t) over one index."""

    def __init__(self, index: NgramIndex) -> None:
        self.index = index
        self.cumulative = np.r_[0.0, np.cumsum(index.counts, dtype=np.float64)]
        self.stride = index.pad + 1  # > every token
        segment_of_row = np.repeat(index.starts[:-1], np.diff(index.starts))
        # sorted: rows are ordered by context, then token, so (segment start, token) ascends
        self.row_keys = segment_of_row * self.stride + index.tokens

    def counts(self, keys: np.ndarray, tokens: np.ndarray) -> ContextCounts:
        """keys: (Q,) context keys (index.key_for); tokens: (Q,) next tokens."""
        found = self.index.lookup_keys(keys)
        start = np.where(found.found, found.start, 0)
        end = np.where(found.found, found.end, 0)
        total = self.cumulative[end] - self.cumulative[start]
        query = start * self.stride + tokens
        at = np.minimum(np.searchsorted(self.row_keys, query), len(self.row_keys) - 1)
        hit = found.found & (self.row_keys[at] == query)
        count = np.where(hit, self.index.counts[at], 0).astype(np.float64)
        return ContextCounts(total, (end - start).astype(np.float64), count)


def witten_bell(counts: ContextCounts, lower: np.ndarray) -> np.ndarray:
    """(Q,) p(t | c) of a table interpolated with a lower-order model's p_lower(t) (Q,)."""
    seen = counts.total > 0
    mixed = (counts.count + counts.types * lower) / np.maximum(counts.total + counts.types, 1)
    return np.where(seen, mixed, lower)


def unigram_probabilities(index: NgramIndex) -> np.ndarray:
    """(2^C,) p_0: token frequencies of the training windows, interpolated with uniform."""
    vocab = index.pad
    counts = np.bincount(index.tokens, weights=index.counts, minlength=vocab)[:vocab]
    types = float((counts > 0).sum())
    return (counts + types / vocab) / (counts.sum() + types)


def smoothed_chain(
    lookups: list[CountLookup], keys: list[np.ndarray], tokens: np.ndarray, unigram: np.ndarray
) -> list[np.ndarray]:
    """p(t | c) at every level of the chain, smallest γ first: lookups[i] answers keys[i], the
    query windows' contexts at the i-th γ; each level backs off to the one before."""
    p = unigram[tokens]
    levels = []
    for lookup, level_keys in zip(lookups, keys, strict=True):
        p = witten_bell(lookup.counts(level_keys, tokens), p)
        levels.append(p)
    return levels
