"""The Fréchet distance of Heusel et al. (2017, "GANs Trained by a Two Time-Scale Update Rule
Converge to a Local Nash Equilibrium") between Gaussians fitted to two feature sets (DESIGN.md §7).

The report takes it in two feature spaces (evaluation/features.py): a classifier trained on the
run's own data set, the "classifier Fréchet distance", which is not FID and is never called so; and
Inception-v3's pool features from the file NVIDIA publishes, which is FID.
"""

from __future__ import annotations

from typing import NamedTuple

import numpy as np
import torch

from service.errors import InvalidInputError


class FeatureStats(NamedTuple):
    """Mean and covariance of a feature set: the Gaussian the Fréchet distance compares."""

    mean: np.ndarray  # (D,) float64
    cov: np.ndarray  # (D, D) float64, unbiased (divided by N − 1)
    samples: int  # N, the number of feature vectors


def feature_stats(features: np.ndarray | torch.Tensor) -> FeatureStats:
    """Mean and covariance of (N, D) features, N ≥ 2, in float64."""
    x = _as_float64(features)
    if x.ndim != 2 or len(x) < 2:
        raise InvalidInputError(
            f"features must be an (N, D) array with N ≥ 2 rows, got shape {tuple(x.shape)}"
        )
    if not np.isfinite(x).all():
        raise InvalidInputError("features contain NaN or infinite values")
    mean = x.mean(axis=0)
    centered = x - mean
    cov = centered.T @ centered / (len(x) - 1)
    return FeatureStats(mean, cov, len(x))


def frechet_distance_from_stats(a: FeatureStats, b: FeatureStats) -> float:
    """d² = ‖μa − μb‖² + Tr(Σa + Σb − 2 (Σa Σb)^½), the squared Fréchet (2-Wasserstein) distance.

    Σa Σb is not symmetric, so its square root is not taken directly (scipy's sqrtm can return
    complex noise). Instead: Σa Σb = √Σa (√Σa Σb) and (√Σa Σb) √Σa = √Σa Σb √Σa share their
    eigenvalues (AB and BA always do), and the latter is symmetric positive semi-definite, so
    Tr((Σa Σb)^½) = Σᵢ √λᵢ(√Σa Σb √Σa), with two symmetric eigendecompositions in float64. This
    holds for singular covariances too (fewer vectors than dimensions).
    """
    if a.mean.shape != b.mean.shape:
        raise InvalidInputError(
            f"feature sets differ in dimension: {a.mean.shape[0]} and {b.mean.shape[0]}"
        )
    diff = a.mean - b.mean
    root_a = _sqrt_psd(a.cov)
    middle = root_a @ b.cov @ root_a
    eigenvalues = np.linalg.eigvalsh((middle + middle.T) / 2)  # symmetrize away rounding
    trace_root = np.sqrt(np.clip(eigenvalues, 0.0, None)).sum()
    distance = diff @ diff + np.trace(a.cov) + np.trace(b.cov) - 2.0 * trace_root
    return max(float(distance), 0.0)  # ≥ 0 in exact arithmetic; rounding can dip just below


def frechet_distance(
    features_a: np.ndarray | torch.Tensor, features_b: np.ndarray | torch.Tensor
) -> float:
    """Squared Fréchet distance between Gaussians fitted to two (N, D) feature sets."""
    return frechet_distance_from_stats(feature_stats(features_a), feature_stats(features_b))


def _sqrt_psd(matrix: np.ndarray) -> np.ndarray:
    """Square root of a symmetric PSD matrix; eigenvalues below 0 (rounding) count as 0."""
    eigenvalues, vectors = np.linalg.eigh((matrix + matrix.T) / 2)
    roots = np.sqrt(np.clip(eigenvalues, 0.0, None))
    return (vectors * roots) @ vectors.T  # V diag(√λ) Vᵀ


def _as_float64(values: np.ndarray | torch.Tensor) -> np.ndarray:
    if isinstance(values, torch.Tensor):
        values = values.detach().cpu().numpy()
    return np.asarray(values, dtype=np.float64)
