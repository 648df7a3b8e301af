"""Exact sampling: every window is a training window; forward checking and backjumping find
samples where the plain search gives up, without changing which samples it finds."""

import shutil
from pathlib import Path

import numpy as np
import pytest

from service.data.parquet import read_latents
from service.errors import InvalidInputError
from service.ngram.exact import MIN_SAMPLES_PER_THREAD, ExactSampler
from service.ngram.index import NgramIndex
from service.ngram.samples import FAILED_BUDGET, SampleConfig
from service.ngram.store import open_store
from service.ngram.tokens import bits_to_tokens
from service.run.build import build_run_tables
from service.run.paths import RunPaths
from tests.helpers import brute_force_histograms, index_of, window_at


@pytest.fixture(scope="module")
def tiny_tables(tmp_path_factory: pytest.TempPathFactory, tiny_run: RunPaths) -> RunPaths:
    """A copy of the tiny run with tables γ = 3, 5, 7 (the session's tiny run stays unbuilt)."""
    paths = RunPaths(tmp_path_factory.mktemp("tables") / "run")
    shutil.copytree(tiny_run.root, paths.root)
    build_run_tables(paths, (3, 5, 7), progress=False)
    return paths


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


def assert_windows_are_training_windows(
    training: np.ndarray, grids: np.ndarray, examples: np.ndarray, gamma: int, pad: int
) -> None:
    """Every γ-window of each grid occurs in training, in the very image its position names."""
    seen = brute_force_histograms(training, np.arange(len(training)), gamma, pad)
    for grid, names in zip(grids, examples, strict=True):
        for y in range(grid.shape[0]):
            for x in range(grid.shape[1]):
                ctx, tok = window_at(grid, y, x, gamma, pad), int(grid[y, x])
                assert int(names[y, x]) in seen[ctx][tok][1], (y, x)


@pytest.mark.parametrize(
    ("side", "channels", "gamma", "images"),
    [(8, 3, 3, 150), (8, 4, 5, 60), (16, 1, 3, 60), (16, 1, 15, 40), (16, 1, 31, 20)],
)
def test_larger_grids_keep_every_window_a_named_training_window(
    tmp_path: Path, side: int, channels: int, gamma: int, images: int
) -> None:
    """8×8 and 16×16×1 grids (the paper's figure 2 shapes), from smooth random grids so that
    windows recur and the search has real choices, up to γ = 31, the global window of 16×16; on
    8×8 at γ = 3 positions run out of candidates, some at row starts, and backjumping jumps."""
    rng = np.random.default_rng(11)
    training = rng.integers(0, 1 << channels, (images, side, side))
    keep = rng.random(training.shape) < 0.8  # mostly copy the left neighbour: windows recur
    for x in range(1, side):
        training[:, :, x] = np.where(keep[:, :, x], training[:, :, x - 1], training[:, :, x])
    index = index_of(tmp_path / "s.duckdb", training, channels, gamma)
    config = SampleConfig(n=16, seed=3, budget=1500)
    batch = ExactSampler(index).sample(config)
    assert batch.ok.mean() > 0.7
    assert_windows_are_training_windows(
        training, batch.tokens[batch.ok], batch.examples[batch.ok], gamma, 1 << channels
    )
    if (side, gamma) == (8, 3):
        assert batch.jumps.sum() > 0, "a failing row start should jump over the row's tail"
        plain = ExactSampler(index, backjumping=False).sample(config)
        assert (plain.jumps == 0).all() and plain.backtracks.sum() > batch.backtracks.sum()


