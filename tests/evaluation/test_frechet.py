"""The Fréchet distance against closed forms and a second algorithm."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from service.errors import InvalidInputError
from service.evaluation.frechet import (
    FeatureStats,
    feature_stats,
    frechet_distance,
    frechet_distance_from_stats,
)


def _random_spd(rng: np.random.Generator, dim: int) -> np.ndarray:
    root = rng.normal(size=(dim, dim))
    return root @ root.T / dim + 0.3 * np.eye(dim)


def _trace_sqrt_denman_beavers(a: np.ndarray, b: np.ndarray, steps: int = 50) -> float:
    """Tr((AB)^½) by the Denman–Beavers iteration on the non-symmetric product itself.

    A different route from the engine's (eigendecompositions of √A B √A): Y → (AB)^½ for any
    matrix with no eigenvalue on the closed negative real axis, which AB with A, B ≻ 0 satisfies.
    """
    y, z = a @ b, np.eye(len(a))
    for _ in range(steps):
        y, z = (y + np.linalg.inv(z)) / 2, (z + np.linalg.inv(y)) / 2
    return float(np.trace(y))


@pytest.mark.parametrize("dim", [1, 3, 16])
def test_frechet_matches_closed_form_for_diagonal_gaussians(
    rng: np.random.Generator, dim: int
) -> None:
    mean_a, mean_b = rng.normal(size=dim), rng.normal(size=dim)
    var_a, var_b = rng.uniform(0.1, 3.0, dim), rng.uniform(0.1, 3.0, dim)
    a = FeatureStats(mean_a, np.diag(var_a), 100)
    b = FeatureStats(mean_b, np.diag(var_b), 100)
    expected = ((mean_a - mean_b) ** 2).sum() + ((np.sqrt(var_a) - np.sqrt(var_b)) ** 2).sum()
    assert frechet_distance_from_stats(a, b) == pytest.approx(expected, rel=1e-10, abs=1e-12)


@pytest.mark.parametrize("dim", [2, 5, 12])
def test_frechet_matches_denman_beavers_for_full_covariances(
    rng: np.random.Generator, dim: int
) -> None:
    cov_a, cov_b = _random_spd(rng, dim), _random_spd(rng, dim)
    mean_a, mean_b = rng.normal(size=dim), rng.normal(size=dim)
    expected = (
        ((mean_a - mean_b) ** 2).sum()
        + np.trace(cov_a)
        + np.trace(cov_b)
        - 2 * _trace_sqrt_denman_beavers(cov_a, cov_b)
    )
    got = frechet_distance_from_stats(
        FeatureStats(mean_a, cov_a, 50), FeatureStats(mean_b, cov_b, 50)
    )
    assert got == pytest.approx(expected, rel=1e-8)


def test_frechet_of_samples_uses_their_mean_and_unbiased_covariance(
    rng: np.random.Generator,
) -> None:
    x = rng.normal(size=(300, 4)) @ rng.normal(size=(4, 4))
    y = rng.normal(size=(200, 4)) * 2 + 1
    cov_x, cov_y = np.cov(x, rowvar=False), np.cov(y, rowvar=False)
    expected = (
        ((x.mean(0) - y.mean(0)) ** 2).sum()
        + np.trace(cov_x)
        + np.trace(cov_y)
        - 2 * _trace_sqrt_denman_beavers(cov_x, cov_y)
    )
    assert frechet_distance(x, y) == pytest.approx(expected, rel=1e-8)
    assert frechet_distance(torch.from_numpy(x).float(), y) == pytest.approx(expected, rel=1e-5)


def test_frechet_is_symmetric_zero_on_itself_and_rotation_invariant(
    rng: np.random.Generator,
) -> None:
    x = rng.normal(size=(400, 8)) @ rng.normal(size=(8, 8))
    y = rng.standard_t(df=5, size=(300, 8)) + 0.5
    d = frechet_distance(x, y)
    assert d > 0.1
    assert frechet_distance(y, x) == pytest.approx(d, rel=1e-9)
    assert frechet_distance(x, x) == pytest.approx(0.0, abs=1e-9 * np.trace(np.cov(x.T)))
    rotation, _ = np.linalg.qr(rng.normal(size=(8, 8)))
    assert frechet_distance(x @ rotation, y @ rotation) == pytest.approx(d, rel=1e-8)


def test_frechet_handles_fewer_vectors_than_dimensions(rng: np.random.Generator) -> None:
    """Singular covariances (N < D, as with few samples in 2048-d) stay finite and ≥ 0."""
    x, y = rng.normal(size=(10, 64)), rng.normal(size=(12, 64)) + 0.2
    cov_x, cov_y = np.cov(x, rowvar=False), np.cov(y, rowvar=False)
    assert np.linalg.matrix_rank(cov_x) < 64
    d = frechet_distance(x, y)
    assert np.isfinite(d) and d > 0
    assert frechet_distance(y, x) == pytest.approx(d, rel=1e-6)
    assert frechet_distance(x, x) == pytest.approx(0.0, abs=1e-8 * np.trace(cov_x))
    # the square root of a rank-deficient product still matches a regularized brute force
    eps = 1e-7
    reference = (
        ((x.mean(0) - y.mean(0)) ** 2).sum()
        + np.trace(cov_x)
        + np.trace(cov_y)
        - 2 * _trace_sqrt_denman_beavers(cov_x + eps * np.eye(64), cov_y + eps * np.eye(64), 80)
    )
    assert d == pytest.approx(reference, rel=1e-3)


@pytest.mark.parametrize(
    ("a", "b", "match"),
    [
        (np.zeros((5, 3)), np.zeros((5, 4)), "differ in dimension"),
        (np.zeros((1, 3)), np.zeros((5, 3)), "N ≥ 2"),
        (np.zeros(5), np.zeros(5), "N ≥ 2"),
        (np.full((4, 2), np.nan), np.zeros((4, 2)), "NaN"),
    ],
)
def test_frechet_refuses_bad_feature_sets(a: np.ndarray, b: np.ndarray, match: str) -> None:
    with pytest.raises(InvalidInputError, match=match):
        frechet_distance(a, b)


def test_feature_stats_match_numpy(rng: np.random.Generator) -> None:
    x = rng.normal(size=(50, 6))
    stats = feature_stats(x)
    np.testing.assert_allclose(stats.mean, x.mean(0), rtol=1e-12)
    np.testing.assert_allclose(stats.cov, np.cov(x, rowvar=False), rtol=1e-10)
    assert stats.samples == 50
