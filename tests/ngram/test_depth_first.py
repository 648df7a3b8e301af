"""The compiled search's building blocks agree with the array code the build and the rest of the
engine use: the same context keys, the same uniforms, and a hash table that finds exactly the
keys it holds."""

from __future__ import annotations

import itertools

import numpy as np
import pytest
from numba import njit

from service.ngram import depth_first
from service.ngram.constraints import grid_constraints
from service.ngram.index import KeyFilter
from service.ngram.prefetch import prefetch
from service.ngram.samples import uniform
from service.ngram.windows import above_size, context_keys, context_offsets, gather_contexts


def geometry(gamma: int, height: int, width: int, pad: int) -> depth_first.Geometry:
    c = grid_constraints(gamma, height, width)
    return depth_first.Geometry(
        width, (gamma - 1) // 2, np.ascontiguousarray(context_offsets(gamma)), above_size(gamma),
        pad, c.completes, c.slot, c.blame, c.above, c.above_slot, c.above_blame, c.window,
        c.single,
    )  # fmt: skip


@pytest.mark.parametrize(("gamma", "positional"), [(3, False), (5, True), (7, False)])
def test_window_keys_are_the_build_s_context_keys(gamma: int, positional: bool) -> None:
    """Every position's key, with and without one slot replaced, whole and above part alone."""
    rng = np.random.default_rng(gamma)
    height, width, pad = 5, 6, 16
    geo = geometry(gamma, height, width, pad)
    r = (gamma - 1) // 2
    grid = np.pad(rng.integers(0, pad, (1, height, width)), ((0, 0), (r, 0), (r, r)),
                  constant_values=pad)  # fmt: skip
    for q in range(height * width):
        ctx = gather_contexts(grid, np.array([0]), np.array([q // width]), np.array([q % width]),
                              gamma)  # fmt: skip
        where = np.array([q]) if positional else None
        key = depth_first.window_key(grid[0], geo, q, ctx.shape[1], -1, 0, positional)
        assert key == context_keys(ctx, where)[0]
        slot, token = int(rng.integers(ctx.shape[1])), int(rng.integers(pad))
        changed = ctx.copy()
        changed[0, slot] = token
        key = depth_first.window_key(grid[0], geo, q, ctx.shape[1], slot, token, positional)
        assert key == context_keys(changed, where)[0]
        above = above_size(gamma)
        key = depth_first.window_key(grid[0], geo, q, above, -1, 0, positional)
        assert key == context_keys(ctx[:, :above], where)[0]


@pytest.mark.parametrize("positional", [False, True])
def test_prefix_keys_are_the_keys_of_the_contexts_first_slots(positional: bool) -> None:
    """What the index files key the above parts by, from the stored lists' values."""
    rng = np.random.default_rng(3)
    contexts = rng.integers(0, 17, (50, 12)).astype(np.uint32)
    positions = rng.integers(0, 64, 50) if positional else None
    given = np.zeros(0, np.int64) if positions is None else positions  # empty: no positions
    for size in (0, 6, 12):
        keys = depth_first.prefix_keys(contexts.reshape(-1), 12, size, given)
        np.testing.assert_array_equal(keys, context_keys(contexts[:, :size], positions))


def test_uniforms_are_the_array_code_s() -> None:
    rng = np.random.default_rng(3)
    seeds, samples, steps, js = (rng.integers(0, 2**53, 50) for _ in range(4))
    for seed, sample, step, j in zip(seeds, samples, steps, js, strict=True):
        counters = (np.uint64(c) for c in (seed, sample, step, j))
        mine = depth_first.uniform(*counters)
        assert mine == uniform(int(seed), np.array([sample]), np.array([step]), int(j))[0]
        assert 0.0 < mine < 1.0


@pytest.mark.parametrize("n", [0, 1, 1000, 4097])
def test_hash_table_finds_its_keys_and_nothing_else(n: int) -> None:
    rng = np.random.default_rng(n)
    keys = np.unique(rng.integers(-(2**63), 2**63 - 1, n, dtype=np.int64))
    values = rng.integers(0, 2**62, len(keys))
    slots = depth_first.hash_table(keys, values)
    assert len(slots) == depth_first.slots_for(len(keys)) >= 5 * len(keys) // 3
    for key, value in zip(keys, values, strict=True):
        assert depth_first.find(slots, key) == value
    others = np.setdiff1d(rng.integers(-(2**63), 2**63 - 1, 2000, dtype=np.int64), keys)
    assert all(depth_first.find(slots, k) == -1 for k in others)


def test_a_key_s_slot_holds_its_row_range() -> None:
    """What the search reads of a found context: its first row and one past its last."""
    starts = 2**40 + np.array([0, 1, 5, 5 + 2**16 + 1])  # far rows, up to 2^16 + 1 of them
    packed = depth_first.row_ranges(starts)
    ranges = [depth_first._unpack_rows(p) for p in packed]
    assert ranges == list(itertools.pairwise(starts))


def test_the_key_filter_misses_no_key_and_passes_few_others() -> None:
    rng = np.random.default_rng(4)
    keys = np.unique(rng.integers(-(2**63), 2**63 - 1, 100_000, dtype=np.int64))
    others = np.setdiff1d(rng.integers(-(2**63), 2**63 - 1, 100_000, dtype=np.int64), keys)
    key_filter = KeyFilter(keys)
    assert key_filter.might_contain(keys).all()
    assert key_filter.might_contain(others).mean() < 0.005  # ~0.3 % expected
    assert all(depth_first.might_contain(key_filter.words, k) for k in keys[:100])


@pytest.mark.parametrize("n", [1, 2, 7, 64, 300])
def test_a_fenwick_tree_draws_what_a_pass_over_the_weights_would(n: int) -> None:
    """A list's draw (the first weight whose prefix sum exceeds the target) and its total, as
    weights are taken out one by one, match a plain cumulative sum; the tree sits at an offset
    in a larger array, as a list does on the search's stack, and leaves the rest alone."""
    rng = np.random.default_rng(n)
    off = 5
    weight = np.full(off + n + 3, 7.0)
    weight[off : off + n] = rng.random(n) ** 3  # uneven, as counts are
    sums = np.full_like(weight, 9.0)
    depth_first.fenwick_fill(sums, weight, off, n)
    assert (sums[:off] == 9.0).all() and (sums[off + n :] == 9.0).all()
    left = weight[off : off + n].copy()
    for place in rng.permutation(n):
        assert np.isclose(depth_first.fenwick_total(sums, off, n), left.sum())
        for target in rng.random(5) * left.sum():
            expected = int(np.argmax(np.cumsum(left) > target))
            assert depth_first.fenwick_find(sums, off, n, target) == expected
        depth_first.fenwick_add(sums, off, n, place, -left[place])
        left[place] = 0.0  # taken out: never found again
    assert abs(depth_first.fenwick_total(sums, off, n)) < 1e-12  # rounding is all that is left


def test_prefix_sums_start_again_at_each_context_and_draws_read_them() -> None:
    """Each context's sums are its own weights' running total (its last one its total, however
    many rows come before it), and a draw is the first row whose sum exceeds u · that total."""
    rng = np.random.default_rng(11)
    lengths = rng.integers(1, 9, 200)
    starts = np.r_[0, np.cumsum(lengths)]
    weight = rng.random(starts[-1]) ** 3
    cum = depth_first.context_prefix_sums(weight, starts)
    for lo, hi in itertools.pairwise(starts):
        np.testing.assert_allclose(cum[lo:hi], np.cumsum(weight[lo:hi]), rtol=1e-15)
    u = rng.random(len(lengths))
    rows = depth_first.draw_rows(cum, starts[:-1], starts[1:], u)
    for (lo, hi), row, x in zip(itertools.pairwise(starts), rows, u, strict=True):
        running = np.cumsum(weight[lo:hi])
        assert row - lo == min(np.searchsorted(running, x * running[-1], "right"), hi - lo - 1)


def test_a_prefetch_is_a_hint_that_never_faults() -> None:
    @njit(cache=False)
    def read_after_hints(a, b, far):
        prefetch(a, 3)
        prefetch(b, 1)  # a 2-D array: the line of b[1, 0]
        prefetch(a, far)  # out of bounds: still only a hint
        return a[3] + b[1, 0]

    a, b = np.arange(10, dtype=np.float64), np.arange(8, dtype=np.int64).reshape(4, 2)
    assert read_after_hints(a, b, 1 << 40) == 3.0 + 2
