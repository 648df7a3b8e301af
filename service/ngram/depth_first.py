"""The exact search's loop, compiled with numba: one depth-first search per sample, with forward
checking and conflict-directed backjumping (ngram/exact.py says what the search does and why it
keeps the distribution; this file is how it runs fast).

A search is a few hundred small steps, each a handful of hash-table lookups and hashes over a few
dozen tokens: array code pays a fixed cost per step that dwarfs that work, compiled code does
not. Each sample runs alone from its own counter-based random numbers, so batches split across
threads (the functions release the GIL) give the same samples as one thread, and so do the
LANES searches a thread runs in turn to overlap their cache misses (`search`).

Context keys and uniforms are computed exactly as windows.context_keys and samples.uniform do
(tests/ngram/test_depth_first.py checks both), so a key the search forms is the key the build
stored.
"""

from __future__ import annotations

from typing import Any, NamedTuple, cast

import numpy as np
from numba import njit

from service.ngram.prefetch import prefetch
from service.ngram.windows import _GOLDEN, _MIX1, _MIX2

# The search allocates nothing (its arrays come from the caller), so it is compiled without
# reference counting (numba's `_nrt` switch): counting references on every array a step touches
# cost more than the search itself (γ = 3, one thread: 3,900 grids/s with it, 8,900 without).
# The helpers of a step that take the search's tuples of arrays are inlined into it by numba
# (`inlined`); called, they cost a third of the speed. Numba inlines by copying the callee's IR
# at each call site, nested helpers included, so the small leaf helpers (hashes, lookups) are
# plain `compiled` functions, which LLVM inlines itself: the search compiles in 11 s instead of
# 27, as fast.
compiled = cast(Any, njit)(cache=True, nogil=True, _nrt=False)
inlined = cast(Any, njit)(cache=True, nogil=True, _nrt=False, inline="always")

NOT_REACHED, FINISHED, OUT_OF_BUDGET, EXHAUSTED = 0, 1, 2, 3  # how a search ended
UNIFORM_OFFSET = np.uint64(0x632BE59BD9B4E019)  # samples.uniform's counter offset
NO_POSITION = np.uint64(0xFFFFFFFFFFFFFFFF)  # windows._NO_POSITION (−1) as the finalizer sees it
_ONE = np.uint64(1)
_RANGE_BITS = 20  # of a packed row range (row_ranges): its row count
TRIED = -1.0  # the listed weight of a candidate already drawn


class Table(NamedTuple):
    """One n-gram table as the search reads it (ngram/index.py)."""

    key_slots: np.ndarray  # (S, 2) int64 hash table: context key → its rows (row_ranges)
    key_words: np.ndarray  # the bit words of a Bloom filter of the keys (index.KeyFilter)
    tokens: np.ndarray  # (R,) int64 next token of each row
    cum: np.ndarray  # (R,) float64 prefix sums of count^(1/T) within each context, inclusive
    above_words: np.ndarray  # a Bloom filter of the keys of the contexts' above parts
    positional: bool  # keys carry the position of their context


class Geometry(NamedTuple):
    """Where windows sit on the grid and which positions constrain which (ngram/constraints.py)."""

    width: int
    r: int  # (γ − 1) / 2: the padded grid holds (y, x) at (y + r, x + r)
    offsets: np.ndarray  # (K, 2) (dy, dx) of each context slot
    above_size: int  # slots of a context in the rows above it
    pad: int
    completes: np.ndarray  # (P, 2) contexts placing p completes, −1: none
    slot: np.ndarray  # (P, 2) p's slot in them
    blame: np.ndarray  # (P, 2, words) uint64: their windows without p
    above: np.ndarray  # (P, J) above parts placing p completes, −1: none
    above_slot: np.ndarray  # (P, J)
    above_blame: np.ndarray  # (P, J, words) uint64
    window: np.ndarray  # (P, words) uint64: window(p)
    single: np.ndarray  # (P, words) uint64: {p}


