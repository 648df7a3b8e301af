"""The sampling modes beside exact search: backoff, hybrid and neural, and what they report."""

import numpy as np
import pytest
import torch

from service.errors import InvalidInputError, RunError
from service.ngram.modes import Sampler, draw_tokens
from service.ngram.samples import NEURAL, Mode, SampleConfig
from service.ngram.windows import context_size
from tests.helpers import SMALL_CHANNELS, SMALL_GRID, SmallTables, brute_force_histograms, window_at

CHANNELS, GRID = SMALL_CHANNELS, SMALL_GRID


def _sampler(small: SmallTables) -> Sampler:
    return Sampler((CHANNELS, *GRID), small.indexes, {5: small.net})


def test_hybrid_uses_the_table_where_the_context_is_known(small_tables: SmallTables) -> None:
    tokens = small_tables.tokens
    seen = brute_force_histograms(tokens, np.arange(len(tokens)), 5, pad=1 << CHANNELS)
    batch = _sampler(small_tables).sample(5, "hybrid", SampleConfig(n=300, seed=3))
    assert batch.ok.all() and (batch.backtracks == 0).all()
    assert 0 < batch.neural_share.mean() < 1
    for grid, by in zip(batch.tokens, batch.answered_by, strict=True):
        for y in range(GRID[0]):
            for x in range(GRID[1]):
                ctx = window_at(grid, y, x, 5, 1 << CHANNELS)
                if by[y, x] == 5:
                    assert int(grid[y, x]) in seen[ctx]
                else:  # neural only where the table has no answer
                    assert by[y, x] == NEURAL and ctx not in seen


def test_backoff_answers_with_the_largest_gamma_that_knows(small_tables: SmallTables) -> None:
    tokens = small_tables.tokens
    seen = {g: brute_force_histograms(tokens, np.arange(40), g, 1 << CHANNELS) for g in (3, 5)}
    batch = _sampler(small_tables).sample(5, "backoff", SampleConfig(n=200, seed=4))
    assert batch.ok.all() and set(np.unique(batch.answered_by)) <= {0, 3, 5}
    assert (batch.answered_by == 3).any()
    for grid, by in zip(batch.tokens, batch.answered_by, strict=True):
        for y in range(GRID[0]):
            for x in range(GRID[1]):
                ctx5 = window_at(grid, y, x, 5, 1 << CHANNELS)
                if by[y, x] == 3:
                    assert ctx5 not in seen[5]
                    assert int(grid[y, x]) in seen[3][window_at(grid, y, x, 3, 1 << CHANNELS)]


@pytest.mark.parametrize("mode", ["exact", "backoff", "hybrid", "neural"])
def test_same_seed_same_samples_in_every_mode(small_tables: SmallTables, mode: Mode) -> None:
    gen = _sampler(small_tables)
    a = gen.sample(5, mode, SampleConfig(n=40, seed=11))
    b = gen.sample(5, mode, SampleConfig(n=40, seed=11))
    c = gen.sample(5, mode, SampleConfig(n=40, seed=12))
    np.testing.assert_array_equal(a.tokens, b.tokens)
    np.testing.assert_array_equal(a.answered_by, b.answered_by)
    assert not np.array_equal(a.tokens, c.tokens)
    if mode == "neural":
        assert (a.answered_by == NEURAL).all()


def test_failed_exact_samples_are_completed_in_hybrid_mode(small_tables: SmallTables) -> None:
    gen = _sampler(small_tables)
    config = SampleConfig(n=100, seed=5, budget=8)  # 8 steps for 12 positions: none finishes
    exact = gen.sample(5, "exact", config)
    assert not exact.ok.any() and (exact.placed > 0).all()
    done = gen.sample(5, "exact", config, complete_with_hybrid=True)
    assert done.ok.all()
    for i in np.flatnonzero(~exact.ok):  # the exact prefix is kept, the rest comes after it
        kept = exact.placed[i]
        flat_done, flat_exact = done.tokens[i].ravel(), exact.tokens[i].ravel()
        np.testing.assert_array_equal(flat_done[:kept], flat_exact[:kept])
        assert (done.answered_by[i].ravel()[:kept] == 5).all()


def test_bad_mode_or_missing_network(small_tables: SmallTables) -> None:
    gen = Sampler((CHANNELS, *GRID), small_tables.indexes, {})
    with pytest.raises(InvalidInputError, match="mode must be one of"):
        gen.sample(5, "dream", SampleConfig(n=2))  # type: ignore[arg-type]
    with pytest.raises(RunError, match="no γ-ARVM trained for gamma=5"):
        gen.sample(5, "hybrid", SampleConfig(n=2))
    with pytest.raises(RunError, match="no table g7 built for gamma=7; built: g3, g5"):
        gen.sample(7, "exact", SampleConfig(n=2))
    assert context_size(5) == 12


@pytest.mark.parametrize(("vocab", "temperature"), [(4096, 1.0), (4096, 0.5), (100, 2.0), (8, 1.0)])
def test_neural_draws_are_the_inverse_cdf_of_the_softmax(vocab: int, temperature: float) -> None:
    """Two levels (a block, then a token in it) draw what one float64 inverse CDF over the
    whole softmax draws, at the same uniforms."""
    generator = torch.Generator().manual_seed(vocab)
    logits = torch.randn(3000, vocab, generator=generator) * 3
    u = torch.rand(3000, generator=generator, dtype=torch.float64)
    cdf = torch.softmax(logits.double() / temperature, dim=-1).cumsum(-1)
    expected = torch.searchsorted(cdf, (u * cdf[:, -1]).unsqueeze(1)).squeeze(1)
    drawn = draw_tokens(logits.clone(), u, temperature)
    assert (drawn != expected).sum() <= 3  # a uniform within rounding of a boundary may differ


def test_samples_that_share_a_context_draw_from_its_one_row() -> None:
    """The network runs once per distinct context: each sample draws from its context's row,
    as it would from a copy of that row of its own."""
    generator = torch.Generator().manual_seed(1)
    logits = torch.randn(50, 4096, generator=generator) * 3
    rows = torch.randint(0, 50, (3000,), generator=generator)
    u = torch.rand(3000, generator=generator, dtype=torch.float64)
    shared = draw_tokens(logits.clone(), u, 0.7, rows)
    assert torch.equal(shared, draw_tokens(logits[rows], u, 0.7))


def test_neural_draws_never_take_a_token_without_weight() -> None:
    """All the weight on one token of a late block, uniforms at both ends of (0, 1): that token
    every time, never a padded place or an empty block."""
    logits = torch.full((4, 100), -1e4)
    logits[:, 77] = 0.0
    u = torch.tensor([1e-12, 0.5, 1 - 1e-12, 1 - 1e-16], dtype=torch.float64)
    assert draw_tokens(logits, u, 1.0).tolist() == [77] * 4
