"""Histograms q(token | context) as arrays, grouped by context (CSR): read from a built table, or
counted from the windows of some token grids (e.g. the test split). The γ-ARVM trains on these
and the likelihood evaluation scores them."""

from __future__ import annotations

from dataclasses import dataclass

import duckdb
import numpy as np

from service.errors import RunError
from service.ngram.index import group_offsets
from service.ngram.store import TableInfo, read_context_tokens, read_rows
from service.ngram.tokens import TokenGrids
from service.ngram.windows import build_windows


@dataclass(frozen=True)
class Histograms:
    """Distinct contexts with their next-token counts, grouped: rows of context m are
    starts[m] … starts[m+1] − 1."""

    contexts: np.ndarray  # (M, K) int64 tokens, PAD = 2^C
    positions: np.ndarray | None  # (M,) int64 raster positions, for positional tables
    starts: np.ndarray  # (M + 1,) int64
    tokens: np.ndarray  # (R,) int64 next tokens
    counts: np.ndarray  # (R,) int64 windows with this context followed by this token

    def __len__(self) -> int:
        return len(self.contexts)


def table_histograms(con: duckdb.DuckDBPyConnection, info: TableInfo) -> Histograms:
    """Every distinct context of a built table with its histogram, through Arrow."""
    rows = read_rows(con, info, ("context_key", "token", "count"))
    starts = group_offsets(rows["context_key"])
    tokens, positions = read_context_tokens(con, info)  # one row per context, same key order
    if len(tokens) != len(starts) - 1:
        raise RunError(f"table {info.name} is inconsistent: rebuild it with `latentgram build`")
    return Histograms(
        contexts=tokens,
        positions=positions,
        starts=starts,
        tokens=rows["token"],
        counts=rows["count"],
    )


def grid_histograms(grids: TokenGrids, gamma: int, positional: bool) -> Histograms:
    """Histograms of every window of some token grids, grouped in numpy."""
    w = build_windows(grids.tokens, grids.image_ids, gamma, grids.pad, positional=positional)
    order = np.lexsort((w.tokens, w.keys))
    keys, toks = w.keys[order], w.tokens[order]
    new_pair = np.r_[True, (keys[1:] != keys[:-1]) | (toks[1:] != toks[:-1])]
    pair_start = np.flatnonzero(new_pair)
    counts = np.diff(np.r_[pair_start, len(keys)])
    ctx_starts = group_offsets(keys[pair_start])
    window_of_ctx = order[pair_start[ctx_starts[:-1]]]
    return Histograms(
        contexts=w.contexts[window_of_ctx].astype(np.int64),
        positions=w.positions[window_of_ctx] if positional else None,
        starts=ctx_starts,
        tokens=toks[pair_start],
        counts=counts.astype(np.int64),
    )
