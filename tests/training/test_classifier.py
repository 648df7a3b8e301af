"""The run's classifier: it learns the data, is seeded, and is saved, reused and rebuilt."""

from __future__ import annotations

from dataclasses import replace
from pathlib import Path

import numpy as np
import pytest

from models import Classifier, ClassifierTrainConfig
from service.checkpoint import config_path
from service.data.sources import DataSpec, ImageSet
from service.errors import InvalidInputError, RunError
from service.evaluation.features import (
    classifier_accuracy,
    classifier_features,
)
from service.evaluation.frechet import (
    frechet_distance,
)
from service.run.paths import RunPaths
from service.run.record import read_run_json
from service.training.classifier import (
    classifier_config_for,
    ensure_classifier,
    fit_classifier,
    load_classifier,
)

QUICK = ClassifierTrainConfig(epochs=3, batch_size=32, seed=0)  # a few hundred images, ~1 s


@pytest.fixture(scope="module")
def fashion(fashion_small: DataSpec) -> ImageSet:
    return fashion_small.load()


@pytest.fixture(scope="module")
def trained(fashion: ImageSet) -> Classifier:
    """A classifier trained on the 512 train images for 3 epochs (~1 s)."""
    return fit_classifier(
        fashion.split("train"), classifier_config_for(fashion), QUICK, progress=False
    )


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
        model = fit_classifier(train, classifier_config_for(fashion), config, progress=False)
        return classifier_features(model, train.images[:16])

    np.testing.assert_array_equal(features(3), features(3))
    assert not np.array_equal(features(3), features(4))


def test_classifier_refuses_bad_inputs(fashion: ImageSet, trained: Classifier) -> None:
    four = fashion.split("train").select(np.arange(4))
    mislabelled = replace(four, labels=np.array([0, 1, 2, 10]))
    with pytest.raises(InvalidInputError, match=r"labels must lie in 0\.\.9"):
        fit_classifier(mislabelled, trained.config, QUICK, progress=False)
    with pytest.raises(InvalidInputError, match="uint8"):
        classifier_features(trained, four.images.astype(np.float32))
    with pytest.raises(InvalidInputError, match="takes 1×28×28 images"):
        classifier_features(trained, np.zeros((2, 3, 28, 28), np.uint8))


def test_run_classifier_saves_loads_and_retrains_on_new_data(
    tmp_path: Path, fashion: ImageSet
) -> None:
    paths = RunPaths(tmp_path / "run")
    data = fashion.select(np.arange(len(fashion)) % 4 == 0)  # 128 train and 128 test images
    first = ensure_classifier(paths, data, train_config=QUICK, device="cpu", progress=False)
    assert first.trained and first.test_accuracy is not None and first.test_accuracy > 0.3
    assert paths.classifier_weights.exists()
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
    weights, meta = paths.classifier_weights, config_path(paths.classifier_weights)
    weights.write_bytes(b"not safetensors")
    with pytest.raises(RunError, match="not a safetensors file"):
        load_classifier(paths)
    meta.write_text("{")
    with pytest.raises(RunError, match="not a Classifier config"):
        load_classifier(paths)
    rebuilt = ensure_classifier(paths, small, device="cpu", progress=False, train_config=config)
    assert rebuilt.trained and load_classifier(paths).sha256 == rebuilt.sha256
