"""Interpolated Witten-Bell down the γ chain: a distribution, equal to the definition counted
by hand, context by context."""

from __future__ import annotations

from collections import Counter
from pathlib import Path

import numpy as np

from service.ngram.index import NgramIndex
from service.ngram.smoothing import CountLookup, smoothed_chain, unigram_probabilities
from service.ngram.windows import build_windows
from tests.helpers import brute_force_histograms, index_of, window_at

CHANNELS, PAD = 2, 4


def chain_for(tmp_path: Path, tokens: np.ndarray) -> dict[int, NgramIndex]:
    return {g: index_of(tmp_path / f"g{g}.duckdb", tokens, CHANNELS, g) for g in (3, 5)}


def query(
    indexes: dict[int, NgramIndex], grids: np.ndarray, tokens: np.ndarray
) -> list[np.ndarray]:
    """p at every level for the windows of `grids`, each window asked about `tokens` (Q,)."""
    ids = np.arange(len(grids))
    keys = [build_windows(grids, ids, g, PAD).keys for g in (3, 5)]
    lookups = [CountLookup(indexes[g]) for g in (3, 5)]
    return smoothed_chain(lookups, keys, tokens, unigram_probabilities(indexes[3]))


def test_every_level_sums_to_one_over_the_vocabulary(tmp_path: Path) -> None:
    rng = np.random.default_rng(0)
    indexes = chain_for(tmp_path, rng.integers(0, 4, (30, 3, 4)))
    queries = rng.integers(0, 4, (10, 3, 4))  # random grids: seen and unseen contexts
    windows = len(queries) * 12
    total = [np.zeros(windows) for _ in (3, 5)]
    for token in range(1 << CHANNELS):
        for level, p in enumerate(query(indexes, queries, np.full(windows, token))):
            assert np.all(p > 0)
            total[level] += p
    for level_total in total:
        np.testing.assert_allclose(level_total, 1.0, rtol=1e-12)


def witten_bell_by_hand(
    training: np.ndarray, grid: np.ndarray, y: int, x: int, token: int
) -> float:
    """The definition, one dictionary at a time (ngram/smoothing.py's docstring)."""
    unigram = Counter(int(t) for t in training.ravel())
    n, types, vocab = sum(unigram.values()), len(unigram), 1 << CHANNELS
    p = (unigram[token] + types / vocab) / (n + types)
    for gamma in (3, 5):
        hist = brute_force_histograms(training, np.arange(len(training)), gamma, PAD)
        seen = hist.get(window_at(grid, y, x, gamma, PAD))
        if seen:
            total = sum(count for count, _ in seen.values())
            count = seen[token][0] if token in seen else 0
            p = (count + len(seen) * p) / (total + len(seen))
    return p


def test_equals_the_definition_counted_by_hand(tmp_path: Path) -> None:
    rng = np.random.default_rng(1)
    training = rng.integers(
        0, 3, (25, 3, 4)
    )  # token 3 never occurs: only the uniform gives it mass
    indexes = chain_for(tmp_path, training)
    grids = np.concatenate([training[:2], rng.integers(0, 4, (2, 3, 4))])
    for token in range(4):
        top = query(indexes, grids, np.full(len(grids) * 12, token))[-1].reshape(len(grids), 3, 4)
        for i, grid in enumerate(grids):
            for y in range(3):
                for x in range(4):
                    expected = witten_bell_by_hand(training, grid, y, x, token)
                    assert (
                        top[i, y, x] == np.float64(expected) or abs(top[i, y, x] - expected) < 1e-12
                    )
