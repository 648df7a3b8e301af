"""Shared fixtures: small real data and a tiny trained run, built once per session."""

from __future__ import annotations

import os
import shutil
from collections.abc import Iterator
from pathlib import Path

import numpy as np
import pytest
import torch

from models import ARVMConfig, ARVMTrainConfig, BLAETrainConfig, GammaARVM
from models.arvm_train import fit_arvm
from service.data.sources import FASHION_MNIST_DIR, DataSpec
from service.ngram.build import build_table
from service.ngram.histograms import table_histograms
from service.ngram.index import NgramIndex
from service.ngram.store import open_store
from service.run.build import build_run_tables
from service.run.paths import RunPaths
from service.run.steps import encode_run
from service.training.arvm import histogram_set, recipe, train_run_arvm
from service.training.autoencoder import train_run_autoencoder
from tests.helpers import SMALL_CHANNELS, SMALL_GRID, SmallTables, grids_from_tokens
from tests.live_server import LiveServer, start_server, wait_ready

# Each of pytest-xdist's workers gets its share of the cores: two workers of two threads each
# on two cores made every training test twice as slow.
_WORKERS = int(os.environ.get("PYTEST_XDIST_WORKER_COUNT", "1"))
torch.set_num_threads(max(1, min(2, os.cpu_count() or 1) // _WORKERS))


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
        train_config=BLAETrainConfig(epochs=2, batch_size=64, seed=0),
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
    quick = recipe("fallback", max_epochs=1, batch_size=256, hidden=64)
    train_run_arvm(paths, 5, use=quick, progress=False)
    return paths


@pytest.fixture(scope="session")
def live_server(prepared_run: RunPaths) -> Iterator[LiveServer]:
    """The real app under uvicorn on loopback, serving the prepared tiny run, ready."""
    for server in start_server(prepared_run):
        wait_ready(server)
        yield server


@pytest.fixture(scope="session")
def small_tables(tmp_path_factory: pytest.TempPathFactory) -> SmallTables:
    rng = np.random.default_rng(0)
    grids = grids_from_tokens(rng.integers(0, 1 << SMALL_CHANNELS, (40, *SMALL_GRID)), 2)
    with open_store(tmp_path_factory.mktemp("small") / "s.duckdb") as con:
        infos = {g: build_table(con, grids, gamma=g) for g in (3, 5)}
        histograms = {g: table_histograms(con, infos[g]) for g in (3, 5)}
        indexes = {g: NgramIndex.load(con, g) for g in (3, 5)}
    torch.manual_seed(0)
    config = ARVMConfig(gamma=5, context_size=12, latent_channels=SMALL_CHANNELS, hidden=64)
    net = GammaARVM(config)
    memorize = ARVMTrainConfig(use="memorizer", max_epochs=300, batch_size=64, lr=3e-3)
    fit_arvm(net, histogram_set(histograms[5]), memorize)
    return SmallTables(grids, histograms, indexes, net.eval())
