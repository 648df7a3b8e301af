"""Exact generation: depth-first search with forward checking and backjumping over an n-gram index
(DESIGN.md §5).

Positions are filled in raster order. At each position the candidates are the tokens of its
context's histogram, tried in an order drawn by weighted sampling without replacement (weight
count^(1/T), Efraimidis–Spirakis keys). Every γ-window of a finished sample is a window of a
training image, and each position names one such image.

Two things keep the search from wandering in branches that cannot finish (ngram/constraints.py):
- forward checking: placing a token at p completes the context of the next position (and, at a
  row's r-th column, of the next row's first): a candidate that would make such a context one the
  table never saw is dropped before any is tried, all candidates checked at once;
- conflict-directed backjumping: each position collects the positions its failures depend on
  (its own window, the windows of the contexts that rejected its candidates, and what failed
  deeper below it); when it runs out of candidates the search jumps to the latest of them,
  skipping positions whose other tokens could not have helped.

Neither changes the distribution of finished samples. The candidates' order at a position is a
weighted random permutation; dropping the candidates that cannot lead to a sample leaves the
others in a weighted random permutation of their own, so the first one that leads to a sample is
drawn exactly as before, and a jump only skips subtrees that hold no sample. With an unlimited
budget the search returns the first sample of the same random tree, and only its budget makes it
give up: with pruning it gives up far less often, so the finished samples are less biased toward
the easy ones. The random numbers do change (they are counted by search step), so a seed draws
other samples than the plain search did.

The search runs on many samples in lockstep: each iteration moves every active sample by one
step (enter a position, or advance to its next candidate or jump back), with numpy over the whole
batch. Randomness is counter-based (a hash of seed, sample number and step), so a sample depends
only on its own history: the same seed gives the same samples whatever the batch size.
"""

from __future__ import annotations

import threading
from dataclasses import dataclass

import numpy as np

from service.ngram.constraints import grid_constraints, highest_position
from service.ngram.index import NgramIndex
from service.ngram.samples import (
    FAILED_BUDGET,
    FAILED_EXHAUSTED,
    UNFILLED,
    SampleBatch,
    SampleConfig,
    uniform,
)
from service.ngram.windows import (
    above_size,
    candidate_keys,
    context_keys,
    context_offsets,
    gather_contexts,
    pad_grids,
)

# Draws of a first candidate before listing them all: at γ = 3 on the default run, 71 % of first
# draws fail the forward check, and listing costs a lookup per candidate (57 on average there).
FIRST_DRAWS = 1
_DRAW_STRIDE = 1 << 40  # separates the counters of the redraws from the listing's (1, 2, …)


class Weights:
    """Per-row weights count^(1/T) scaled to ≤ 1 within each context, and their prefix sums."""

    def __init__(self, index: NgramIndex, temperature: float) -> None:
        counts = index.counts.astype(np.float64)
        seg_max = np.maximum.reduceat(counts, index.starts[:-1]) if len(counts) else counts
        lengths = np.diff(index.starts)
        self.w = (counts / np.repeat(seg_max, lengths)) ** (1.0 / temperature)
        self.cum = np.cumsum(self.w)  # inclusive prefix sums

    def draw(self, start: np.ndarray, end: np.ndarray, u: np.ndarray) -> np.ndarray:
        """One row in each [start, end) with P(row) ∝ weight, by inverse CDF of uniforms u."""
        base = self.cum[start] - self.w[start]
        target = base + u * (self.cum[end - 1] - base)
        return np.clip(np.searchsorted(self.cum, target, side="right"), start, end - 1)


