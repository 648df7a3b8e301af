"""Which positions of a grid constrain which, for the exact search (ngram/exact.py).

Position q's token must follow a context the table knows, and that context is made of the tokens
of window(q): the in-grid positions of q's causal γ-window, all before q in raster order. So
- window(q) is the set of positions a failure at q can blame (conflict-directed backjumping);
- q's context is fully known as soon as the last position of window(q) is placed: placing p
  "completes" the contexts of the positions whose window ends at p, at most two of them (the
  next position, and the first of the next row once the row above is placed far enough), and
  forward checking looks each of those up for every candidate token of p;
- the part of q's window in the rows above q (its "above part") is known earlier, once the
  row above is placed far enough: placing p completes the above parts of the positions whose
  above part ends at p (in the next rows), and forward checking asks the table whether any of
  its contexts starts with that above part. At γ = 3 this is what sees a row that leaves the
  row below no way to go on.

Sets of positions are bit masks, one uint64 word per 64 positions (four for a 16×16 grid).
"""

from __future__ import annotations

from dataclasses import dataclass
from functools import cache

import numpy as np

from service.ngram.windows import context_offsets


@dataclass(frozen=True)
class GridConstraints:
    """The constraint geometry of γ-windows on an H×W grid, positions in raster order."""

    words: int  # uint64 words per position set
    window: np.ndarray  # (P, words) uint64: window(p), its in-grid positions
    completes: np.ndarray  # (P, 2) int64: positions whose context placing p completes, −1: none
    slot: np.ndarray  # (P, 2) int64: where p sits in each completed context (its slot index)
    blame: np.ndarray  # (P, 2, words) uint64: window(q) without p, for q = completes[p, k]
    above: np.ndarray  # (P, J) int64: positions whose above part placing p completes, −1: none
    above_slot: np.ndarray  # (P, J) int64: where p sits in that above part
    above_blame: np.ndarray  # (P, J, words) uint64: the above part's positions without p
    single: np.ndarray  # (P, words) uint64: {p} alone

    @property
    def positions(self) -> int:
        return len(self.window)


def _mask(positions: list[int], words: int) -> np.ndarray:
    out = np.zeros(words, np.uint64)
    for p in positions:
        out[p // 64] |= np.uint64(1) << np.uint64(p % 64)
    return out


@cache
def grid_constraints(gamma: int, height: int, width: int) -> GridConstraints:
    """The geometry of one (γ, H, W), computed once."""
    offsets = context_offsets(gamma)
    positions = height * width
    words = -(-positions // 64)
    members: list[list[int]] = []  # window(q) in slot order, −1 where the slot is off the grid
    for q in range(positions):
        y, x = divmod(q, width)
        slots = [
            (y + dy) * width + (x + dx) if 0 <= y + dy < height and 0 <= x + dx < width else -1
            for dy, dx in offsets
        ]
        members.append(slots)
    full = _completions(members, positions, words)
    above_slots = [slots[: r_above(gamma)] for slots in members]
    above = _completions(above_slots, positions, words, skip=[max(s) for s in members])
    return GridConstraints(
        words=words,
        window=np.stack([_mask([s for s in slots if s >= 0], words) for slots in members]),
        completes=full[0],
        slot=full[1],
        blame=full[2],
        above=above[0],
        above_slot=above[1],
        above_blame=above[2],
        single=np.stack([_mask([p], words) for p in range(positions)]),
    )


def r_above(gamma: int) -> int:
    """Slots of a context in the rows above its position: r(2r + 1)."""
    r = (gamma - 1) // 2
    return r * (2 * r + 1)


def _completions(
    members: list[list[int]], positions: int, words: int, skip: list[int] | None = None
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """For each p, the q whose slot list `members[q]` ends at p: (q, p's slot in it, the other
    positions of it), as (P, J) arrays padded with −1. `skip[q]` leaves q out where its list
    ends at the same p (its whole context is checked there already)."""
    ends: list[list[int]] = [[] for _ in range(positions)]
    for q, slots in enumerate(members):
        last = max(slots, default=-1)
        if last >= 0 and (skip is None or skip[q] != last):  # the first position: all PAD
            ends[last].append(q)
    width = max(2, *(len(e) for e in ends))
    completes = np.full((positions, width), -1, np.int64)
    slot = np.full((positions, width), -1, np.int64)
    blame = np.zeros((positions, width, words), np.uint64)
    for last, qs in enumerate(ends):
        for k, q in enumerate(qs):
            completes[last, k], slot[last, k] = q, members[q].index(last)
            blame[last, k] = _mask([s for s in members[q] if s >= 0 and s != last], words)
    return completes, slot, blame


def highest_position(masks: np.ndarray) -> np.ndarray:
    """(B, words) uint64 position sets → (B,) the highest position in each, −1 for an empty set.

    Each word is split into 32-bit halves, whose log2 float64 gives exactly (a 64-bit word does
    not fit a double's mantissa, and 2^64 − 1 would round up to 2^64).
    """
    out = np.full(len(masks), -1, np.int64)
    for w in range(masks.shape[1]):
        word = masks[:, w]
        for shift in (0, 32):
            half = (word >> np.uint64(shift)) & np.uint64(0xFFFFFFFF)
            nonzero = half > 0
            bit = np.floor(np.log2(np.where(nonzero, half, 1).astype(np.float64))).astype(np.int64)
            out = np.where(nonzero, 64 * w + shift + bit, out)  # later words, halves win
    return out
