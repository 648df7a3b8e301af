"""Shared fixtures: small real data and a tiny trained run, built once per session."""

from __future__ import annotations

import os
import shutil
from collections.abc import Iterator
from pathlib import Path

import numpy as np
import pytest
import torch
from live_server import LiveServer, start_server, wait_ready

from models import TrainConfig
from models.arvm_train import ARVMTrainConfig
from service.arvm_training import train_run_arvm
from service.pipeline import DataSpec, build_run_tables, encode_run, train_run_autoencoder
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


@pytest.fixture(scope="session")
def prepared_run(tmp_path_factory: pytest.TempPathFactory, tiny_run: RunPaths) -> RunPaths:
    """A copy of the tiny run with tables γ = 3, 5 (and positional 5) and a γ-ARVM for γ = 5."""
    paths = RunPaths(tmp_path_factory.mktemp("prepared") / "run")
    shutil.copytree(tiny_run.root, paths.root)
    build_run_tables(paths, (3, 5), progress=False)
    build_run_tables(paths, (5,), positional=True, progress=False)
    train_run_arvm(
        paths, 5, config=ARVMTrainConfig(epochs=1, batch_size=256), hidden=64, progress=False
    )
    return paths


@pytest.fixture(scope="session")
def live_server(prepared_run: RunPaths) -> Iterator[LiveServer]:
    """The real app under uvicorn on loopback, serving the prepared tiny run, ready."""
    for server in start_server(prepared_run):
        wait_ready(server)
        yield server
