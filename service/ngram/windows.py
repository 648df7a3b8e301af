"""Causal γ-windows over token grids (DESIGN.md §3), vectorized over all images and positions.

For γ odd ≥ 3 and r = (γ−1)/2, the context of (y, x) is, in this order, the tokens at
(y+dy, x+dx) for dy = −r … −1, dx = −r … r, then dy = 0, dx = −r … −1: 2r(r+1) tokens, PAD (= 2^C)
outside the grid. A context is stored and looked up by a 64-bit hash key of those tokens (and,
for positional tables, the position); the build checks that no two contexts share a key.
"""

from __future__ import annotations

from dataclasses import dataclass
from functools import cache

import numpy as np

from service.errors import InvalidInputError

# splitmix64 constants (Steele et al.); numpy uint64 arithmetic wraps, which is what we want.
_GOLDEN = np.uint64(0x9E3779B97F4A7C15)
_MIX1 = np.uint64(0xBF58476D1CE4E5B9)
_MIX2 = np.uint64(0x94D049BB133111EB)
_NO_POSITION = -1


def check_gamma(gamma: int) -> int:
    """γ itself, or InvalidInputError when it is not an odd window size ≥ 3."""
    if not isinstance(gamma, (int, np.integer)) or gamma < 3 or gamma % 2 == 0:
        raise InvalidInputError(f"gamma must be an odd window size ≥ 3 (3, 5, 7, …), got {gamma}")
    return int(gamma)


def global_gamma(height: int, width: int) -> int:
    """The smallest γ whose window holds every earlier position of an H×W grid (7 on 4×4, 15
    on 8×8, 31 on 16×16): a larger γ sees the same contexts."""
    return max(3, 2 * max(height, width) - 1)


def check_gamma_fits(gamma: int, height: int, width: int) -> int:
    """γ itself, or InvalidInputError when it is wider than the grid's global window."""
    top = global_gamma(height, width)
    if check_gamma(gamma) > top:
        raise InvalidInputError(
            f"gamma={gamma} is wider than the global window of the {height}×{width} grid: "
            f"choose an odd γ in 3..{top} (γ = {top} already sees every earlier position)"
        )
    return gamma


def default_gammas(height: int, width: int) -> tuple[int, ...]:
    """γ from local to global, enough to draw memorization against γ: 3, 5, 7, then about ×1.5
    a step, and the global window last ((3, 5, 7) on 4×4, (3, 5, 7, 11, 15) on 8×8)."""
    top = global_gamma(height, width)
    gammas = [g for g in (3, 5) if g < top]
    g = 7
    while g < top:
        gammas.append(g)
        g = max(g + 2, round(g * 1.5) | 1)
    return (*gammas, top)


@cache
def context_offsets(gamma: int) -> np.ndarray:
    """(K, 2) array of (dy, dx) in the fixed context order; K = 2r(r+1)."""
    r = (check_gamma(gamma) - 1) // 2
    above = [(dy, dx) for dy in range(-r, 0) for dx in range(-r, r + 1)]
    left = [(0, dx) for dx in range(-r, 0)]
    offsets = np.array(above + left, dtype=np.int64)
    offsets.setflags(write=False)
    return offsets


def context_size(gamma: int) -> int:
    r = (check_gamma(gamma) - 1) // 2
    return 2 * r * (r + 1)


def above_size(gamma: int) -> int:
    """Slots of a context in the rows above its position (the first r(2r+1)): a context's
    "above part", which the row above fixes before any token of the position's own row."""
    r = (check_gamma(gamma) - 1) // 2
    return r * (2 * r + 1)


def pad_grids(tokens: np.ndarray, gamma: int, pad: int) -> np.ndarray:
    """(N, H, W) → (N, H + r, W + 2r) with PAD above, left and right; (y, x) moves to (y+r, x+r)."""
    r = (gamma - 1) // 2
    return np.pad(tokens, ((0, 0), (r, 0), (r, r)), constant_values=pad)


def gather_contexts(
    padded: np.ndarray, rows: np.ndarray, ys: np.ndarray, xs: np.ndarray, gamma: int
) -> np.ndarray:
    """Contexts of grid `rows[i]` at (ys[i], xs[i]) from padded grids → (M, K) tokens."""
    r = (gamma - 1) // 2
    off = context_offsets(gamma)
    return padded[
        rows[:, None], ys[:, None] + r + off[None, :, 0], xs[:, None] + r + off[None, :, 1]
    ]


def token_dtype(pad: int) -> np.dtype:
    """The narrowest unsigned type that holds every token and PAD (= 2^C, C ≤ 16)."""
    return np.dtype(np.uint16 if pad <= np.iinfo(np.uint16).max else np.uint32)


