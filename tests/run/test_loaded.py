"""A run's nearest-image index: its training split, reconstructions and their cache."""

import math
import shutil
from pathlib import Path

import numpy as np
import pytest
import torch

from models import BLAETrainConfig
from service.data.parquet import read_images, read_latents
from service.errors import RunError
from service.evaluation.nearest import MEMORIZED_PSNR_DB, NearestIndex
from service.evaluation.pixels import PSNR_CAP_DB
from service.evaluation.reconstructions import RECONSTRUCTIONS_PREFIX
from service.latents.codec import decode_packed
from service.run.loaded import load_nearest_index
from service.run.models import load_blae
from service.run.paths import RunPaths
from service.run.steps import encode_run
from service.training.autoencoder import save_blae


def psnr(error: int, values: int) -> float:
    mse = error / (255**2 * values)
    return PSNR_CAP_DB if mse == 0 else min(PSNR_CAP_DB, 10 * math.log10(1 / mse))


@pytest.fixture(scope="module")
def run_copy(tmp_path_factory: pytest.TempPathFactory, tiny_run: RunPaths) -> RunPaths:
    """The session's tiny run, copied: the index writes its reconstruction cache there."""
    paths = RunPaths(tmp_path_factory.mktemp("nearest") / "run")
    shutil.copytree(tiny_run.root, paths.root)
    return paths


@pytest.fixture(scope="module")
def run_index(run_copy: RunPaths) -> NearestIndex:
    return load_nearest_index(run_copy)


def test_planted_training_image_is_found_as_a_memorized_exact_copy(
    run_copy: RunPaths, run_index: NearestIndex
) -> None:
    ids, images = read_images(run_copy.images)
    latents = read_latents(run_copy.latents)
    train = np.flatnonzero(images.splits == "train")
    assert len(run_index) == len(train) == 512
    planted = train[123]
    found = run_index.by_pixels(images.images[[planted]], 3)  # bits through the BL-AE
    best = found.hits(0)[0]
    assert best.id == ids[planted] and best.label == images.labels[planted]
    assert best.label_name == images.class_names[best.label]
    assert best.psnr == PSNR_CAP_DB and best.memorized
    assert best.hamming == 0 and best.exact_copy
    model = load_blae(run_copy).model
    reconstruction = decode_packed(model, latents.packed[[planted]])
    error = int(((reconstruction.astype(int) - images.images[planted].astype(int)) ** 2).sum())
    assert best.psnr_reconstruction == pytest.approx(psnr(error, 784), abs=0.05)
    assert best.psnr_reconstruction < PSNR_CAP_DB  # a decoded copy is never an exact copy
    by_latent = run_index.by_latents(latents.packed[[planted]], 3)
    assert by_latent.hamming[0, 0] == 0 and by_latent.exact_copy[0, 0]
    row = np.searchsorted(run_index.ids, by_latent.ids[0, 0])
    np.testing.assert_array_equal(run_index.packed[row], latents.packed[planted])
    # The decoded query is the reconstruction of the same latent, up to a decode's rounding
    # (a pixel may differ by 1 between batch sizes).
    assert by_latent.psnr_reconstruction[0, 0] > 60


def test_new_random_image_is_not_memorized(run_index: NearestIndex) -> None:
    noise = np.random.default_rng(5).integers(0, 256, (1, 1, 28, 28), dtype=np.uint8)
    found = run_index.by_pixels(noise, 5)
    assert not found.memorized.any() and (found.psnr < MEMORIZED_PSNR_DB).all()
    assert np.all(np.diff(found.psnr[0]) <= 0)  # best first


def test_run_index_holds_the_training_split_with_its_reconstructions(
    run_copy: RunPaths, run_index: NearestIndex
) -> None:
    latents = read_latents(run_copy.latents)
    train = latents.select(latents.splits == "train")
    np.testing.assert_array_equal(run_index.ids, np.sort(train.ids))
    model = load_blae(run_copy).model
    expected = decode_packed(model, train.packed[np.argsort(train.ids)])
    np.testing.assert_array_equal(run_index.reconstructions, expected.reshape(len(expected), -1))


def cache_files(paths: RunPaths) -> list[Path]:
    return sorted(paths.root.glob(f"{RECONSTRUCTIONS_PREFIX}*.npy"))


def test_reconstruction_cache_is_reused_and_invalidated_by_another_blae(
    tmp_path: Path, tiny_run: RunPaths
) -> None:
    paths = RunPaths(tmp_path / "run")
    shutil.copytree(tiny_run.root, paths.root)
    load_nearest_index(paths)
    (first,) = cache_files(paths)
    marked = np.load(first)
    marked[:, :, 0, 0] = 77  # a change a fresh decode would not make
    np.save(first, marked)
    assert np.all(load_nearest_index(paths).reconstructions[:, 0] == 77)  # read, not decoded

    checkpoint = load_blae(paths)
    with torch.no_grad():
        next(checkpoint.model.decoder.parameters()).add_(0.5)
    train_config = BLAETrainConfig.from_dict(checkpoint.meta["train"])
    save_blae(paths, checkpoint.model, train_config=train_config, epochs_done=2)
    with pytest.raises(RunError, match="encoded by another BL-AE"):
        load_nearest_index(paths)
    encode_run(paths)
    index = load_nearest_index(paths)
    (second,) = cache_files(paths)
    assert second != first  # the stale file is gone
    latents = read_latents(paths.latents)
    train = latents.select(latents.splits == "train")
    expected = decode_packed(load_blae(paths).model, train.packed[np.argsort(train.ids)])
    np.testing.assert_array_equal(index.reconstructions, expected.reshape(len(expected), -1))