class _Pool:
    """Growable named columns, appended to as the search goes."""

    def __init__(self, **dtypes: type) -> None:
        self.columns: dict[str, np.ndarray] = {n: np.zeros(1024, t) for n, t in dtypes.items()}
        self.size = 0

    def append(self, **values: np.ndarray) -> int:
        """Equal-length arrays, one per column → the offset of the first appended entry."""
        n = len(next(iter(values.values())))
        capacity = len(next(iter(self.columns.values())))
        if self.size + n > capacity:
            for name, column in self.columns.items():
                grown = np.zeros(max(2 * capacity, self.size + n), column.dtype)
                grown[: self.size] = column[: self.size]
                self.columns[name] = grown
        for name, value in values.items():
            self.columns[name][self.size : self.size + n] = value
        self.size += n
        return self.size - n

    def __getitem__(self, name: str) -> np.ndarray:
        return self.columns[name]


@dataclass
class _Search:
    """The state of b depth-first searches: one row per sample, one column per position.

    A position's candidates that passed forward checking ("its case": the histogram rows whose
    tokens keep every context they complete in the table) are listed once per distinct case in
    the case pool, with the histogram rows of the contexts they complete and their weights;
    searches standing at the same case share the list.
    """

    sample_ids: np.ndarray  # (b,) sample numbers: the counters of their random draws
    grid: np.ndarray  # (b, H + r, W + 2r) padded token grids, filled up to `depth`
    depth: np.ndarray  # (b,) the position each search is at
    entering: np.ndarray  # (b,) bool: next step enters `depth`; else advances there
    active: np.ndarray  # (b,) bool
    failure: np.ndarray  # (b,) object: "" or why the search stopped
    backtracks: np.ndarray  # (b,) times the search went back, by one position or more
    jumps: np.ndarray  # (b,) those of the backtracks that skipped positions
    steps: np.ndarray  # (b,)
    rows: np.ndarray  # (b, P) index row placed at each position
    drawn: np.ndarray  # (b, P) the row the first draw at the position gave (placed or dropped)
    seg_start: np.ndarray  # (b, P) histogram rows [start, end) of each position's context,
    seg_end: np.ndarray  # (b, P) −1 while the context is not known to be in the table
    case_off: np.ndarray  # (b, P) the position's checked candidates in the case pool: [off,
    case_len: np.ndarray  # (b, P) off + len); −1: not listed yet
    order_off: np.ndarray  # (b, P) the order of the rest in the order pool; −1: not drawn yet
    order_len: np.ndarray  # (b, P)
    cursor: np.ndarray  # (b, P) candidates used up from that order
    conflict: np.ndarray  # (b, P, words) uint64: positions the failures at p depend on
    cases: _Pool  # row, s0, e0, s1, e1 (the contexts it completes), w, cum (prefix sums of w)
    orders: _Pool  # entry: an index into the case pool

    @classmethod
    def start(cls, sample_ids: np.ndarray, index: NgramIndex, words: int) -> _Search:
        b, h, w = len(sample_ids), index.info.grid_height, index.info.grid_width

        def full(value: int) -> np.ndarray:
            return np.full((b, h * w), value, np.int64)

        int64 = np.int64
        return cls(
            sample_ids=sample_ids,
            grid=pad_grids(np.zeros((b, h, w), np.int64), index.gamma, index.pad),
            depth=np.zeros(b, np.int64),
            entering=np.ones(b, bool),
            active=np.ones(b, bool),
            failure=np.full(b, "", dtype=object),
            backtracks=np.zeros(b, np.int64),
            jumps=np.zeros(b, np.int64),
            steps=np.zeros(b, np.int64),
            rows=full(-1),
            drawn=full(-1),
            seg_start=full(-1),
            seg_end=full(-1),
            case_off=full(-1),
            case_len=full(-1),
            order_off=full(-1),
            order_len=full(0),
            cursor=full(0),
            conflict=np.zeros((b, h * w, words), np.uint64),
            cases=_Pool(row=int64, s0=int64, e0=int64, s1=int64, e1=int64, w=float, cum=float),
            orders=_Pool(entry=int64),
        )


