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
from dataclasses import dataclass, fields

import numpy as np

from service.errors import InvalidInputError
from service.index import NgramIndex
from service.windows import context_keys, gather_contexts, pad_grids, splitmix64

MAX_TEMPERATURE = 20.0
MIN_TEMPERATURE = 0.05  # below this count^(1/T) is a hard argmax in float64 anyway
FAILED_BUDGET = "budget"  # the search used its budget of steps before finishing
# Every candidate order was tried and no sample exists. A guard: with untruncated histograms a
# training latent is always a complete path, so only a budget-capped order can end here.
FAILED_EXHAUSTED = "exhausted"


@dataclass(frozen=True)
class SampleConfig:
    n: int = 16  # samples to draw
    seed: int = 0  # same seed, same samples
    temperature: float = 1.0  # weight count^(1/T): < 1 sharpens, > 1 flattens
    budget: int = 1000  # search steps per sample (one step: enter, advance or backtrack once)
    batch_size: int = 32768  # samples searched together: more amortizes the per-step overhead

    def __post_init__(self) -> None:
        if self.n < 0:
            raise InvalidInputError(f"n must be ≥ 0, got {self.n}")
        if not MIN_TEMPERATURE <= self.temperature <= MAX_TEMPERATURE:
            raise InvalidInputError(
                f"temperature must be in [{MIN_TEMPERATURE}, {MAX_TEMPERATURE}], "
                f"got {self.temperature}"
            )
        if self.budget < 1:
            raise InvalidInputError(f"budget must be ≥ 1, got {self.budget}")
        if self.batch_size < 1:
            raise InvalidInputError(f"batch_size must be ≥ 1, got {self.batch_size}")


NEURAL = 0  # `answered_by` of a position the γ-ARVM filled
UNFILLED = -1  # `answered_by` of a position a failed sample never reached


@dataclass(frozen=True)
class SampleBatch:
    """Samples and their provenance; arrays are indexed by sample, then (y, x)."""

    tokens: np.ndarray  # (n, H, W) int64; positions a failed sample never filled hold junk
    ok: np.ndarray  # (n,) bool: every position is filled
    failure: np.ndarray  # (n,) str: "" when ok, else why (FAILED_BUDGET, FAILED_EXHAUSTED, …)
    backtracks: np.ndarray  # (n,) int64: times the search went back one position
    steps: np.ndarray  # (n,) int64
    examples: np.ndarray  # (n, H, W) int64: a training image holding the window, −1 if neural
    answered_by: np.ndarray  # (n, H, W) int64: γ of the table that chose the token, 0 neural
    placed: np.ndarray  # (n,) int64: positions filled (all of them when ok)

    def __len__(self) -> int:
        return len(self.ok)

    @property
    def neural_share(self) -> np.ndarray:
        """(n,) share of each sample's positions that the γ-ARVM filled."""
        return (self.answered_by == NEURAL).mean(axis=(1, 2))

    @staticmethod
    def concatenate(parts: list[SampleBatch]) -> SampleBatch:
        return SampleBatch(
            *(np.concatenate([getattr(p, f.name) for p in parts]) for f in fields(SampleBatch))
        )


def uniform(seed: int, sample: np.ndarray, step: np.ndarray, j: np.ndarray | int = 0) -> np.ndarray:
    """Counter-based uniforms in (0, 1) from (seed, sample number, step, candidate j)."""
    with np.errstate(over="ignore"):
        x = splitmix64(np.asarray(j, dtype=np.uint64) + np.uint64(0x632BE59BD9B4E019))
        x = splitmix64(x ^ np.asarray(step, dtype=np.int64).astype(np.uint64))
        x = splitmix64(x ^ np.asarray(sample, dtype=np.int64).astype(np.uint64))
        x = splitmix64(x ^ np.uint64(seed & 0xFFFFFFFFFFFFFFFF))
    return ((x >> np.uint64(11)).astype(np.float64) + 0.5) * 2.0**-53


class _Weights:
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