class Results(NamedTuple):
    """Per-sample outputs, written in place."""

    tokens: np.ndarray  # (n, P) int64, valid below `placed`
    rows: np.ndarray  # (n, P) int64 table row placed at each position, −1 beyond `placed`
    status: np.ndarray  # (n,) int64: NOT_REACHED (0, as made), FINISHED, OUT_OF_BUDGET, EXHAUSTED
    backtracks: np.ndarray  # (n,) int64
    jumps: np.ndarray  # (n,) int64
    steps: np.ndarray  # (n,) int64
    placed: np.ndarray  # (n,) int64


class _Scratch(NamedTuple):
    """One search's state, reused from sample to sample (scratch() makes LANES of them in
    arrays of one more dimension, the lane first; _lane views one)."""

    grid: np.ndarray  # (H + r, W + 2r) int64 padded tokens, filled below the depth
    seg: np.ndarray  # (P, 2) int64 rows [start, end) of each position's context, −1: unknown
    rows: np.ndarray  # (P,) int64 row placed at each position
    drawn: np.ndarray  # (P,) int64 the position's first draw (placed or dropped), −1: none yet
    list_off: np.ndarray  # (P,) int64 the position's checked candidates in the list stack, −1
    list_size: np.ndarray  # (P,) int64 how many were listed
    list_left: np.ndarray  # (P,) int64 how many of them are untried
    top_at: np.ndarray  # (P,) int64 the stack's top when the position was entered
    conflict: np.ndarray  # (P, words) uint64 positions the failures at p depend on
    stack_row: np.ndarray  # (S,) int64 listed candidates of the positions on the path
    stack_weight: np.ndarray  # (S,) float64, TRIED once drawn
    stack_sums: np.ndarray  # (S,) float64 each list's Fenwick tree of its untried weights
    bounds: np.ndarray  # (4,) int64 those of the candidate about to be placed
    mask: np.ndarray  # (words,) uint64 a position set being built
    counters: np.ndarray  # (3,) int64: stack top, backtracks, jumps
    keys: np.ndarray  # (2 + J,) int64 the keys of a candidate's forward check (_keys)
    lane: np.ndarray  # (LANE_FIELDS,) int64 where the search stands (PHASE, DEPTH, …)


@compiled
def splitmix64(x: np.uint64) -> np.uint64:
    x = x ^ (x >> np.uint64(30))
    x = x * _MIX1
    x = x ^ (x >> np.uint64(27))
    x = x * _MIX2
    return x ^ (x >> np.uint64(31))


@compiled
def uniform(seed: np.uint64, sample: np.uint64, step: np.uint64, j: np.uint64) -> float:
    """samples.uniform for one (seed, sample, step, j): a uniform in (0, 1)."""
    x = splitmix64(j + UNIFORM_OFFSET)
    x = splitmix64(x ^ step)
    x = splitmix64(x ^ sample)
    x = splitmix64(x ^ seed)
    return (np.float64(x >> np.uint64(11)) + 0.5) * 2.0**-53


@compiled
def _mix(h, token):
    """One slot's round of windows.context_keys."""
    h = (h ^ np.uint64(token)) * _MIX1
    return h ^ (h >> np.uint64(29))


@compiled
def _finish(h, q, positional):
    """windows.context_keys' finalizer of a context's rounds, with its position q or none."""
    position = np.uint64(q) if positional else NO_POSITION
    return np.int64(splitmix64(h ^ position))


@compiled
def _rounds(grid, geo, q, slots, var_slot, token):
    """The rounds of the first `slots` slots of q's window in the padded grid, with slot
    var_slot holding `token` instead (−1: none)."""
    qy, qx = q // geo.width + geo.r, q % geo.width + geo.r
    h = _GOLDEN
    for k in range(slots):
        v = token if k == var_slot else grid[qy + geo.offsets[k, 0], qx + geo.offsets[k, 1]]
        h = _mix(h, v)
    return h