def extract_windows(tokens: np.ndarray, gamma: int, pad: int) -> tuple[np.ndarray, np.ndarray]:
    """Every window of every grid: (N·H·W, K) contexts and (N·H·W,) next tokens.

    Rows are ordered image-major, then raster order: row i is image i // (H·W), position
    i % (H·W). Each context slot is one shifted slice of the padded grids, copied whole; the
    contexts are a column-major view of those slots, so each slot (a column) is contiguous for
    the key hash, and tokens take 2 bytes instead of 8.
    """
    check_gamma(gamma)
    n, h, w = tokens.shape
    r = (gamma - 1) // 2
    padded = pad_grids(tokens.astype(token_dtype(pad), copy=False), gamma, pad)
    offsets = context_offsets(gamma)
    slots = np.empty((len(offsets), n, h, w), dtype=padded.dtype)
    for slot, (dy, dx) in zip(slots, offsets, strict=True):
        slot[...] = padded[:, r + dy : r + dy + h, r + dx : r + dx + w]
    return slots.reshape(len(offsets), -1).T, tokens.reshape(-1)


def splitmix64(x: np.ndarray) -> np.ndarray:
    """The splitmix64 finalizer over uint64 arrays: a cheap, well-mixed 64-bit hash."""
    x = x ^ (x >> np.uint64(30))
    x = x * _MIX1
    x = x ^ (x >> np.uint64(27))
    x = x * _MIX2
    return x ^ (x >> np.uint64(31))


def _mix_slot(h: np.ndarray, column: np.ndarray, shifted: np.ndarray) -> None:
    """One context slot into the running hashes h, in place: xor, multiply, xorshift."""
    np.bitwise_xor(h, column, out=h, dtype=np.uint64, casting="unsafe")
    h *= _MIX1
    np.right_shift(h, np.uint64(29), out=shifted)
    h ^= shifted


def _finish(h: np.ndarray, positions: np.ndarray | None) -> np.ndarray:
    pos = positions if positions is not None else np.full(len(h), _NO_POSITION)
    return splitmix64(h ^ pos.astype(np.int64).astype(np.uint64)).view(np.int64)


def context_keys(contexts: np.ndarray, positions: np.ndarray | None = None) -> np.ndarray:
    """(M, K) tokens (and optional (M,) positions) → (M,) int64 hash keys.

    One xor-multiply-xorshift round per context slot over all rows at once (the sampler calls
    this every step, so it is kept to four array operations per slot), then a full splitmix64
    finalizer. Positions enter the finalizer, so a positional key differs from the plain key of
    the same tokens. Two different contexts share a key with probability ~2^-64: the build checks
    the training contexts for it, and a query colliding with a training key is ~1e-13 likely.
    """
    contexts = np.asarray(contexts)
    with np.errstate(over="ignore"):
        h = np.full(len(contexts), _GOLDEN, dtype=np.uint64)
        shifted = np.empty_like(h)  # reused: no temporary array per slot
        for k in range(contexts.shape[1]):  # contiguous when contexts come from extract_windows
            _mix_slot(h, contexts[:, k], shifted)
        return _finish(h, positions)


def candidate_keys(
    contexts: np.ndarray,
    slot: np.ndarray,
    owner: np.ndarray,
    tokens: np.ndarray,
    positions: np.ndarray | None = None,
) -> np.ndarray:
    """context_keys of contexts[owner] with slot slot[owner] set to tokens, without building
    them: the slots before a row's varying one are hashed once per row, not once per candidate
    (the exact search checks many candidate tokens for one context).

    contexts: (M, K); slot: (M,); owner, tokens and positions: (N,).
    """
    out = np.empty(len(owner), np.int64)
    slot_of = slot[owner]
    with np.errstate(over="ignore"):
        for value in np.unique(slot_of):  # one or two slots: each group hashed without masks
            rows = np.flatnonzero(slot == value)
            local = np.full(len(contexts), -1, np.int64)
            local[rows] = np.arange(len(rows))
            h = np.full(len(rows), _GOLDEN, dtype=np.uint64)
            shifted = np.empty_like(h)
            for k in range(int(value)):
                _mix_slot(h, contexts[rows, k], shifted)
            mine = np.flatnonzero(slot_of == value)
            g = h[local[owner[mine]]]
            shifted = np.empty_like(g)
            _mix_slot(g, tokens[mine], shifted)
            for k in range(int(value) + 1, contexts.shape[1]):
                _mix_slot(g, contexts[owner[mine], k], shifted)
            out[mine] = _finish(g, positions[mine] if positions is not None else None)
    return out


@dataclass(frozen=True)
class WindowSet:
    """All windows of a set of token grids, keyed for the store."""

    keys: np.ndarray  # (M,) int64 context hash
    contexts: np.ndarray  # (M, K) context tokens, column-major uint16 (uint32 when C = 16)
    positions: np.ndarray  # (M,) int64 raster position y·W + x
    tokens: np.ndarray  # (M,) int64 next token
    images: np.ndarray  # (M,) int64 image id the window comes from


def build_windows(
    tokens: np.ndarray, image_ids: np.ndarray, gamma: int, pad: int, *, positional: bool = False
) -> WindowSet:
    """Windows of every grid in `tokens` (N, H, W) with their keys and source image ids."""
    n, h, w = tokens.shape
    contexts, nxt = extract_windows(tokens, gamma, pad)
    positions = np.tile(np.arange(h * w, dtype=np.int64), n)
    keys = context_keys(contexts, positions if positional else None)
    return WindowSet(keys, contexts, positions, nxt, np.repeat(image_ids.astype(np.int64), h * w))
