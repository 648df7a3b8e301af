"""γ-ARVM: KL training on histograms, checkpoints, and the backoff / hybrid / neural modes."""

from pathlib import Path

import numpy as np
import pytest
import torch
from ngram_helpers import brute_force_histograms, latents_from_tokens, window_at

from models.arvm import ARVMConfig, GammaARVM
from models.arvm_train import ARVMTrainConfig, evaluate_kl, train_arvm
from service.arvm_training import latent_histograms, load_arvm, save_arvm, table_histograms
from service.errors import InvalidInputError
from service.generation import Generator
from service.index import NgramIndex
from service.run import RunPaths
from service.sampler import NEURAL, SampleConfig
from service.store import build_table, open_store
from service.windows import context_size

CHANNELS, GRID = 2, (3, 4)


@pytest.fixture(scope="module")
def small(tmp_path_factory: pytest.TempPathFactory):
    """A γ=3 and γ=5 table over 40 random 3×4 grids of 2-bit tokens, and a trained γ=5 ARVM."""
    rng = np.random.default_rng(0)
    tokens = rng.integers(0, 1 << CHANNELS, (40, *GRID))
    latents = latents_from_tokens(tokens, CHANNELS)
    store = tmp_path_factory.mktemp("arvm") / "s.duckdb"
    with open_store(store) as con:
        infos = {g: build_table(con, latents, gamma=g) for g in (3, 5)}
        hists = {g: table_histograms(con, infos[g]) for g in (3, 5)}
        indexes = {g: NgramIndex.load(con, g) for g in (3, 5)}
    torch.manual_seed(0)
    net = GammaARVM(ARVMConfig(gamma=5, context_size=12, latent_channels=CHANNELS, hidden=128))
    train_arvm(net, hists[5], ARVMTrainConfig(epochs=200, batch_size=32, lr=3e-3))
    return tokens, latents, hists, indexes, net.eval()


def test_table_histograms_match_numpy_histograms(small) -> None:
    """The DuckDB read path and the numpy path give the same contexts and distributions."""
    _, latents, hists, _, _ = small
    from_numpy = latent_histograms(latents, 3, positional=False)
    a, b = hists[3], from_numpy
    assert len(a) == len(b) and torch.equal(a.weights.sort().values, b.weights.sort().values)
    assert _as_dict(a) == _as_dict(b)


def _as_dict(h) -> dict:
    """context → sorted (token, probability) pairs."""
    out = {}
    for m in range(len(h)):
        rows = range(int(h.starts[m]), int(h.starts[m + 1]))
        pairs = sorted((int(h.tokens[r]), round(float(h.probs[r]), 6)) for r in rows)
        out[tuple(h.contexts[m].tolist())] = pairs
    return out


def test_trained_network_matches_the_histograms(small) -> None:
    _, _, hists, _, net = small
    kl = evaluate_kl(net, hists[5])
    untrained = evaluate_kl(GammaARVM(net.config), hists[5])
    assert kl < 0.02, f"count-weighted KL(q‖p) {kl:.4f} should be below 0.02"
    assert untrained > 50 * kl


def test_checkpoint_reproduces_logits_exactly(tmp_path: Path, small) -> None:
    _, _, hists, _, net = small
    paths = RunPaths(tmp_path)
    save_arvm(paths, net, ARVMTrainConfig(), table_id=1)
    loaded = load_arvm(paths, 5)
    assert loaded.config == net.config
    contexts = hists[5].contexts[:50]
    with torch.no_grad():
        torch.testing.assert_close(loaded(contexts), net(contexts), rtol=0, atol=0)
    with pytest.raises(Exception, match="train-arvm"):
        load_arvm(paths, 3)


def _generator(small) -> Generator:
    _, _, _, indexes, net = small
    return Generator((CHANNELS, *GRID), indexes, {5: net})


def test_hybrid_uses_the_table_where_the_context_is_known(small) -> None:
    tokens, _, _, _, _ = small
    seen = brute_force_histograms(tokens, np.arange(len(tokens)), 5, pad=1 << CHANNELS)
    batch = _generator(small).sample(5, "hybrid", SampleConfig(n=300, seed=3))
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


def test_backoff_answers_with_the_largest_gamma_that_knows(small) -> None:
    tokens, _, _, _, _ = small
    seen = {g: brute_force_histograms(tokens, np.arange(40), g, 1 << CHANNELS) for g in (3, 5)}
    batch = _generator(small).sample(5, "backoff", SampleConfig(n=200, seed=4))
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
def test_same_seed_same_samples_in_every_mode(small, mode: str) -> None:
    gen = _generator(small)
    a = gen.sample(5, mode, SampleConfig(n=40, seed=11))
    b = gen.sample(5, mode, SampleConfig(n=40, seed=11))
    c = gen.sample(5, mode, SampleConfig(n=40, seed=12))
    np.testing.assert_array_equal(a.tokens, b.tokens)
    np.testing.assert_array_equal(a.answered_by, b.answered_by)
    assert not np.array_equal(a.tokens, c.tokens)
    if mode == "neural":
        assert (a.answered_by == NEURAL).all()


def test_failed_exact_samples_are_completed_in_hybrid_mode(small) -> None:
    gen = _generator(small)
    config = SampleConfig(n=100, seed=5, budget=12)
    exact = gen.sample(5, "exact", config)
    assert not exact.ok.all()
    done = gen.sample(5, "exact", config, complete_with_hybrid=True)
    assert done.ok.all()
    np.testing.assert_array_equal(done.tokens[exact.ok], exact.tokens[exact.ok])
    for i in np.flatnonzero(~exact.ok):  # the exact prefix is kept, the rest comes after it
        kept = exact.placed[i]
        flat_done, flat_exact = done.tokens[i].ravel(), exact.tokens[i].ravel()
        np.testing.assert_array_equal(flat_done[:kept], flat_exact[:kept])
        assert (done.answered_by[i].ravel()[:kept] == 5).all()


def test_bad_mode_or_missing_network(small) -> None:
    _, _, _, indexes, _ = small
    gen = Generator((CHANNELS, *GRID), indexes, {})
    with pytest.raises(InvalidInputError, match="mode must be one of"):
        gen.sample(5, "dream", SampleConfig(n=2))
    with pytest.raises(InvalidInputError, match="no γ-ARVM trained for gamma=5"):
        gen.sample(5, "hybrid", SampleConfig(n=2))
    with pytest.raises(InvalidInputError, match="no table built for gamma=7"):
        gen.sample(7, "exact", SampleConfig(n=2))
    assert context_size(5) == 12