@compiled
def window_key(grid, geo, q, slots, var_slot, token, positional):
    """context_keys of the first `slots` slots of q's window in the padded grid, with slot
    var_slot holding `token` instead (−1: none)."""
    return _finish(_rounds(grid, geo, q, slots, var_slot, token), q, positional)


@njit(cache=True, nogil=True)
def prefix_keys(tokens, width, size, positions):
    """windows.context_keys of the first `size` tokens of each context, from its (M·width,)
    tokens laid out context after context (a column of lists' values), and (M,) positions or
    an empty array for a table without them."""
    keys = np.empty(len(tokens) // width, np.int64)
    for m in range(len(keys)):
        h = _GOLDEN
        for j in range(m * width, m * width + size):
            h = _mix(h, tokens[j])
        keys[m] = _finish(h, positions[m], True) if len(positions) else _finish(h, 0, False)
    return keys


@njit(cache=True, nogil=True)
def table_size(n):
    """Slots of an open-addressing table for n entries: the power of two at least 2n, so that a
    probe runs one or two slots on average."""
    size = 2
    while size < 2 * n:
        size *= 2
    return size


@compiled
def _spread(key, size):
    """The top 32 bits of a key scaled to [0, size): keys are splitmix64 outputs, so this is
    uniform, and keys in order map to places in order."""
    return np.int64(((np.uint64(key) >> np.uint64(32)) * np.uint64(size)) >> np.uint64(32))


@njit(cache=True, nogil=True)
def hash_table(keys, values):
    """Open addressing over distinct int64 keys: (S, 2) rows of (key, its value ≥ 0), −1 as
    the value of an empty slot, S = slots_for(len(keys)). A key's first slot is _spread over S,
    so sorted keys fill the table front to back (50 M sorted keys into 2^27 slots: 1.8–2.2 s,
    against 6.5–7.1 s from their low bits, each insert a cache miss). A lookup reads one or two
    adjacent slots where a binary search over a million keys reads twenty scattered ones: at
    γ = 3 this made the whole search ~2× faster."""
    size = slots_for(len(keys))
    slots = np.full((size, 2), -1, np.int64)
    for i in range(len(keys)):
        at = _spread(keys[i], size)
        while slots[at, 1] >= 0:
            at = at + 1 if at + 1 < size else 0
        slots[at, 0], slots[at, 1] = keys[i], values[i]
    return slots


@njit(cache=True, nogil=True)
def slots_for(n):
    """Slots of a hash_table of n keys: filled to 3/5, so that a lookup reads about two
    adjacent slots (1.75 on average for a key it holds, 3.6 for one it lacks: one cache line or
    two), in 27 bytes a key (a power of two at least 2n took 32 to 64: 2 GB for 50 M keys)."""
    return max(2, (5 * n + 2) // 3)


@compiled
def find(slots, key):
    """The value of `key` in a hash_table, or −1."""
    size = len(slots)
    at = _spread(key, size)
    while slots[at, 1] >= 0:
        if slots[at, 0] == key:
            return slots[at, 1]
        at = at + 1 if at + 1 < size else 0
    return -1


def row_ranges(starts):
    """Each context's rows [starts[m], starts[m + 1]) packed in one int64, as key_slots hold
    them: a found key needs no second read. A histogram has at most 2^16 + 1 rows."""
    starts = np.asarray(starts, np.int64)
    return (starts[:-1] << _RANGE_BITS) | np.diff(starts)


@compiled
def _unpack_rows(packed):
    start = packed >> _RANGE_BITS
    return start, start + (packed & ((1 << _RANGE_BITS) - 1))


@compiled
def _filter_bits(key):
    """The four bits of a key in its filter word, from its low 24 bits (the word is from its
    top bits)."""
    u = np.uint64(key)
    bits = np.uint64(0)
    for shift in (np.uint64(0), np.uint64(6), np.uint64(12), np.uint64(18)):
        bits |= _ONE << ((u >> shift) & np.uint64(63))
    return bits


@njit(cache=True, nogil=True)
def fill_filter(words, keys):
    """Set each key's bits in its word of a blocked Bloom filter (index.KeyFilter)."""
    for i in range(len(keys)):
        words[_spread(keys[i], len(words))] |= _filter_bits(keys[i])


@compiled
def might_contain(words, key):
    """index.KeyFilter.might_contain for one key: False for a key certainly absent. One word
    read, so at most one cache miss."""
    bits = _filter_bits(key)
    return words[_spread(key, len(words))] & bits == bits


@njit(cache=True, nogil=True)
def filter_contains(words, keys):
    """might_contain of many keys: (M,) bool."""
    found = np.empty(len(keys), np.bool_)
    for i in range(len(keys)):
        found[i] = might_contain(words, keys[i])
    return found


@compiled
def _rows_of(table, key):
    """The packed rows of a context key (row_ranges), or −1: the filter first, as most keys
    asked about are not in the table."""
    return find(table.key_slots, key) if might_contain(table.key_words, key) else -1


@compiled
def fenwick_fill(sums, weight, off, n):
    """A Fenwick tree of weight[off:off + n] in sums[off:off + n], in O(n): node i (from 1)
    holds the sum of the i & −i weights that end at i."""
    for i in range(1, n + 1):
        sums[off + i - 1] = weight[off + i - 1]
    for i in range(1, n + 1):
        parent = i + (i & -i)
        if parent <= n:
            sums[off + parent - 1] += sums[off + i - 1]


@compiled
def fenwick_total(sums, off, n):
    """The sum of a Fenwick tree's n weights."""
    total, i = 0.0, n
    while i > 0:
        total += sums[off + i - 1]
        i -= i & -i
    return total


@compiled
def fenwick_find(sums, off, n, target):
    """The place (from 0) of the first weight whose prefix sum exceeds target; n when none
    does. A descent from the highest power of two, one node per level."""
    place, step = 0, 1
    while step * 2 <= n:
        step *= 2
    while step > 0:
        node = place + step
        if node <= n and sums[off + node - 1] <= target:
            place = node
            target -= sums[off + node - 1]
        step >>= 1
    return place


@compiled
def fenwick_add(sums, off, n, place, delta):
    """Add delta to the weight at `place` (from 0)."""
    i = place + 1
    while i <= n:
        sums[off + i - 1] += delta
        i += i & -i


@compiled
def _blame(s, d, blame):
    for w in range(len(blame)):
        s.conflict[d, w] |= blame[w]


@inlined
def _keys(s, table, geo, d, token):
    """Forward checking of `token` at d, its first half: the keys of the contexts it completes
    and of the above parts it completes, into s.keys, their filter words and first
    hash slots prefetched for _verify."""
    slots = len(geo.offsets)
    for k in range(2):
        q = geo.completes[d, k]
        if q >= 0:
            key = window_key(s.grid, geo, q, slots, geo.slot[d, k], token, table.positional)
            s.keys[k] = key
            prefetch(table.key_words, _spread(key, len(table.key_words)))
            prefetch(table.key_slots, _spread(key, len(table.key_slots)))
    for j in range(geo.above.shape[1]):
        q = geo.above[d, j]
        if q >= 0:
            slot = geo.above_slot[d, j]
            key = window_key(s.grid, geo, q, geo.above_size, slot, token, table.positional)
            s.keys[2 + j] = key
            prefetch(table.above_words, _spread(key, len(table.above_words)))


@inlined
def _verify(s, table, geo, d, forward_checking):
    """Forward checking, its second half, on the keys of _keys: every context the candidate
    completes must be a context of the table, every above part it completes the start of one.
    A failure adds the positions that made the failing context to d's conflict set. Writes the
    completed contexts' rows to s.bounds (−1: none, or not checked).

    Above parts are asked of their Bloom filter alone: a false positive (~0.3 %) only keeps a
    candidate that the full context's check drops later, so pruning still drops only candidates
    that cannot finish; the exact hash table behind it cost a cache miss a lookup (without it,
    at 100× the default corpus: γ = 3 +10–25 % grids/s, γ = 5 +7–18 %)."""
    s.bounds[:] = -1
    if not forward_checking:
        return True
    for k in range(2):
        if geo.completes[d, k] >= 0:
            rows = _rows_of(table, s.keys[k])
            if rows < 0:
                _blame(s, d, geo.blame[d, k])
                return False
            s.bounds[2 * k], s.bounds[2 * k + 1] = _unpack_rows(rows)
    for j in range(geo.above.shape[1]):
        if geo.above[d, j] >= 0 and not might_contain(table.above_words, s.keys[2 + j]):
            _blame(s, d, geo.above_blame[d, j])
            return False
    return True


@compiled
def draw_row(cum, start, end, u):
    """The row of [start, end) that the uniform u picks with P ∝ weight: the first whose prefix
    sum (within its context, so cum[end − 1] is the context's total) exceeds u · total."""
    target = u * cum[end - 1]
    lo, hi = start, end - 1
    while lo < hi:
        mid = (lo + hi) >> 1
        if cum[mid] > target:
            hi = mid
        else:
            lo = mid + 1
    return lo


@njit(cache=True, nogil=True)
def draw_rows(cum, starts, ends, u):
    """draw_row of many [start, end) ranges and uniforms: (M,) rows."""
    rows = np.empty(len(starts), np.int64)
    for i in range(len(starts)):
        rows[i] = draw_row(cum, starts[i], ends[i], u[i])
    return rows


@njit(cache=True, nogil=True)
def context_prefix_sums(weight, starts):
    """Inclusive prefix sums of weight that start again at each context (starts: (M + 1,)
    offsets): a context's sums stay as small, and as exact, as its own weights, where sums over
    the whole table would carry its total's rounding (~1e-8 at 57 M rows) into every draw."""
    cum = np.empty(len(weight), np.float64)
    for m in range(len(starts) - 1):
        total = 0.0
        for row in range(starts[m], starts[m + 1]):
            total += weight[row]
            cum[row] = total
    return cum


@inlined
def _list(s, table, geo, d, forward_checking):
    """Push d's candidates, but its first draw, on the stack, untried. With forward checking,
    only those that make the next position's context one the table knows, its key finished from
    the rounds of its other slots, one round per candidate: the others would fail their first
    check when drawn, each a draw and a check (at γ = 3 on the 100× scale corpus, 17 such draws
    a step); they are dropped, and blamed, here at once. The key filter alone answers, as for
    above parts in _verify: a false positive is listed and dropped by its check when drawn
    (+10–15 % grids/s at γ = 3 on the 100× corpus against the exact lookup). The listed weights
    then get their Fenwick tree (_draw_next)."""
    off, drawn, q = s.counters[0], s.drawn[d], geo.completes[d, 0]
    rows, weight, cum, tokens = s.stack_row, s.stack_weight, table.cum, table.tokens
    screen = forward_checking and geo.slot[d, 0] == len(geo.offsets) - 1  # d fills q's last slot
    lead = _rounds(s.grid, geo, q, len(geo.offsets) - 1, -1, 0) if screen else _GOLDEN
    n, dropped = 0, False
    for row in range(s.seg[d, 0], s.seg[d, 1]):
        if row == drawn:
            continue
        if screen:
            key = _finish(_mix(lead, tokens[row]), q, table.positional)
            if not might_contain(table.key_words, key):
                dropped = True
                continue
        rows[off + n] = row
        weight[off + n] = cum[row] - cum[row - 1] if row > s.seg[d, 0] else cum[row]
        n += 1
    if dropped:
        _blame(s, d, geo.blame[d, 0])
    fenwick_fill(s.stack_sums, weight, off, n)
    s.list_off[d], s.list_size[d], s.list_left[d] = off, n, n
    s.counters[0] = off + n


@inlined
def _draw_next(s, d, seed, sample):
    """d's next untried candidate, or −1. Untried candidates are drawn with P ∝ weight, so they
    come in the order of weighted sampling without replacement; each is checked when drawn, and
    one that fails is dropped (its blame kept) and the next drawn: the first that passes is
    distributed as q restricted to the candidates that pass, and the others need no check. A
    draw is a descent of the list's Fenwick tree and a drawn weight is taken out of it,
    O(log n) each: a pass over the list per draw made long lists quadratic (γ = 3 on the 100×
    scale corpus: ~1,000 weights summed a step, 1.9× slower). The k-th draw of a step uses
    uniform(seed, sample, step, k), k ≥ 1 (the step's first draw used k = 0)."""
    if s.list_left[d] == 0:
        return -1
    off, n, lane = s.list_off[d], s.list_size[d], s.lane
    rows, weight, sums = s.stack_row, s.stack_weight, s.stack_sums  # locals: no reference counts
    u = uniform(seed, sample, np.uint64(lane[STEPS]), np.uint64(lane[DRAW]))
    lane[DRAW] += 1
    place = fenwick_find(sums, off, n, u * fenwick_total(sums, off, n))
    if place >= n or weight[off + place] == TRIED:  # rounding: take the last untried
        place = n - 1
        while weight[off + place] == TRIED:
            place -= 1
    fenwick_add(sums, off, n, place, -weight[off + place])
    weight[off + place] = TRIED
    s.list_left[d] -= 1
    return rows[off + place]


@inlined
def _place(s, table, geo, d, row):
    """Put row's token at d; the contexts it completes get their rows from forward checking."""
    s.rows[d] = row
    s.grid[d // geo.width + geo.r, d % geo.width + geo.r] = table.tokens[row]
    for k in range(2):
        q = geo.completes[d, k]
        if q >= 0:
            s.seg[q, 0], s.seg[q, 1] = s.bounds[2 * k], s.bounds[2 * k + 1]


@compiled
def _highest(mask):
    """The highest position in a position set, −1 for the empty set."""
    for w in range(len(mask) - 1, -1, -1):
        word = mask[w]
        if word != 0:
            bit = 63
            while (word >> np.uint64(bit)) & _ONE == 0:
                bit -= 1
            return 64 * w + bit
    return -1


@inlined
def _back(s, geo, d, backjumping):
    """d ran out of candidates: back to the latest position its failures depend on (its own
    window, and what d's conflict set collected), or to d − 1 without backjumping. Forgets what
    it knew at the positions it leaves behind. Returns the target, −1 when none exists."""
    if backjumping:
        for w in range(len(s.mask)):
            s.mask[w] = s.conflict[d, w] | geo.window[d, w]
        target = _highest(s.mask)
    else:
        target = d - 1
    if target < 0:
        return -1
    if backjumping:  # the target inherits the reasons, but itself
        for w in range(len(s.mask)):
            s.conflict[target, w] |= s.mask[w] & ~geo.single[target, w]
    s.counters[1] += 1
    s.counters[2] += target < d - 1
    for p in range(target + 1, d + 1):
        s.conflict[p] = 0
        s.list_off[p], s.list_left[p], s.drawn[p] = -1, 0, -1
    s.counters[0] = s.top_at[target + 1]
    return target


@inlined
def _look_up(s, table, geo, d):
    """The rows of d's context, read from the grid (the first position, or no forward check)."""
    key = window_key(s.grid, geo, d, len(geo.offsets), -1, 0, table.positional)
    rows = find(table.key_slots, key)
    if rows >= 0:
        s.seg[d, 0], s.seg[d, 1] = _unpack_rows(rows)


# A search moves through phases, so that it can stop where it waits for memory and go on later:
START, CHECK, NEXT = 0, 1, 2  # begin a step; verify the candidate ROW; draw the step's next one
RUNNING = -1  # _advance stopped after a prefetch
PHASE, DEPTH, STEPS, DRAW, ROW, ENTERING, SAMPLE = range(7)  # a search's fields in s.lane
LANE_FIELDS = 7
# Searches one thread runs in turn. Each move that will read the table prefetches what it reads
# and yields to the next search, so that up to LANES cache misses overlap instead of stalling
# the thread one by one (γ = 7, one thread, 20,000 grids: 1× 102k → 149k grids/s, 100× the
# default corpus 65k → 82k; γ = 5 116k → 142k and 56k → 62k; γ = 3, whose steps spend more on
# listing than on waiting, 39k → 35k and 5.4k → 5.1k). Samples do not change with it.
LANES = 8


@inlined
def _prefetch_rows(table, start, end):
    """Prefetch the prefix sums and tokens of rows [start, end), eight lines of each at most."""
    for row in range(start, min(end, start + 64), 8):
        prefetch(table.cum, row)
        prefetch(table.tokens, row)


@inlined
def _enter(s, table, geo, d, seed, sample, forward_checking):
    """A step's first move at a position just entered: its first draw, a row of its histogram
    with P ∝ weight (inverse CDF over the prefix sums; most contexts hold one token: no draw),
    its keys prefetched. Returns the next phase: CHECK, or NEXT when the context is unknown."""
    s.top_at[d] = s.counters[0]
    if s.seg[d, 0] < 0:
        _look_up(s, table, geo, d)
    if s.seg[d, 0] < 0:
        return NEXT
    start, end = s.seg[d, 0], s.seg[d, 1]
    u = uniform(seed, sample, np.uint64(s.lane[STEPS]), np.uint64(0))
    row = start if end - start == 1 else draw_row(table.cum, start, end, u)
    s.drawn[d], s.lane[ROW] = row, row
    if forward_checking:
        _keys(s, table, geo, d, table.tokens[row])
    return CHECK


@inlined
def _advance(s, table, geo, sample, seed, budget, forward_checking, backjumping):
    """Run one sample's search until it has prefetched what its next move reads (RUNNING, with
    its place kept in s.lane) or ends (FINISHED, OUT_OF_BUDGET, EXHAUSTED). A step enters a
    position or tries its next candidate, and goes back when that finds none."""
    lane, positions = s.lane, len(geo.window)
    d, phase = lane[DEPTH], lane[PHASE]
    while True:
        if phase == START:
            if d >= positions:
                return FINISHED
            if lane[STEPS] >= budget:
                return OUT_OF_BUDGET
            lane[STEPS], lane[DRAW], phase = lane[STEPS] + 1, 1, NEXT
            if lane[ENTERING]:
                lane[ENTERING] = 0
                phase = _enter(s, table, geo, d, seed, sample, forward_checking)
                if phase == CHECK and forward_checking:
                    lane[PHASE] = CHECK
                    return RUNNING
        elif phase == CHECK:
            if _verify(s, table, geo, d, forward_checking):
                _place(s, table, geo, d, lane[ROW])
                d += 1
                lane[DEPTH], lane[ENTERING], lane[PHASE] = d, 1, START
                if d < positions and s.seg[d, 0] >= 0:
                    _prefetch_rows(table, s.seg[d, 0], s.seg[d, 1])
                return RUNNING if d < positions else FINISHED
            phase = NEXT
        else:  # NEXT
            row = -1
            if s.seg[d, 0] >= 0:
                if s.list_off[d] < 0:
                    _list(s, table, geo, d, forward_checking)
                row = _draw_next(s, d, seed, sample)
            if row >= 0:
                lane[ROW], phase = row, CHECK
                if forward_checking:
                    _keys(s, table, geo, d, table.tokens[row])
                    lane[PHASE] = CHECK
                    return RUNNING
            else:
                d = _back(s, geo, d, backjumping)
                if d < 0:
                    return EXHAUSTED
                lane[DEPTH], phase = d, START


@compiled
def _reset(s, pad):
    s.grid[:] = pad
    s.seg[:] = -1
    s.rows[:] = -1
    s.drawn[:] = -1
    s.list_off[:] = -1
    s.list_left[:] = 0
    s.conflict[:] = 0
    s.counters[:] = 0
    s.lane[:] = 0
    s.lane[ENTERING] = 1


def scratch(height, geo, stack, lanes=LANES):
    """The working arrays of `lanes` searches (numpy, made once per call), the lane first."""
    positions, words = geo.window.shape
    # Lanes' stacks 576 bytes apart modulo 4 KiB (a whole number of 4 KiB, plus 72 int64): a
    # stride of whole 4 KiB would put the lanes' stack tops in the same cache sets.
    stack = -(-stack // 512) * 512 + 72

    def each(*shape: int, dtype: type = np.int64) -> np.ndarray:
        return np.empty((lanes, *shape), dtype)

    return _Scratch(
        grid=each(height + geo.r, geo.width + 2 * geo.r),
        seg=each(positions, 2),
        rows=each(positions),
        drawn=each(positions),
        list_off=each(positions),
        list_size=each(positions),
        list_left=each(positions),
        top_at=each(positions),
        conflict=each(positions, words, dtype=np.uint64),
        stack_row=each(stack),
        stack_weight=each(stack, dtype=np.float64),
        stack_sums=each(stack, dtype=np.float64),
        bounds=each(4),
        mask=each(words, dtype=np.uint64),
        counters=each(3),
        keys=each(2 + geo.above.shape[1]),
        lane=each(LANE_FIELDS),
    )


@compiled
def _lane(s, g):
    """Lane g's working arrays: views, no copies."""
    return _Scratch(
        s.grid[g], s.seg[g], s.rows[g], s.drawn[g], s.list_off[g], s.list_size[g],
        s.list_left[g], s.top_at[g], s.conflict[g], s.stack_row[g], s.stack_weight[g],
        s.stack_sums[g], s.bounds[g], s.mask[g], s.counters[g], s.keys[g], s.lane[g],
    )  # fmt: skip


@compiled
def _write(s, geo, out, i, status):
    """A search's outcome into row i of `out`."""
    d = s.lane[DEPTH] if status != EXHAUSTED else 0
    out.status[i], out.placed[i], out.steps[i] = status, d, s.lane[STEPS]
    out.backtracks[i], out.jumps[i] = s.counters[1], s.counters[2]
    for p in range(d):  # the rest stays as made: token 0, row −1
        out.tokens[i, p] = s.grid[p // geo.width + geo.r, p % geo.width + geo.r]
        out.rows[i, p] = s.rows[p]


@compiled
def _start(s, geo, i):
    """Lane s takes sample i (−1: none left)."""
    if i >= 0:
        _reset(s, geo.pad)
    s.lane[SAMPLE] = i


@compiled
def search(sample_ids, seed, budget, forward_checking, backjumping, table, geo, lanes, out):
    """Search sample_ids[i] into row i of `out`, in the working arrays `lanes` (scratch): each
    lane searches one sample until it waits for memory, then the next lane goes on."""
    n, taken, live = len(sample_ids), 0, 0
    for g in range(len(lanes.lane)):
        _start(_lane(lanes, g), geo, taken if taken < n else -1)
        live, taken = live + (taken < n), min(taken + 1, n)
    while live > 0:
        for g in range(len(lanes.lane)):
            s = _lane(lanes, g)
            i = s.lane[SAMPLE]
            if i < 0:
                continue
            status = _advance(
                s, table, geo, np.uint64(sample_ids[i]), seed, budget, forward_checking, backjumping
            )
            if status != RUNNING:
                _write(s, geo, out, i, status)
                _start(s, geo, taken if taken < n else -1)
                live, taken = live - (taken >= n), min(taken + 1, n)