def distinct_rows(rows: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """For (B, k) int64 rows: the first row of each distinct value, and each row's distinct
    index. Rows are told apart by a 64-bit hash, checked exactly afterwards (np.unique over rows
    sorts them lexicographically, many times slower; it serves only if two rows ever collide)."""
    _, first, inverse = np.unique(context_keys(rows), return_index=True, return_inverse=True)
    inverse = inverse.reshape(-1)
    if not np.array_equal(rows[first][inverse], rows):
        _, first, inverse = np.unique(rows, axis=0, return_index=True, return_inverse=True)
        inverse = inverse.reshape(-1)
    return first, inverse


class ExactSampler:
    """Batched depth-first exact sampling over one index.

    forward_checking and backjumping can be turned off: benchmarks/search_figures.py measures
    the plain search against them.
    """

    def __init__(
        self, index: NgramIndex, *, forward_checking: bool = True, backjumping: bool = True
    ) -> None:
        self.index = index
        self.forward_checking = forward_checking
        self.backjumping = backjumping
        info = index.info
        self.constraints = grid_constraints(index.gamma, info.grid_height, info.grid_width)
        self._targets_list = self._targets()
        self._context_size = len(context_offsets(index.gamma))
        self._above = above_size(index.gamma)
        self._weights: dict[float, Weights] = {}
        self._lock = threading.Lock()  # the service samples from several threads at once

    def weights(self, temperature: float) -> Weights:
        """Per-temperature weights, the last few kept (each is two floats per table row)."""
        with self._lock:
            if temperature not in self._weights:
                if len(self._weights) >= 4:
                    self._weights.pop(next(iter(self._weights)))
                self._weights[temperature] = Weights(self.index, temperature)
            return self._weights[temperature]

    def sample(self, config: SampleConfig) -> SampleBatch:
        starts = range(0, max(config.n, 1), config.batch_size)
        return SampleBatch.concatenate(
            [
                self._search(np.arange(s, min(s + config.batch_size, config.n)), config)
                for s in starts
            ]
        )

    def _search(self, sample_ids: np.ndarray, config: SampleConfig) -> SampleBatch:
        state = _Search.start(sample_ids, self.index, self.constraints.words)
        while state.active.any():
            act = np.flatnonzero(state.active)
            spent = state.steps[act] >= config.budget
            state.active[act[spent]], state.failure[act[spent]] = False, FAILED_BUDGET
            act = act[~spent]
            state.steps[act] += 1
            enter, advance = act[state.entering[act]], act[~state.entering[act]]
            if len(enter):
                self._enter(state, enter, config)
            if len(advance):
                self._advance(state, advance, config)
        return self._result(state)

    def _enter(self, state: _Search, enter: np.ndarray, config: SampleConfig) -> None:
        """Enter each search's position: look its context up where no earlier step did, draw a
        first candidate by inverse CDF (most contexts have a single token: no draw, no list) and
        place it if the forward check passes. A draw that fails is drawn again, up to
        FIRST_DRAWS times: the first draw that passes is distributed as the first candidate of
        the order that passes would be (q restricted to the candidates that pass). After that
        the position's checked candidates are listed, and one is drawn from them."""
        d = state.depth[enter]  # its per-position state is fresh (_dead_end clears what it leaves)
        state.entering[enter] = False
        unknown = state.seg_start[enter, d] < 0
        if unknown.any():
            self._look_up(state, enter[unknown], d[unknown])
        known = state.seg_start[enter, d] >= 0
        s, d = enter[known], d[known]  # the others are at a dead end: resolved at their next step
        weights = self.weights(config.temperature)
        for attempt in range(FIRST_DRAWS):  # rejection sampling: a draw that passes ~ q on V
            start, end = state.seg_start[s, d], state.seg_end[s, d]
            row = start.copy()
            many = np.flatnonzero(end - start > 1)
            if len(many):
                u = uniform(config.seed, state.sample_ids[s[many]], state.steps[s[many]],
                            attempt * _DRAW_STRIDE)  # fmt: skip
                row[many] = weights.draw(start[many], end[many], u)
            bounds, rejected = self._check(state, s, d, row, listing=False)
            valid = ~rejected.any(axis=0)
            state.drawn[s[valid], d[valid]] = row[valid]
            self._place(state, s[valid], row[valid], bounds[:, valid])
            self._blame(state, s[~valid], d[~valid], rejected[:, ~valid])
            s, d = s[~valid], d[~valid]
            if not len(s):
                return
        self._list_cases(state, s, d, config)  # the rest: draw from their checked candidates
        some = state.case_len[s, d] > 0
        self._dead_end(state, s[~some], d[~some])
        s, d = s[some], d[some]
        u = uniform(config.seed, state.sample_ids[s], state.steps[s], FIRST_DRAWS * _DRAW_STRIDE)
        entry = self._draw_case(state, s, d, u)
        state.drawn[s, d] = state.cases["row"][entry]
        self._place_entry(state, s, entry)

    def _look_up(self, state: _Search, s: np.ndarray, d: np.ndarray) -> None:
        """The histogram rows of the contexts of searches `s` at their positions `d`."""
        index, w = self.index, self.index.info.grid_width
        ctx = gather_contexts(state.grid, s, d // w, d % w, index.gamma)
        found = index.lookup_keys(context_keys(ctx, d if index.info.positional else None))
        state.seg_start[s, d] = np.where(found.found, found.start, -1)
        state.seg_end[s, d] = np.where(found.found, found.end, -1)

    def _targets(self) -> list[tuple[np.ndarray, np.ndarray, np.ndarray]]:
        """What placing at p completes, for forward checking: each column of the constraint
        arrays (position q, p's slot in q's window, the blame), whole contexts first (2), then
        above parts; the checks are numbered in this order."""
        c = self.constraints
        full = [(c.completes[:, k], c.slot[:, k], c.blame[:, k]) for k in range(2)]
        above = [(c.above[:, k], c.above_slot[:, k], c.above_blame[:, k])
                 for k in range(c.above.shape[1])]  # fmt: skip
        return full + above

    def _completed(
        self, state: _Search, s: np.ndarray, d: np.ndarray, target: np.ndarray, slot: np.ndarray
    ) -> np.ndarray:
        """(len(s), K) the window of q = target[d] (the context placing at d completes or whose
        above part it completes) with d's slot −1; zeros where there is no such q."""
        w = self.index.info.grid_width
        q = target[d]
        has = np.flatnonzero(q >= 0)
        if len(has) == len(s):  # every search has one: no copy into a zero array
            ctx = gather_contexts(state.grid, s, q // w, q % w, self.index.gamma)
        else:
            ctx = np.zeros((len(s), self._context_size), np.int64)
            if len(has):
                ctx[has] = gather_contexts(
                    state.grid, s[has], q[has] // w, q[has] % w, self.index.gamma
                )
        ctx[has, slot[d[has]]] = -1
        return ctx

    def _check(
        self,
        state: _Search,
        s: np.ndarray,
        d: np.ndarray,
        row: np.ndarray,
        owner: np.ndarray | None = None,
        contexts: list[np.ndarray] | None = None,
        listing: bool = True,
    ) -> tuple[np.ndarray, np.ndarray]:
        """Forward checking of candidate rows (N,) of searches s[owner] at d[owner] (owner: the
        identity when None). Returns (4, N) the histogram rows [start₀, end₀, start₁, end₁] of
        the whole contexts each candidate completes (−1: none, or not checked), and
        (checks, N) bool: which checks rejected it (_targets' order). `contexts` are the
        completed windows per check and search (_completed).

        `listing` (all of a position's candidates, most of them failing where lists are long)
        adds the above-part checks and tests the keys against the table's Bloom filter before
        looking them up; a first draw, which mostly passes, checks whole contexts alone.
        Measured on the default run: with above parts on first draws too, γ = 7 slowed by a
        fifth and γ = 3 gained nothing."""
        index = self.index
        owner = np.arange(len(s)) if owner is None else owner
        targets = self._targets_list
        bounds = np.full((4, len(row)), -1, np.int64)
        rejected = np.zeros((len(targets), len(row)), bool)
        alive = np.ones(len(row), bool)
        if not self.forward_checking:
            return bounds, rejected
        for k, (target, slot, _) in enumerate(targets):
            q = target[d]
            # a candidate one check dropped is not checked again: its blame is that check's
            has = np.flatnonzero((q[owner] >= 0) & alive)
            if not len(has) or (k >= 2 and not listing):
                continue
            ctx = (
                contexts[k] if contexts is not None else self._completed(state, s, d, target, slot)
            )
            positions = q[owner[has]] if index.info.positional else None
            tokens = index.tokens[row[has]]
            if k >= 2:  # an above part: does any context of the table start with it?
                keys = candidate_keys(ctx[:, : self._above], slot[d], owner[has], tokens, positions)
                found = index.has_above(keys)
            elif contexts is None:  # one candidate per search: fill its slot and hash it whole
                ctx[has, slot[d[has]]] = tokens
                keys = context_keys(ctx if len(has) == len(ctx) else ctx[has], positions)
                found = self._look_up_checked(keys, has, bounds, k, prefilter=False)
            else:
                keys = candidate_keys(ctx, np.maximum(slot[d], 0), owner[has], tokens, positions)
                found = self._look_up_checked(keys, has, bounds, k, prefilter=listing)
            rejected[k, has] = ~found
            alive[has] &= found
        return bounds, rejected

    def _look_up_checked(
        self, keys: np.ndarray, has: np.ndarray, bounds: np.ndarray, k: int, prefilter: bool
    ) -> np.ndarray:
        """Whether each key is a context of the table, writing the histogram rows of those that
        are into bounds[2k : 2k + 2, has]; `prefilter` first asks the Bloom filter, which ends
        most misses without a binary search."""
        if not prefilter:
            look = self.index.lookup_keys(keys)
            bounds[2 * k, has[look.found]] = look.start[look.found]
            bounds[2 * k + 1, has[look.found]] = look.end[look.found]
            return look.found
        maybe = np.flatnonzero(self.index.key_filter.might_contain(keys))
        look = self.index.lookup_keys(keys[maybe])
        found = np.zeros(len(keys), bool)
        found[maybe] = look.found
        hit = has[maybe[look.found]]
        bounds[2 * k, hit] = look.start[look.found]
        bounds[2 * k + 1, hit] = look.end[look.found]
        return found

    def _blame(self, state: _Search, s: np.ndarray, d: np.ndarray, rejected: np.ndarray) -> None:
        """Candidates dropped by forward checking at d: the positions of what dropped them (but
        d) join d's conflict set. rejected: (checks, len(s)) bool."""
        for k, (_, _, blame) in enumerate(self._targets()):
            hit = rejected[k]
            state.conflict[s[hit], d[hit]] |= blame[d[hit]]

    def _list_cases(
        self, state: _Search, s: np.ndarray, d: np.ndarray, config: SampleConfig
    ) -> None:
        """List the checked candidates of searches `s` at `d` in the case pool, each distinct
        case (histogram and completed windows, but for d itself) checked once: where many
        searches stand at the same case (the first positions) that is most of the work saved."""
        contexts = [self._completed(state, s, d, t, slot) for t, slot, _ in self._targets()]
        key = np.concatenate(
            [state.seg_start[s, d, None], state.seg_end[s, d, None], *contexts], axis=1
        )
        rep, case_of = distinct_rows(key)
        rs, rd = s[rep], d[rep]
        start, end = state.seg_start[rs, rd], state.seg_end[rs, rd]
        length = end - start
        owner = np.repeat(np.arange(len(rep)), length)
        row = (
            np.repeat(start, length)
            + np.arange(owner.size)
            - np.repeat(np.cumsum(length) - length, length)
        )
        bounds, rejected = self._check(state, rs, rd, row, owner, [c[rep] for c in contexts])
        valid = ~rejected.any(axis=0)
        w = self.weights(config.temperature).w[row[valid]]
        previous = state.cases["cum"][state.cases.size - 1] if state.cases.size else 0.0
        offset = state.cases.append(
            row=row[valid], s0=bounds[0, valid], e0=bounds[1, valid], s1=bounds[2, valid],
            e1=bounds[3, valid], w=w, cum=previous + np.cumsum(w),
        )  # fmt: skip
        kept = np.bincount(owner[valid], minlength=len(rep))
        state.case_off[s, d] = (offset + np.cumsum(kept) - kept)[case_of]
        state.case_len[s, d] = kept[case_of]
        per_case = np.stack([np.bincount(owner[r], minlength=len(rep)) > 0 for r in rejected])
        self._blame(state, s, d, per_case[:, case_of])

    def _draw_case(self, state: _Search, s: np.ndarray, d: np.ndarray, u: np.ndarray) -> np.ndarray:
        """One entry of each search's listed candidates, P(entry) ∝ weight (inverse CDF)."""
        off, n = state.case_off[s, d], state.case_len[s, d]
        cum, w = state.cases["cum"][: state.cases.size], state.cases["w"]
        lo, hi = off, off + n - 1
        base = cum[lo] - w[lo]
        target = base + u * (cum[hi] - base)
        return np.clip(np.searchsorted(cum, target, side="right"), lo, hi)

    def _place(self, state: _Search, s: np.ndarray, row: np.ndarray, bounds: np.ndarray) -> None:
        """Searches `s` put the token of index row `row` at their positions and move on; the
        contexts a placement completes get their histogram rows from the forward check."""
        c = self.constraints
        r, w = (self.index.gamma - 1) // 2, self.index.info.grid_width
        d = state.depth[s]
        state.rows[s, d] = row
        state.grid[s, d // w + r, d % w + r] = self.index.tokens[row]
        for k in (0, 1):
            q = c.completes[d, k]
            has = np.flatnonzero(q >= 0)
            if len(has):
                state.seg_start[s[has], q[has]] = bounds[2 * k, has]
                state.seg_end[s[has], q[has]] = bounds[2 * k + 1, has]
        state.depth[s] = d + 1
        state.entering[s] = True
        done = state.depth[s] == c.positions
        state.active[s[done]] = False

    def _place_entry(self, state: _Search, s: np.ndarray, entry: np.ndarray) -> None:
        cases = state.cases
        bounds = np.stack([cases[name][entry] for name in ("s0", "e0", "s1", "e1")])
        self._place(state, s, cases["row"][entry], bounds)

    def _advance(self, state: _Search, advance: np.ndarray, config: SampleConfig) -> None:
        """Try each search's next candidate at its position, or go back from a dead end."""
        d = state.depth[advance]
        known = state.seg_start[advance, d] >= 0
        unlisted = known & (state.case_len[advance, d] < 0)
        if unlisted.any():
            self._list_cases(state, advance[unlisted], d[unlisted], config)
        fresh = known & (state.order_off[advance, d] < 0)
        if fresh.any():
            self._materialize(state, advance[fresh], config)
        state.cursor[advance, d] += 1
        more = state.cursor[advance, d] <= state.order_len[advance, d]
        nxt, nd = advance[more], d[more]
        entry = state.orders["entry"][state.order_off[nxt, nd] + state.cursor[nxt, nd] - 1]
        self._place_entry(state, nxt, entry)
        self._dead_end(state, advance[~more], d[~more])

    def _dead_end(self, state: _Search, s: np.ndarray, d: np.ndarray) -> None:
        """Searches `s` ran out of candidates at `d`: back to the latest position their failures
        depend on (conflict-directed backjumping), or one position back without it."""
        c = self.constraints
        if self.backjumping:
            conflict = state.conflict[s, d] | c.window[d]  # its own context made the candidates
            target = highest_position(conflict)
        else:
            target = d - 1
        none = target < 0  # nothing earlier can change: no sample exists
        state.active[s[none]], state.failure[s[none]] = False, FAILED_EXHAUSTED
        keep = ~none
        s, d, target = s[keep], d[keep], target[keep]
        if self.backjumping:
            state.conflict[s, target] |= conflict[keep] & ~c.single[target]
        state.depth[s] = target
        state.backtracks[s] += 1
        state.jumps[s] += target < d - 1
        state.entering[s] = False
        self._clear(state, s, target + 1, d)

    def _clear(self, state: _Search, s: np.ndarray, first: np.ndarray, last: np.ndarray) -> None:
        """Forget what searches `s` knew at positions first … last (left behind by going back),
        so that each is entered afresh; seg_start and seg_end stay: placing the position before
        rewrites them."""
        positions = np.arange(self.constraints.positions)
        left = (positions >= first[:, None]) & (positions <= last[:, None])  # (len(s), P)
        rows, cols = np.nonzero(left)
        rows = s[rows]
        state.conflict[rows, cols] = 0
        state.case_off[rows, cols], state.case_len[rows, cols] = -1, -1
        state.order_off[rows, cols], state.order_len[rows, cols] = -1, 0
        state.cursor[rows, cols] = 0

    def _materialize(self, state: _Search, s: np.ndarray, config: SampleConfig) -> None:
        """The rest of the listed candidates of searches `s` at their positions, in the order of
        weighted sampling without replacement given the first draw (Efraimidis–Spirakis keys
        u^(1/w), compared as log(u)/w), into the order pool.

        At most `budget` candidates are kept, since a sample cannot try more than that many at
        one position.
        """
        d = state.depth[s]
        off, n = state.case_off[s, d], state.case_len[s, d]
        owner = np.repeat(np.arange(len(s)), n)
        local = np.arange(owner.size) - np.repeat(np.cumsum(n) - n, n)
        entry = np.repeat(off, n) + local
        u = uniform(
            config.seed, np.repeat(state.sample_ids[s], n), np.repeat(state.steps[s], n), local + 1
        )
        score = np.log(u) / state.cases["w"][entry]  # larger goes first
        score[state.cases["row"][entry] == np.repeat(state.drawn[s, d], n)] = -np.inf  # drawn
        order = np.lexsort((-score, owner))
        entry, owner, score = entry[order], owner[order], score[order]
        rank = np.arange(owner.size) - np.repeat(np.cumsum(n) - n, n)
        keep = (rank < config.budget) & np.isfinite(score)
        kept = np.bincount(owner[keep], minlength=len(s))
        state.order_off[s, d] = state.orders.append(entry=entry[keep]) + np.cumsum(kept) - kept
        state.order_len[s, d] = kept

    def _result(self, state: _Search) -> SampleBatch:
        index, b = self.index, len(state.sample_ids)
        h, w, r = index.info.grid_height, index.info.grid_width, (index.gamma - 1) // 2
        placed = state.depth.copy()
        filled = np.arange(h * w)[None, :] < placed[:, None]
        examples = np.where(filled, index.examples[np.maximum(state.rows, 0)], -1)
        return SampleBatch(
            tokens=state.grid[:, r:, r : r + w].copy(),
            ok=state.failure == "",
            failure=state.failure.astype(str),
            backtracks=state.backtracks,
            jumps=state.jumps,
            steps=state.steps,
            examples=examples.reshape(b, h, w),
            answered_by=np.where(filled, index.gamma, UNFILLED).reshape(b, h, w),
            placed=placed,
        )
