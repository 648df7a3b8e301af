"""Exact generation: depth-first search with backtracking over an n-gram index (DESIGN.md §5).

Positions are filled in raster order. At each position the candidates are the tokens of its
context's histogram, tried in an order drawn by weighted sampling without replacement (weight
count^(1/T)); a context the table never saw is a dead end and the search goes back one position
to try its next candidate. Every γ-window of a finished sample is a window of a training image,
and each position names one such image.

The search runs on many samples in lockstep: every iteration moves each active sample by one
step (enter a position, or advance/backtrack at one), with numpy over the whole batch. Two
choices keep it fast where most branches die:
- the first candidate at a position is drawn by inverse CDF over per-table cumulative weights, so
  the full candidate order is only materialized for positions the search comes back to;
- randomness is counter-based (a hash of seed, sample number and step), so a sample depends only
  on its own history: the same seed gives the same samples whatever the batch size.
"""

from __future__ import annotations

import threading
from dataclasses import dataclass

import numpy as np

from service.ngram.index import NgramIndex
from service.ngram.samples import (
    FAILED_BUDGET,
    FAILED_EXHAUSTED,
    UNFILLED,
    SampleBatch,
    SampleConfig,
    uniform,
)
from service.ngram.windows import context_keys, gather_contexts, pad_grids


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
    """A growable int64 buffer holding materialized candidate orders."""

    def __init__(self) -> None:
        self.rows = np.zeros(1024, np.int64)
        self.size = 0

    def append(self, values: np.ndarray) -> int:
        if self.size + len(values) > len(self.rows):
            grown = np.zeros(max(2 * len(self.rows), self.size + len(values)), np.int64)
            grown[: self.size] = self.rows[: self.size]
            self.rows = grown
        self.rows[self.size : self.size + len(values)] = values
        self.size += len(values)
        return self.size - len(values)


@dataclass
class _Search:
    """The state of b depth-first searches: one row per sample, one column per position."""

    sample_ids: np.ndarray  # (b,) sample numbers: the counters of their random draws
    grid: np.ndarray  # (b, H + r, W + 2r) padded token grids, filled up to `depth`
    depth: np.ndarray  # (b,) the position each search is at (−1: backtracked past the start)
    entering: np.ndarray  # (b,) bool: next step enters `depth`; else advances there
    active: np.ndarray  # (b,) bool
    failure: np.ndarray  # (b,) object: "" or why the search stopped
    backtracks: np.ndarray  # (b,)
    steps: np.ndarray  # (b,)
    rows: np.ndarray  # (b, P) index row chosen per position, −1 before any
    seg_start: np.ndarray  # (b, P) the rows [start, end) of the position's histogram
    seg_end: np.ndarray  # (b, P)
    order_off: np.ndarray  # (b, P) where the candidate order starts in the pool; −1: not yet
    order_len: np.ndarray  # (b, P) candidates in that order
    cursor: np.ndarray  # (b, P) candidates tried from that order
    pool: _Pool

    @classmethod
    def start(cls, sample_ids: np.ndarray, index: NgramIndex) -> _Search:
        b, h, w = len(sample_ids), index.info.grid_height, index.info.grid_width
        zeros = np.zeros((b, h * w), np.int64)
        return cls(
            sample_ids=sample_ids,
            grid=pad_grids(np.zeros((b, h, w), np.int64), index.gamma, index.pad),
            depth=np.zeros(b, np.int64),
            entering=np.ones(b, bool),
            active=np.ones(b, bool),
            failure=np.full(b, "", dtype=object),
            backtracks=np.zeros(b, np.int64),
            steps=np.zeros(b, np.int64),
            rows=np.full((b, h * w), -1, np.int64),
            seg_start=zeros.copy(),
            seg_end=zeros.copy(),
            order_off=np.full((b, h * w), -1, np.int64),
            order_len=zeros.copy(),
            cursor=zeros,
            pool=_Pool(),
        )

    def back(self, s: np.ndarray) -> None:
        """Searches `s` go back one position, to try its next candidate."""
        self.depth[s] -= 1
        self.backtracks[s] += 1


