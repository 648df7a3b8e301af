"""Exact generation: depth-first search with forward checking and backjumping over an n-gram index
(DESIGN.md §5).

Positions are filled in raster order. At each position the candidates are the tokens of its
context's histogram, tried in the order of weighted sampling without replacement (weight
count^(1/T)): each next candidate is drawn from the untried ones with P ∝ weight. Every γ-window
of a finished sample is a window of a training image, and each position names one such image.

Two things keep the search from wandering in branches that cannot finish (ngram/constraints.py):
- forward checking: placing a token at p completes the context of the next position (and, at a
  row's r-th column, of the next row's first), and the above parts of contexts in the next
  rows: a candidate that would make such a context one the table never saw, or such an above
  part the start of none, is dropped when it is drawn, before it is placed (once a position's
  first draw has failed, the next position's context is checked for all its other candidates
  as they are listed, and only those that pass are drawn). Above parts and the listing ask a
  Bloom filter alone: the few it wrongly passes are dropped by a later exact check;
- conflict-directed backjumping: each position collects the positions its failures depend on
  (its own window, the windows of the contexts that rejected its candidates, and what failed
  deeper below it); when it runs out of candidates the search jumps to the latest of them,
  skipping positions whose other tokens could not have helped.

Neither changes the distribution of finished samples. The candidates' order at a position is a
weighted random permutation; dropping the candidates that cannot lead to a sample leaves the
others in a weighted random permutation of their own, so the first one that leads to a sample is
drawn exactly as before (a candidate is checked only when drawn: the first that passes is
distributed as the weights restricted to those that pass, and the others are never checked),
and a jump only skips subtrees that hold no sample. With an unlimited
budget the search returns the first sample of the same random tree, and only its budget makes it
give up: with pruning it gives up far less often, so the finished samples are less biased toward
the easy ones. The random numbers do change (they are counted by search step), so a seed draws
other samples than the plain search does.

Each sample is searched on its own, in compiled code (ngram/depth_first.py), and a batch is
split across threads; a thread runs several searches in turn, each yielding to the next while the
table entries it asked for come in from memory, and the arrays it reads sit on huge pages
(ngram/huge_pages.py). Randomness is counter-based (a hash of seed, sample number and search
step), so a sample depends only on its own history: the same seed gives the same samples
whatever the batch size, the threads or the searches a thread runs at once.
"""

from __future__ import annotations

import os
import threading
import time
from concurrent.futures import ThreadPoolExecutor

import numpy as np

from service.ngram import depth_first
from service.ngram.constraints import grid_constraints
from service.ngram.huge_pages import move_to_huge_pages
from service.ngram.index import NgramIndex
from service.ngram.samples import (
    FAILED_BUDGET,
    FAILED_DEADLINE,
    FAILED_EXHAUSTED,
    UNFILLED,
    SampleBatch,
    SampleConfig,
)
from service.ngram.windows import above_size, context_offsets

MIN_SAMPLES_PER_THREAD = 256  # below this a thread costs more than it saves
# Samples searched between two looks at the clock: at the largest budget the service allows
# (100,000 steps, ~0.2 s a sample at worst) a deadline is overrun by a few seconds at most.
DEADLINE_CHUNK = 16
_FAILURES = {
    depth_first.NOT_REACHED: FAILED_DEADLINE,
    depth_first.FINISHED: "",
    depth_first.OUT_OF_BUDGET: FAILED_BUDGET,
    depth_first.EXHAUSTED: FAILED_EXHAUSTED,
}


class Weights:
    """Per-row weights count^(1/T), scaled to ≤ 1 within each context, kept as their prefix sums
    within each context (depth_first.context_prefix_sums): 8 bytes a row per temperature."""

    def __init__(self, index: NgramIndex, temperature: float) -> None:
        counts = index.counts.astype(np.float64)
        seg_max = np.maximum.reduceat(counts, index.starts[:-1]) if len(counts) else counts
        lengths = np.diff(index.starts)
        weight = (counts / np.repeat(seg_max, lengths)) ** (1.0 / temperature)
        self.cum = depth_first.context_prefix_sums(weight, index.starts)
        move_to_huge_pages(self.cum)

    def draw(self, start: np.ndarray, end: np.ndarray, u: np.ndarray) -> np.ndarray:
        """One row in each [start, end) with P(row) ∝ weight, by inverse CDF of uniforms u."""
        return depth_first.draw_rows(self.cum, start, end, u)


def read_only(array: np.ndarray) -> np.ndarray:
    view = array.view()
    view.flags.writeable = False
    return view


def default_threads() -> int:
    """The cores this process may run on."""
    return len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count() or 1