class ExactSampler:
    """Batched depth-first exact sampling over one index."""

    def __init__(self, index: NgramIndex) -> None:
        self.index = index
        self._weights: dict[float, _Weights] = {}
        self._lock = threading.Lock()  # the service samples from several threads at once

    def weights(self, temperature: float) -> _Weights:
        """Per-temperature weights, the last few kept (each is two floats per table row)."""
        with self._lock:
            if temperature not in self._weights:
                if len(self._weights) >= 4:
                    self._weights.pop(next(iter(self._weights)))
                self._weights[temperature] = _Weights(self.index, temperature)
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
        index, gamma = self.index, self.index.gamma
        h, w = index.info.grid_height, index.info.grid_width
        r, positions, b = (gamma - 1) // 2, h * w, len(sample_ids)
        weights = self.weights(config.temperature)
        grid = pad_grids(np.zeros((b, h, w), np.int64), gamma, index.pad)
        depth = np.zeros(b, np.int64)
        entering = np.ones(b, bool)  # next step enters position `depth`; else advances there
        active = np.ones(b, bool)
        failure = np.full(b, "", dtype=object)
        backtracks = np.zeros(b, np.int64)
        steps = np.zeros(b, np.int64)
        rows = np.full((b, positions), -1, np.int64)  # chosen index row per position
        seg_start = np.zeros((b, positions), np.int64)
        seg_end = np.zeros((b, positions), np.int64)
        order_off = np.full((b, positions), -1, np.int64)  # -1: order not materialized yet
        order_len = np.zeros((b, positions), np.int64)
        cursor = np.zeros((b, positions), np.int64)
        pool = _Pool()

        def place(s: np.ndarray, row: np.ndarray) -> None:
            d = depth[s]
            rows[s, d] = row
            grid[s, d // w + r, d % w + r] = index.tokens[row]
            depth[s] = d + 1
            entering[s] = True
            done = depth[s] == positions
            active[s[done]] = False

        while active.any():
            act = np.flatnonzero(active)
            spent = steps[act] >= config.budget
            active[act[spent]], failure[act[spent]] = False, FAILED_BUDGET
            act = act[~spent]
            steps[act] += 1
            enter, advance = act[entering[act]], act[~entering[act]]

            if len(enter):
                d = depth[enter]
                ctx = gather_contexts(grid, enter, d // w, d % w, gamma)
                keys = context_keys(ctx, d if index.info.positional else None)
                found = index.lookup_keys(keys)
                dead = enter[~found.found]
                entering[dead] = False  # dead end: go back and advance the previous position
                depth[dead] -= 1
                backtracks[dead] += 1
                go = enter[found.found]
                start, end = found.start[found.found], found.end[found.found]
                gd = depth[go]
                seg_start[go, gd], seg_end[go, gd] = start, end
                order_off[go, gd], cursor[go, gd] = -1, 0
                # first candidate by inverse CDF: P(row) ∝ weight, no order materialized; most
                # contexts have a single next token, which needs no draw at all
                row = start.copy()
                many = np.flatnonzero(end - start > 1)
                if len(many):
                    u = uniform(config.seed, sample_ids[go[many]], steps[go[many]])
                    row[many] = weights.draw(start[many], end[many], u)
                place(go, row)

            if len(advance):
                below = advance[depth[advance] < 0]  # backtracked past the first position
                active[below], failure[below] = False, FAILED_EXHAUSTED
                adv = advance[depth[advance] >= 0]
                d = depth[adv]
                fresh = adv[order_off[adv, d] < 0]
                if len(fresh):
                    self._materialize(
                        fresh,
                        depth[fresh],
                        config,
                        steps,
                        sample_ids,
                        seg_start,
                        seg_end,
                        rows,
                        order_off,
                        order_len,
                        pool,
                    )
                cursor[adv, d] += 1
                more = cursor[adv, d] <= order_len[adv, d]
                nxt = adv[more]
                nd = depth[nxt]
                place(nxt, pool.rows[order_off[nxt, nd] + cursor[nxt, nd] - 1])
                back = adv[~more]
                depth[back] -= 1
                backtracks[back] += 1

        placed = np.maximum(depth, 0)
        filled = np.arange(positions)[None, :] < placed[:, None]
        examples = np.where(filled, index.examples[np.maximum(rows, 0)], -1)
        return SampleBatch(
            tokens=grid[:, r:, r : r + w].copy(),
            ok=failure == "",
            failure=failure.astype(str),
            backtracks=backtracks,
            steps=steps,
            examples=examples.reshape(b, h, w),
            answered_by=np.where(filled, gamma, UNFILLED).reshape(b, h, w),
            placed=placed,
        )

    def _materialize(
        self,
        s: np.ndarray,
        d: np.ndarray,
        config: SampleConfig,
        steps: np.ndarray,
        sample_ids: np.ndarray,
        seg_start: np.ndarray,
        seg_end: np.ndarray,
        rows: np.ndarray,
        order_off: np.ndarray,
        order_len: np.ndarray,
        pool: _Pool,
    ) -> None:
        """Order the remaining candidates of (s, d) by Efraimidis–Spirakis keys u^(1/w).

        The first candidate (drawn by inverse CDF) is left out: the rest follow in the order of
        weighted sampling without replacement given it. At most `budget` candidates are kept,
        since a sample cannot try more than that many at one position.
        """
        start, end = seg_start[s, d], seg_end[s, d]
        length = end - start
        group = np.repeat(np.arange(len(s)), length)
        offset_in_group = np.arange(group.size) - np.repeat(np.cumsum(length) - length, length)
        row = np.repeat(start, length) + offset_in_group
        u = uniform(
            config.seed,
            np.repeat(sample_ids[s], length),
            np.repeat(steps[s], length),
            offset_in_group + 1,
        )
        score = np.log(u) / self.weights(config.temperature).w[row]  # larger goes first
        score[row == np.repeat(rows[s, d], length)] = -np.inf  # the first pick, already tried
        order = np.lexsort((-score, group))
        row, group, score = row[order], group[order], score[order]
        rank = np.arange(group.size) - np.repeat(np.cumsum(length) - length, length)
        keep = (rank < config.budget) & np.isfinite(score)
        kept_per_group = np.bincount(group[keep], minlength=len(s))
        order_off[s, d] = pool.append(row[keep]) + np.cumsum(kept_per_group) - kept_per_group
        order_len[s, d] = kept_per_group


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
