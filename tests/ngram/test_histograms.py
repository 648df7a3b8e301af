"""A table's histograms read back from DuckDB equal the histograms counted in numpy."""

import numpy as np

from service.ngram.histograms import Histograms, grid_histograms
from tests.helpers import SmallTables


def _as_dict(h: Histograms) -> dict[tuple[int, ...], list[tuple[int, int]]]:
    """context → sorted (token, count) pairs."""
    out = {}
    for m in range(len(h)):
        rows = range(int(h.starts[m]), int(h.starts[m + 1]))
        out[tuple(h.contexts[m].tolist())] = sorted(
            (int(h.tokens[r]), int(h.counts[r])) for r in rows
        )
    return out


def test_table_histograms_match_numpy_histograms(small_tables: SmallTables) -> None:
    for gamma in (3, 5):
        from_table = small_tables.histograms[gamma]
        from_numpy = grid_histograms(small_tables.grids, gamma, positional=False)
        assert len(from_table) == len(from_numpy) > 0
        assert _as_dict(from_table) == _as_dict(from_numpy)
        assert from_table.counts.sum() == small_tables.tokens.size  # every window counted once
        assert np.all(np.diff(from_table.starts) >= 1)