def test_pruning_finds_samples_with_the_plain_search_s_distribution(tmp_path: Path) -> None:
    """Forward checking drops only candidates that cannot finish and backjumping skips only
    subtrees without a sample, so with room enough both searches draw from one distribution:
    measured here as the total variation distance between their sample frequencies."""
    rng = np.random.default_rng(5)
    training = rng.integers(0, 3, (12, 2, 4))
    index = index_of(tmp_path / "s.duckdb", training, 2, 3)
    config = SampleConfig(n=6000, seed=8, budget=100_000)
    pruned = ExactSampler(index).sample(config)
    plain = ExactSampler(index, forward_checking=False, backjumping=False).sample(
        SampleConfig(n=6000, seed=9, budget=100_000)
    )
    assert pruned.ok.all() and plain.ok.all()
    assert pruned.backtracks.sum() < plain.backtracks.sum()

    def frequencies(grids: np.ndarray) -> dict[bytes, float]:
        keys, counts = np.unique([g.tobytes() for g in grids], return_counts=True)
        return dict(zip(keys, counts / counts.sum(), strict=True))

    a, b = frequencies(pruned.tokens), frequencies(plain.tokens)
    distance = 0.5 * sum(abs(a.get(k, 0.0) - b.get(k, 0.0)) for k in a.keys() | b.keys())
    assert len(a) > 20 and distance < 0.06, f"{len(a)} samples apart by {distance:.3f}"


def test_a_table_with_no_complete_grid_is_exhausted_not_budget(tmp_path: Path) -> None:
    """Windows from one image each, clashing so that no full grid exists: the search proves
    it, reports "exhausted", and a sample that exists is never reported so."""
    index = index_of(tmp_path / "s.duckdb", np.array([[[0, 1, 1]], [[1, 0, 0]]]), 1, 3)
    batch = ExactSampler(index).sample(SampleConfig(n=8, seed=0, budget=1000))
    assert batch.ok.all()  # the training grids themselves always exist
    assert set(batch.failure) == {""}


def test_paper_toy_case_backtracking_recovers(tmp_path: Path) -> None:
    """1,0,1,1,0,0 and 1,1,1,0,1,0 with three tokens of history (γ = 7 on a one-row grid).

    A walk that reaches 1,0,1,0 has the history (0,1,0), which neither sequence has: a dead end.
    The plain search walks into it and comes back; forward checking never places the 0 that
    leads there.
    """
    sequences = np.array([[[1, 0, 1, 1, 0, 0]], [[1, 1, 1, 0, 1, 0]]])
    index = index_of(tmp_path / "s.duckdb", sequences, channels=1, gamma=7)
    pruned = ExactSampler(index).sample(SampleConfig(n=200, seed=0, budget=6))
    assert pruned.ok.all() and (pruned.backtracks == 0).all() and (pruned.steps == 6).all()
    sampler = ExactSampler(index, forward_checking=False, backjumping=False)
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


def test_same_seed_same_samples_whatever_the_batch_threads_or_lanes(
    tiny_tables: RunPaths,
) -> None:
    with open_store(tiny_tables.store, read_only=True) as con:
        index = NgramIndex.load(con, 5)
    n = 3 * MIN_SAMPLES_PER_THREAD  # enough for three threads
    a = ExactSampler(index, threads=1).sample(SampleConfig(n=n, seed=9))
    b = ExactSampler(index, threads=3).sample(SampleConfig(n=n, seed=9))
    one_lane = ExactSampler(index, threads=1, lanes=1).sample(SampleConfig(n=n, seed=9))
    c = ExactSampler(index).sample(SampleConfig(n=n, seed=10))
    for name in ("tokens", "examples", "backtracks", "jumps", "steps", "placed"):
        np.testing.assert_array_equal(getattr(a, name), getattr(b, name), err_msg=name)
        np.testing.assert_array_equal(getattr(a, name), getattr(one_lane, name), err_msg=name)
    assert not np.array_equal(a.tokens, c.tokens)
    first = ExactSampler(index).sample(SampleConfig(n=16, seed=9))
    np.testing.assert_array_equal(first.tokens, a.tokens[:16])


def test_budget_failure_is_reported(tmp_path: Path) -> None:
    rng = np.random.default_rng(0)
    index = index_of(tmp_path / "s.duckdb", rng.integers(0, 16, (40, 4, 4)), channels=4, gamma=3)
    batch = ExactSampler(index).sample(SampleConfig(n=100, seed=0, budget=16))
    assert (~batch.ok).any()
    assert set(batch.failure[~batch.ok]) == {FAILED_BUDGET}
    assert (batch.steps[~batch.ok] == 16).all()
    assert batch.tokens.min() >= 0 and batch.tokens.max() < 16  # unfilled positions hold token 0


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
