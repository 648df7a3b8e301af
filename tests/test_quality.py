"""Fréchet distance, the project's classifier and the Inception path (service/quality.py)."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch
from torch import nn

from models import Classifier, ClassifierTrainConfig
from service.errors import InvalidInputError, RunError
from service.pipeline import DataSpec
from service.quality import (
    INCEPTION_FEATURES,
    INCEPTION_FILE,
    FeatureStats,
    classifier_accuracy,
    classifier_features,
    classifier_paths,
    ensure_classifier,
    feature_stats,
    frechet_distance,
    frechet_distance_from_stats,
    inception_features,
    load_classifier,
    train_classifier,
)
from service.run import RunPaths, read_run_json
from service.sources import ImageSet

QUICK = ClassifierTrainConfig(epochs=3, batch_size=32, seed=0)  # a few hundred images, ~1 s


# --- Fréchet distance -------------------------------------------------------------------------


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


# --- the classifier ---------------------------------------------------------------------------


@pytest.fixture(scope="module")
def fashion(fashion_small: DataSpec) -> ImageSet:
    return fashion_small.load()


@pytest.fixture(scope="module")
def trained(fashion: ImageSet) -> Classifier:
    """A classifier trained on the 512 train images for 3 epochs (~1 s)."""
    train = fashion.split("train")
    return train_classifier(train.images, train.labels, train_config=QUICK, progress=False)


def test_classifier_learns_fashion_mnist(fashion: ImageSet, trained: Classifier) -> None:
    train, test = fashion.split("train"), fashion.split("test")
    assert classifier_accuracy(trained, test.images, test.labels) > 0.6  # chance: 0.1; got ~0.75
    features = classifier_features(trained, test.images)
    assert features.shape == (len(test), trained.config.feature_dim)
    # in its feature space, test images lie closer to train images than upside-down ones do
    upside_down = np.ascontiguousarray(test.images[:, :, ::-1])
    train_features = classifier_features(trained, train.images)
    near = frechet_distance(train_features, features)
    far = frechet_distance(train_features, classifier_features(trained, upside_down))
    assert near < far


def test_classifier_training_is_seeded(fashion: ImageSet) -> None:
    train = fashion.split("train").select(np.arange(64))

    def features(seed: int) -> np.ndarray:
        config = ClassifierTrainConfig(epochs=1, batch_size=32, seed=seed)
        model = train_classifier(train.images, train.labels, train_config=config, progress=False)
        return classifier_features(model, train.images[:16])

    np.testing.assert_array_equal(features(3), features(3))
    assert not np.array_equal(features(3), features(4))


def test_classifier_refuses_bad_inputs(fashion: ImageSet, trained: Classifier) -> None:
    train = fashion.split("train")
    with pytest.raises(InvalidInputError, match="labels"):
        train_classifier(train.images, train.labels[:10], progress=False)
    with pytest.raises(InvalidInputError, match="uint8"):
        train_classifier(train.images.astype(np.float32), train.labels, progress=False)
    with pytest.raises(InvalidInputError, match=r"labels must lie in 0\.\.9"):
        train_classifier(
            train.images[:4], np.array([0, 1, 2, 10]), config=trained.config, progress=False
        )
    with pytest.raises(InvalidInputError, match="takes 1×28×28 images"):
        classifier_features(trained, np.zeros((2, 3, 28, 28), np.uint8))


def test_run_classifier_saves_loads_and_retrains_on_new_data(
    tmp_path: Path, fashion: ImageSet
) -> None:
    paths = RunPaths(tmp_path / "run")
    data = fashion.select(np.arange(len(fashion)) % 4 == 0)  # 128 train and 128 test images
    first = ensure_classifier(paths, data, train_config=QUICK, device="cpu", progress=False)
    assert first.trained and first.test_accuracy is not None and first.test_accuracy > 0.3
    assert all(p.exists() for p in classifier_paths(paths))
    assert read_run_json(paths)["classifier"]["test_accuracy"] == first.test_accuracy

    again = ensure_classifier(paths, data, progress=False)  # same data: loaded, not trained
    assert not again.trained
    assert (again.test_accuracy, again.sha256) == (first.test_accuracy, first.sha256)
    x = fashion.images[:200]
    np.testing.assert_array_equal(
        classifier_features(first.model, x), classifier_features(again.model, x)
    )
    np.testing.assert_array_equal(
        classifier_features(load_classifier(paths).model, x), classifier_features(first.model, x)
    )

    fewer = data.select(np.arange(len(data)) % 2 == 0)  # other data: trained anew
    other = ensure_classifier(paths, fewer, train_config=QUICK, device="cpu", progress=False)
    assert other.trained and other.data_sha256 != first.data_sha256
    assert load_classifier(paths).sha256 == other.sha256


def test_corrupt_classifier_files_are_run_errors_and_get_rebuilt(
    tmp_path: Path, fashion: ImageSet
) -> None:
    paths = RunPaths(tmp_path)
    with pytest.raises(RunError, match=r"classifier\.safetensors is missing"):
        load_classifier(paths)
    small = fashion.select(np.arange(64))
    config = ClassifierTrainConfig(epochs=1, batch_size=32)
    ensure_classifier(paths, small, train_config=config, device="cpu", progress=False)
    weights, meta = classifier_paths(paths)
    weights.write_bytes(b"not safetensors")
    with pytest.raises(RunError, match="not a safetensors file"):
        load_classifier(paths)
    meta.write_text("{")
    with pytest.raises(RunError, match="not a classifier config"):
        load_classifier(paths)
    rebuilt = ensure_classifier(paths, small, device="cpu", progress=False, train_config=config)
    assert rebuilt.trained and load_classifier(paths).sha256 == rebuilt.sha256


# --- Inception --------------------------------------------------------------------------------

PROBES = ("channels", "height", "width", "min", "max", "channel_spread", "float32", "mean")


class StandInInception(nn.Module):
    """Same call signature as NVIDIA's TorchScript Inception; its "features" describe its input.

    The first columns hold what the network received (see PROBES); the rest are zero. Without
    return_features it returns 1008 logits, as the real one does.
    """

    def forward(self, x: torch.Tensor, return_features: bool = False) -> torch.Tensor:
        b = x.shape[0]
        if not return_features:
            return torch.zeros(b, 1008)
        flat = x.reshape(b, -1)
        spread = (x - x[:, :1]).abs().reshape(b, -1).amax(1)  # 0 when all channels are equal
        is_float32 = 1.0 if x.dtype == torch.float32 else 0.0
        probes = torch.stack(
            [
                torch.full((b,), float(x.shape[1])),
                torch.full((b,), float(x.shape[2])),
                torch.full((b,), float(x.shape[3])),
                flat.amin(1).float(),
                flat.amax(1).float(),
                spread.float(),
                torch.full((b,), is_float32),
                flat.float().mean(1),
            ],
            1,
        )
        return torch.cat([probes, torch.zeros(b, 2048 - probes.shape[1])], 1)


class NoFeaturesFlag(nn.Module):
    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x.mean((2, 3))


@pytest.fixture(scope="module")
def stand_in(tmp_path_factory: pytest.TempPathFactory) -> Path:
    path = tmp_path_factory.mktemp("inception") / "stand-in.pt"
    torch.jit.script(StandInInception()).save(str(path))
    return path


def _probes(features: np.ndarray) -> dict[str, np.ndarray]:
    return {name: features[:, i] for i, name in enumerate(PROBES)}


def test_inception_gets_three_channel_299px_floats_in_0_255(stand_in: Path) -> None:
    grey = np.zeros((5, 1, 28, 28), np.uint8)
    for i, value in enumerate((10, 200, 77)):
        grey[i] = value  # constant images keep their value through any resize
    grey[3, 0, 0, 0], grey[3, 0, 27, 27] = 255, 0  # corners survive a bilinear resize exactly
    grey[3, 0, 1:27, 1:27] = 128
    grey[4] = np.random.default_rng(0).integers(0, 256, (1, 28, 28), dtype=np.uint8)
    features = inception_features(stand_in, grey, batch_size=2)  # three batches: 2, 2, 1
    assert features.shape == (5, INCEPTION_FEATURES) and features.dtype == np.float64
    p = _probes(features)
    np.testing.assert_array_equal(p["channels"], 3)
    np.testing.assert_array_equal(p["height"], 299)
    np.testing.assert_array_equal(p["width"], 299)
    np.testing.assert_array_equal(p["float32"], 1)
    np.testing.assert_array_equal(p["channel_spread"], 0)  # grey repeated to three channels
    np.testing.assert_allclose(p["min"][:3], [10, 200, 77])  # in order, one image per row
    np.testing.assert_allclose(p["max"][:3], [10, 200, 77])
    assert (p["min"][3], p["max"][3]) == (0, 255)  # uint8 range, not [0, 1] or [−1, 1]
    assert 0 <= p["min"][4] < p["max"][4] <= 255
    assert p["mean"][4] == pytest.approx(grey[4].mean(), rel=0.02)


def test_inception_passes_rgb_through_and_computes_fid(stand_in: Path) -> None:
    rng = np.random.default_rng(1)
    rgb = rng.integers(0, 256, (6, 3, 32, 32), dtype=np.uint8)
    p = _probes(inception_features(stand_in, rgb))
    np.testing.assert_array_equal(p["channels"], 3)
    assert (p["channel_spread"] > 0).all()  # distinct channels stay distinct
    darker = (rgb // 2).astype(np.uint8)
    # on the probe columns only: a 2048-d covariance costs seconds of eigendecomposition
    probes = len(PROBES)
    here, there = inception_features(stand_in, rgb), inception_features(stand_in, darker)
    d = frechet_distance(here[:, :probes], there[:, :probes])
    assert d > 1000  # the mean-pixel probe alone differs by ~64 between the sets (d ≈ 4000)


def _assert_one_line_naming(exc: pytest.ExceptionInfo[InvalidInputError], path: Path) -> None:
    message = str(exc.value)
    assert "\n" not in message
    assert str(path) in message
    assert INCEPTION_FILE in message and "TorchScript" in message


@pytest.mark.parametrize("content", [None, b"", b"definitely not a zip archive", "state_dict"])
def test_missing_or_corrupt_inception_file_is_one_line_error(
    tmp_path: Path, content: bytes | str | None
) -> None:
    path = tmp_path / INCEPTION_FILE
    if content == "state_dict":  # a real torch file, but weights, not a TorchScript network
        torch.save({"weight": torch.zeros(3)}, path)
    elif isinstance(content, bytes):
        path.write_bytes(content)
    images = np.zeros((2, 1, 28, 28), np.uint8)
    with pytest.raises(InvalidInputError) as exc:
        inception_features(path, images)
    _assert_one_line_naming(exc, path)


def test_torchscript_without_inception_signature_is_refused(tmp_path: Path) -> None:
    path = tmp_path / "other.pt"
    torch.jit.script(NoFeaturesFlag()).save(str(path))
    with pytest.raises(InvalidInputError, match="return_features=True") as exc:
        inception_features(path, np.zeros((2, 1, 28, 28), np.uint8))
    _assert_one_line_naming(exc, path)


def test_inception_refuses_bad_images(stand_in: Path) -> None:
    with pytest.raises(InvalidInputError, match="grey or RGB"):
        inception_features(stand_in, np.zeros((2, 2, 28, 28), np.uint8))
    with pytest.raises(InvalidInputError, match="uint8"):
        inception_features(stand_in, np.zeros((2, 1, 28, 28), np.float32))