class ExactSampler:
    """Exact sampling over one index.

    forward_checking and backjumping can be turned off: benchmarks/search_figures.py measures
    the plain search against them. `threads` caps the threads one call uses (default: every
    core this process may run on), and `lanes` is how many samples each thread searches in turn
    (depth_first.LANES); neither changes the samples.
    """

    def __init__(
        self,
        index: NgramIndex,
        *,
        forward_checking: bool = True,
        backjumping: bool = True,
        threads: int | None = None,
        lanes: int = depth_first.LANES,
    ) -> None:
        self.index = index
        self.lanes = lanes
        self.forward_checking = forward_checking
        self.backjumping = backjumping
        self.threads = threads or default_threads()
        info = index.info
        c = grid_constraints(index.gamma, info.grid_height, info.grid_width)
        self.geometry = depth_first.Geometry(
            width=info.grid_width,
            r=(index.gamma - 1) // 2,
            offsets=np.ascontiguousarray(context_offsets(index.gamma)),
            above_size=above_size(index.gamma),
            pad=index.pad,
            completes=c.completes[:, :2].copy(),
            slot=c.slot[:, :2].copy(),
            blame=c.blame[:, :2].copy(),
            above=c.above,
            above_slot=c.above_slot,
            above_blame=c.above_blame,
            window=c.window,
            single=c.single,
        )
        self._key_slots = index.key_slots  # mapped with the index, or built once per index
        for array in (self._key_slots, index.key_filter.words, index.tokens, index.above_words):
            move_to_huge_pages(array)  # read at random: TLB misses cost as much as cache misses
        longest = int(np.diff(index.starts).max()) if len(index.keys) else 1
        self._stack = c.positions * longest  # one list per position on the path at most
        self._weights: dict[float, Weights] = {}
        self._lock = threading.Lock()  # the service samples from several threads at once

    def weights(self, temperature: float) -> Weights:
        """Per-temperature weights, the last few kept (each is one float per table row)."""
        with self._lock:
            if temperature not in self._weights:
                if len(self._weights) >= 4:
                    self._weights.pop(next(iter(self._weights)))
                self._weights[temperature] = Weights(self.index, temperature)
            return self._weights[temperature]

    def table(self, temperature: float) -> depth_first.Table:
        """The index as the compiled search reads it: read-only views, whether the index was
        mapped from its files or read from the store, so that numba compiles one search for
        both (it compiles a separate one per array writability, ~20 s each)."""
        weights, index = self.weights(temperature), self.index
        return depth_first.Table(
            key_slots=read_only(self._key_slots),
            key_words=read_only(index.key_filter.words),
            tokens=read_only(index.tokens),
            cum=read_only(weights.cum),
            above_words=read_only(index.above_words),
            positional=bool(index.info.positional),
        )

    def sample(self, config: SampleConfig) -> SampleBatch:
        n, positions = config.n, self.geometry.window.shape[0]
        out = depth_first.Results(
            np.zeros((n, positions), np.int64),  # tokens
            np.full((n, positions), -1, np.int64),  # rows
            *(np.zeros(n, np.int64) for _ in range(5)),  # status … placed
        )
        table = self.table(config.temperature)
        seed = np.uint64(config.seed & 0xFFFFFFFFFFFFFFFF)
        limit = config.time_limit
        deadline = time.monotonic() + limit if limit is not None else None
        chunk = DEADLINE_CHUNK if deadline is not None else max(n, 1)

        def run(lo: int, hi: int) -> None:
            height = self.index.info.grid_height
            scratch = depth_first.scratch(height, self.geometry, self._stack, self.lanes)
            for start in range(lo, hi, chunk):  # samples never reached stay NOT_REACHED
                if deadline is not None and time.monotonic() > deadline:
                    return
                end = min(start + chunk, hi)
                depth_first.search(
                    np.arange(start, end, dtype=np.int64), seed, config.budget,
                    self.forward_checking, self.backjumping, table, self.geometry, scratch,
                    depth_first.Results(*(a[start:end] for a in out)),
                )  # fmt: skip

        threads = max(1, min(self.threads, n // MIN_SAMPLES_PER_THREAD))
        bounds = np.linspace(0, n, threads + 1).astype(int)
        if threads == 1:
            run(0, n)
        else:
            with ThreadPoolExecutor(threads) as pool:
                list(pool.map(run, bounds[:-1], bounds[1:]))
        return self._result(out)

    def _result(self, out: depth_first.Results) -> SampleBatch:
        index, n = self.index, len(out.status)
        h, w = index.info.grid_height, index.info.grid_width
        filled = out.rows >= 0
        examples = np.where(filled, index.examples[np.maximum(out.rows, 0)], -1)
        failure = np.full(n, "", dtype=object)
        for status, why in _FAILURES.items():
            failure[out.status == status] = why
        return SampleBatch(
            tokens=out.tokens.reshape(n, h, w),
            ok=out.status == depth_first.FINISHED,
            failure=failure.astype(str),
            backtracks=out.backtracks,
            jumps=out.jumps,
            steps=out.steps,
            examples=examples.reshape(n, h, w),
            answered_by=np.where(filled, index.gamma, UNFILLED).reshape(n, h, w),
            placed=out.placed,
        )
