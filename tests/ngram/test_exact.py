"""Exact sampling: every window is a training window, backtracking recovers dead ends."""

from pathlib import Path

import numpy as np
import pytest

from service.data.parquet import read_latents
from service.errors import InvalidInputError
from service.ngram.exact import ExactSampler
from service.ngram.index import NgramIndex
from service.ngram.samples import FAILED_BUDGET, SampleConfig
from service.ngram.store import open_store
from service.ngram.tokens import bits_to_tokens
from service.run.paths import RunPaths
from service.run.steps import build_run_tables
from tests.helpers import brute_force_histograms, index_of, window_at


@pytest.fixture(scope="module")
def tiny_tables(tiny_run: RunPaths) -> RunPaths:
    build_run_tables(tiny_run, (3, 5, 7), progress=False)
    return tiny_run


@pytest.mark.parametrize("gamma", [3, 5, 7])
def test_every_window_of_every_sample_is_a_training_window(
    tiny_tables: RunPaths, gamma: int
) -> None:
    latents = read_latents(tiny_tables.latents)
    train = latents.select(latents.splits == "train")
    tokens = bits_to_tokens(train.bits())
    pad = 1 << latents.shape[0]
    seen = brute_force_histograms(tokens, train.ids, gamma, pad)
    with open_store(tiny_tables.store, read_only=True) as con:
        index = NgramIndex.load(con, gamma)
    batch = ExactSampler(index).sample(SampleConfig(n=300, seed=1, budget=5000))
    assert batch.ok.mean() > 0.9
    by_id = dict(zip(train.ids.tolist(), tokens, strict=True))
    for grid, examples in zip(batch.tokens[batch.ok], batch.examples[batch.ok], strict=True):
        for y in range(grid.shape[0]):
            for x in range(grid.shape[1]):
                ctx, tok = window_at(grid, y, x, gamma, pad), int(grid[y, x])
                assert tok in seen.get(ctx, {}), f"window at {(y, x)} never seen in training"
                source = by_id[int(examples[y, x])]  # the named image really holds this window
                assert any(
                    window_at(source, yy, xx, gamma, pad) == ctx and source[yy, xx] == tok
                    for yy in range(source.shape[0])
                    for xx in range(source.shape[1])
                )
    if gamma == 7:  # global on a 4×4 grid: every finished sample is a training latent
        training = {g.tobytes() for g in tokens}
        assert all(g.tobytes() in training for g in batch.tokens[batch.ok])


def test_paper_toy_case_backtracking_recovers(tmp_path: Path) -> None:
    """1,0,1,1,0,0 and 1,1,1,0,1,0 with three tokens of history (γ = 7 on a one-row grid).

    A walk that reaches 1,0,1,0 has the history (0,1,0), which neither sequence has: a dead end.
    """
    sequences = np.array([[[1, 0, 1, 1, 0, 0]], [[1, 1, 1, 0, 1, 0]]])
    index = index_of(tmp_path / "s.duckdb", sequences, channels=1, gamma=7)
    sampler = ExactSampler(index)
    free = sampler.sample(SampleConfig(n=200, seed=0, budget=100))
    assert free.ok.all()
    assert (free.backtracks > 0).any(), "some walks must hit the (0,1,0) dead end and recover"
    # no room to go back: a budget of one step per position fails exactly those walks
    naive = sampler.sample(SampleConfig(n=200, seed=0, budget=6))
    assert not naive.ok.all() and set(naive.failure[~naive.ok]) == {FAILED_BUDGET}
    np.testing.assert_array_equal(naive.ok, free.backtracks == 0)
    for grid in free.tokens:
        row = grid[0]
        for x in range(6):  # every 3-history → next pair occurs in one of the sequences
            history = tuple(row[max(0, x - 3) : x])
            assert any(
                tuple(s[0][max(0, k - 3) : k]) == history
                and s[0][k] == row[x]
                and (k >= 3) == (x >= 3)
                and min(k, 3) == min(x, 3)
                for s in sequences
                for k in range(6)
            )


def test_same_seed_same_samples_whatever_the_batch(tiny_tables: RunPaths) -> None:
    with open_store(tiny_tables.store, read_only=True) as con:
        index = NgramIndex.load(con, 5)
    sampler = ExactSampler(index)
    a = sampler.sample(SampleConfig(n=64, seed=9))
    b = sampler.sample(SampleConfig(n=64, seed=9, batch_size=7))
    c = sampler.sample(SampleConfig(n=64, seed=10))
    np.testing.assert_array_equal(a.tokens, b.tokens)
    np.testing.assert_array_equal(a.examples, b.examples)
    np.testing.assert_array_equal(a.backtracks, b.backtracks)
    assert not np.array_equal(a.tokens, c.tokens)
    first = sampler.sample(SampleConfig(n=16, seed=9))
    np.testing.assert_array_equal(first.tokens, a.tokens[:16])


def test_budget_failure_is_reported(tmp_path: Path) -> None:
    rng = np.random.default_rng(0)
    index = index_of(tmp_path / "s.duckdb", rng.integers(0, 16, (40, 4, 4)), channels=4, gamma=3)
    batch = ExactSampler(index).sample(SampleConfig(n=100, seed=0, budget=16))
    assert (~batch.ok).any()
    assert set(batch.failure[~batch.ok]) == {FAILED_BUDGET}
    assert (batch.steps[~batch.ok] == 16).all()


def test_temperature_sharpens_towards_the_mode(tmp_path: Path) -> None:
    """One context, tokens seen 90 and 10 times: T → small picks the frequent one."""
    grids = np.array([[[0]]] * 90 + [[[1]]] * 10)
    index = index_of(tmp_path / "s.duckdb", grids, channels=1, gamma=3)
    sampler = ExactSampler(index)
    share = [
        (sampler.sample(SampleConfig(n=4000, seed=0, temperature=t)).tokens == 0).mean()
        for t in (0.2, 1.0, 5.0)
    ]
    assert share[0] > 0.99 and abs(share[1] - 0.9) < 0.02 and 0.5 < share[2] < 0.75


@pytest.mark.parametrize(
    "kwargs,message",
    [({"temperature": 0.0}, "temperature"), ({"budget": 0}, "budget"), ({"n": -1}, "n must")],
)
def test_bad_sample_config(kwargs: dict, message: str) -> None:
    with pytest.raises(InvalidInputError, match=message):
        SampleConfig(**kwargs)
