"""Inception features for FID: what the network is given, and clear errors for bad files."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch

from service.errors import InvalidInputError
from service.evaluation.features import (
    INCEPTION_FEATURES,
    INCEPTION_FILE,
    checked_inception,
    inception_features,
)
from service.evaluation.frechet import (
    frechet_distance,
)
from tests.helpers import PROBES, NoFeaturesFlag, StandInInception


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
    # in order, one image per row; float32's rounding differs with the thread count
    np.testing.assert_allclose(p["min"][:3], [10, 200, 77], rtol=1e-6)
    np.testing.assert_allclose(p["max"][:3], [10, 200, 77], rtol=1e-6)
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
    with pytest.raises(InvalidInputError, match="return_features=True") as exc:
        checked_inception(path)  # before any images: what the report asks first
    _assert_one_line_naming(exc, path)


def test_a_checked_inception_network_gives_the_features_its_file_gives(stand_in: Path) -> None:
    images = np.random.default_rng(0).integers(0, 256, (3, 1, 28, 28), dtype=np.uint8)
    network = checked_inception(stand_in)
    assert np.array_equal(inception_features(network, images), inception_features(stand_in, images))


def test_inception_refuses_bad_images(stand_in: Path) -> None:
    with pytest.raises(InvalidInputError, match="grey or RGB"):
        inception_features(stand_in, np.zeros((2, 2, 28, 28), np.uint8))
    with pytest.raises(InvalidInputError, match="uint8"):
        inception_features(stand_in, np.zeros((2, 1, 28, 28), np.float32))
