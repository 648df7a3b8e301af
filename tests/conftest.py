"""Shared fixtures: small real data and a tiny trained run, built once per session."""

from __future__ import annotations

import os
from pathlib import Path

import numpy as np
import pytest
import torch

from models import TrainConfig
from service.pipeline import DataSpec, encode_run, train_run_autoencoder
from service.run import RunPaths
from service.sources import FASHION_MNIST_DIR

torch.set_num_threads(min(2, os.cpu_count() or 1))


def _require_fashion_mnist() -> None:
    if not Path(FASHION_MNIST_DIR, "train-images-idx3-ubyte.gz").exists():
        pytest.skip("Fashion-MNIST is not installed: `make test` installs dataset-fashion-mnist")


@pytest.fixture(scope="session")
def fashion_small() -> DataSpec:
    """The first 512 train and 512 test images of the real Fashion-MNIST."""
    _require_fashion_mnist()
    return DataSpec("fashion-mnist", limit=512)


@pytest.fixture(scope="session")
def tiny_run(tmp_path_factory: pytest.TempPathFactory, fashion_small: DataSpec) -> RunPaths:
    """A run with a tiny BL-AE trained for 2 epochs and all images encoded."""
    paths = RunPaths(tmp_path_factory.mktemp("run"))
    train_run_autoencoder(
        paths,
        fashion_small,
        preset="tiny",
        train_config=TrainConfig(epochs=2, batch_size=64, seed=0),
        device="cpu",
        progress=False,
    )
    encode_run(paths)
    return paths


@pytest.fixture
def rng() -> np.random.Generator:
    return np.random.default_rng(0)
