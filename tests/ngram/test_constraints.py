"""The constraint geometry of the exact search, against the window definition counted by hand."""

from __future__ import annotations

import numpy as np
import pytest

from service.ngram.constraints import grid_constraints, highest_position
from service.ngram.windows import above_size, context_offsets


def window(q: int, gamma: int, h: int, w: int) -> list[int]:
    """In-grid positions of q's causal window, in slot order (−1 off the grid)."""
    y, x = divmod(q, w)
    return [
        (y + dy) * w + x + dx if 0 <= y + dy < h and 0 <= x + dx < w else -1
        for dy, dx in context_offsets(gamma)
    ]


def members(masks: np.ndarray) -> set[int]:
    return {64 * i + b for i, word in enumerate(masks) for b in range(64) if int(word) >> b & 1}


@pytest.mark.parametrize(
    ("gamma", "h", "w"), [(3, 4, 4), (5, 4, 4), (7, 4, 4), (3, 8, 8), (5, 16, 16)]
)
def test_completions_are_where_windows_end(gamma: int, h: int, w: int) -> None:
    c = grid_constraints(gamma, h, w)
    for q in range(h * w):
        slots = window(q, gamma, h, w)
        placed = [s for s in slots if s >= 0]
        assert members(c.window[q]) == set(placed)
        if placed:  # q's whole context is known once its last position is placed
            last = max(placed)
            k = list(c.completes[last]).index(q)
            assert c.slot[last, k] == slots.index(last)
            assert members(c.blame[last, k]) == set(placed) - {last}
        above = [s for s in slots[: above_size(gamma)] if s >= 0]
        if above and max(above) != max(placed):  # its above part is known earlier
            last = max(above)
            k = list(c.above[last]).index(q)
            assert c.above_slot[last, k] == slots.index(last)
            assert members(c.above_blame[last, k]) == set(above) - {last}
        else:
            assert q not in c.above


def test_highest_position_over_words() -> None:
    masks = np.zeros((5, 4), np.uint64)
    masks[1, 0] = 1
    masks[2, 0] = np.uint64(2**63) | np.uint64(5)
    masks[3, 2] = np.uint64(2**64 - 1)  # all bits: a float64 log2 of the whole word would say 64
    masks[4, 1], masks[4, 3] = 8, np.uint64(2**32)
    assert highest_position(masks).tolist() == [-1, 0, 63, 191, 224]