class ExactSampler:
    """Batched depth-first exact sampling over one index."""

    def __init__(self, index: NgramIndex) -> None:
        self.index = index
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
        state = _Search.start(sample_ids, self.index)
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

    def _place(self, state: _Search, s: np.ndarray, row: np.ndarray) -> None:
        """Searches `s` put the token of index row `row` at their position and move on."""
        r, w = (self.index.gamma - 1) // 2, self.index.info.grid_width
        d = state.depth[s]
        state.rows[s, d] = row
        state.grid[s, d // w + r, d % w + r] = self.index.tokens[row]
        state.depth[s] = d + 1
        state.entering[s] = True
        done = state.depth[s] == state.rows.shape[1]
        state.active[s[done]] = False

    def _enter(self, state: _Search, enter: np.ndarray, config: SampleConfig) -> None:
        """Look the context of each search's position up; go back from unknown contexts, else
        place a first candidate drawn by inverse CDF (no order materialized; most contexts have
        a single next token, which needs no draw at all)."""
        index, w = self.index, self.index.info.grid_width
        d = state.depth[enter]
        ctx = gather_contexts(state.grid, enter, d // w, d % w, index.gamma)
        found = index.lookup_keys(context_keys(ctx, d if index.info.positional else None))
        dead = enter[~found.found]
        state.entering[dead] = False  # the previous position advances to its next candidate
        state.back(dead)
        go = enter[found.found]
        start, end = found.start[found.found], found.end[found.found]
        gd = state.depth[go]
        state.seg_start[go, gd], state.seg_end[go, gd] = start, end
        state.order_off[go, gd], state.cursor[go, gd] = -1, 0
        row = start.copy()
        many = np.flatnonzero(end - start > 1)
        if len(many):
            u = uniform(config.seed, state.sample_ids[go[many]], state.steps[go[many]])
            row[many] = self.weights(config.temperature).draw(start[many], end[many], u)
        self._place(state, go, row)

    def _advance(self, state: _Search, advance: np.ndarray, config: SampleConfig) -> None:
        """Try each search's next candidate at its position, or go back when none is left."""
        below = advance[state.depth[advance] < 0]  # backtracked past the first position
        state.active[below], state.failure[below] = False, FAILED_EXHAUSTED
        adv = advance[state.depth[advance] >= 0]
        d = state.depth[adv]
        fresh = adv[state.order_off[adv, d] < 0]
        if len(fresh):
            self._materialize(state, fresh, config)
        state.cursor[adv, d] += 1
        more = state.cursor[adv, d] <= state.order_len[adv, d]
        nxt = adv[more]
        nd = state.depth[nxt]
        self._place(
            state, nxt, state.pool.rows[state.order_off[nxt, nd] + state.cursor[nxt, nd] - 1]
        )
        state.back(adv[~more])

    def _materialize(self, state: _Search, s: np.ndarray, config: SampleConfig) -> None:
        """Order the remaining candidates of searches `s` at their positions by
        Efraimidis–Spirakis keys u^(1/w).

        The first candidate (drawn by inverse CDF) is left out: the rest follow in the order of
        weighted sampling without replacement given it. At most `budget` candidates are kept,
        since a sample cannot try more than that many at one position.
        """
        d = state.depth[s]
        start, end = state.seg_start[s, d], state.seg_end[s, d]
        length = end - start
        group = np.repeat(np.arange(len(s)), length)
        offset_in_group = np.arange(group.size) - np.repeat(np.cumsum(length) - length, length)
        row = np.repeat(start, length) + offset_in_group
        u = uniform(
            config.seed,
            np.repeat(state.sample_ids[s], length),
            np.repeat(state.steps[s], length),
            offset_in_group + 1,
        )
        score = np.log(u) / self.weights(config.temperature).w[row]  # larger goes first
        score[row == np.repeat(state.rows[s, d], length)] = -np.inf  # the first pick, tried
        order = np.lexsort((-score, group))
        row, group, score = row[order], group[order], score[order]
        rank = np.arange(group.size) - np.repeat(np.cumsum(length) - length, length)
        keep = (rank < config.budget) & np.isfinite(score)
        kept_per_group = np.bincount(group[keep], minlength=len(s))
        state.order_off[s, d] = (
            state.pool.append(row[keep]) + np.cumsum(kept_per_group) - kept_per_group
        )
        state.order_len[s, d] = kept_per_group

    def _result(self, state: _Search) -> SampleBatch:
        index, b = self.index, len(state.sample_ids)
        h, w, r = index.info.grid_height, index.info.grid_width, (index.gamma - 1) // 2
        placed = np.maximum(state.depth, 0)
        filled = np.arange(h * w)[None, :] < placed[:, None]
        examples = np.where(filled, index.examples[np.maximum(state.rows, 0)], -1)
        return SampleBatch(
            tokens=state.grid[:, r:, r : r + w].copy(),
            ok=state.failure == "",
            failure=state.failure.astype(str),
            backtracks=state.backtracks,
            steps=state.steps,
            examples=examples.reshape(b, h, w),
            answered_by=np.where(filled, index.gamma, UNFILLED).reshape(b, h, w),
            placed=placed,
        )
