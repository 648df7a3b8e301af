"""Helpers for n-gram tests, written independently of service.windows: plain loops over the
definition of the causal window (DESIGN.md §3)."""

from __future__ import annotations

from collections import Counter, defaultdict
from pathlib import Path

import duckdb
import numpy as np

from service.bits import pack_bits, tokens_to_bits
from service.parquet_io import LatentSet


def window_at(grid: np.ndarray, y: int, x: int, gamma: int, pad: int) -> tuple[int, ...]:
    """The causal context of (y, x) by the definition, one token at a time."""
    r = (gamma - 1) // 2
    h, w = grid.shape
    cells = [(y + dy, x + dx) for dy in range(-r, 0) for dx in range(-r, r + 1)]
    cells += [(y, x + dx) for dx in range(-r, 0)]
    return tuple(int(grid[yy, xx]) if 0 <= yy < h and 0 <= xx < w else pad for yy, xx in cells)


def brute_force_histograms(
    tokens: np.ndarray, ids: np.ndarray, gamma: int, pad: int, positional: bool = False
) -> dict[tuple[int, ...], dict[int, tuple[int, set[int]]]]:
    """context → token → (count, image ids) by scanning every window of every grid.

    For positional tables the raster position is appended to the context.
    """
    counts: dict[tuple[int, ...], Counter[int]] = defaultdict(Counter)
    images: dict[tuple[tuple[int, ...], int], set[int]] = defaultdict(set)
    for grid, image in zip(tokens, ids, strict=True):
        for y in range(grid.shape[0]):
            for x in range(grid.shape[1]):
                ctx, tok = window_at(grid, y, x, gamma, pad), int(grid[y, x])
                if positional:
                    ctx += (y * grid.shape[1] + x,)
                counts[ctx][tok] += 1
                images[(ctx, tok)].add(int(image))
    return {
        ctx: {tok: (n, images[(ctx, tok)]) for tok, n in hist.items()}
        for ctx, hist in counts.items()
    }


def latents_from_tokens(
    tokens: np.ndarray, channels: int, ids: np.ndarray | None = None
) -> LatentSet:
    """A training-split LatentSet holding the given (N, H, W) token grids."""
    n, h, w = tokens.shape
    ids = np.arange(n) if ids is None else ids
    packed = pack_bits(tokens_to_bits(tokens, channels))
    return LatentSet(
        ids, np.full(n, "train"), np.zeros(n, np.int64), packed, (channels, h, w), "0" * 64
    )


def downgrade_to_first_schema(store: Path) -> None:
    """Rewrite a store in the layout of migration 0001, as an older latentgram left it: the
    context and position on every token row of `ngrams`, no `ngram_contexts`."""
    with duckdb.connect(str(store)) as con:
        con.execute("BEGIN TRANSACTION")
        con.execute(
            "CREATE TABLE first_ngrams AS SELECT n.table_id, n.context_key, c.context, c.position,"
            " n.token, n.count, n.images, n.example_image"
            " FROM ngrams n JOIN ngram_contexts c USING (table_id, context_key)"
        )
        con.execute("DROP TABLE ngrams")
        con.execute("DROP TABLE ngram_contexts")
        con.execute("ALTER TABLE first_ngrams RENAME TO ngrams")
        con.execute("DELETE FROM schema_version WHERE version > 1")
        con.execute("COMMIT")
