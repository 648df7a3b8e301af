"""A run knows what its BL-AE was trained on, and refuses to mix that model with other data."""

from __future__ import annotations

import gzip
import json
import struct
from pathlib import Path

import numpy as np
import pytest

from models import BLAETrainConfig
from service.checkpoint import config_path
from service.data.sources import DataSpec
from service.errors import InvalidInputError, RunError
from service.run.build import build_run_tables
from service.run.paths import RunPaths
from service.run.record import read_run_json
from service.run.steps import encode_run
from service.training.autoencoder import train_run_autoencoder

CONFIG = BLAETrainConfig(epochs=1, batch_size=64, seed=0, precision="fp32")


def write_idx_folder(folder: Path, data: DataSpec, *, invert: bool) -> DataSpec:
    """The same images as `data` (inverted or not) as an MNIST-layout IDX folder."""
    images = data.load()
    folder.mkdir(parents=True, exist_ok=True)
    for split, prefix in (("train", "train"), ("test", "t10k")):
        part = images.split(split)
        pixels = 255 - part.images[:, 0] if invert else part.images[:, 0]
        n, h, w = pixels.shape
        body = struct.pack(">IIII", 0x803, n, h, w) + pixels.astype(np.uint8).tobytes()
        (folder / f"{prefix}-images-idx3-ubyte.gz").write_bytes(gzip.compress(body))
        labels = struct.pack(">II", 0x801, n) + part.labels.astype(np.uint8).tobytes()
        (folder / f"{prefix}-labels-idx1-ubyte").write_bytes(labels)
    return DataSpec(f"idx:{folder}")


def train(paths: RunPaths, data: DataSpec, *, resume: bool) -> None:
    train_run_autoencoder(
        paths, data, preset="tiny", train_config=CONFIG, resume=resume, device="cpu", progress=False
    )


@pytest.fixture
def small(fashion_small: DataSpec) -> DataSpec:
    return DataSpec(fashion_small.source, limit=64)


def test_checkpoint_records_source_counts_and_fingerprint(tmp_path: Path, small: DataSpec) -> None:
    paths = RunPaths(tmp_path / "run")
    train(paths, small, resume=False)
    recorded = json.loads(config_path(paths.blae_weights).read_text())["data"]
    assert recorded["source"] == "fashion-mnist" and recorded["limit"] == 64
    assert recorded["train"] == 64 and recorded["test"] == 64
    assert len(recorded["train_sha256"]) == 64
    assert read_run_json(paths)["data"]["train_sha256"] == recorded["train_sha256"]


def test_resume_with_another_source_is_refused(tmp_path: Path, small: DataSpec) -> None:
    paths = RunPaths(tmp_path / "run")
    train(paths, small, resume=False)
    other = write_idx_folder(tmp_path / "inverted", small, invert=True)
    before = paths.run_json.read_text()
    with pytest.raises(InvalidInputError) as refused:
        train(paths, other, resume=True)
    message = str(refused.value)
    assert "\n" not in message and "--no-resume" in message and "--run DIR" in message
    assert "trained on --source fashion-mnist --limit 64 (64 train / 64 test images)" in message
    assert f"not on --source {other.source}" in message
    assert paths.run_json.read_text() == before  # the refused command changed nothing
    train(paths, other, resume=False)  # --no-resume retrains on the new data
    assert read_run_json(paths)["data"]["source"] == other.source


def test_encode_refuses_images_changed_on_disk(tmp_path: Path, small: DataSpec) -> None:
    folder = tmp_path / "digits"
    data = write_idx_folder(folder, small, invert=False)
    paths = RunPaths(tmp_path / "run")
    train(paths, data, resume=False)
    write_idx_folder(folder, small, invert=True)  # same counts, other pixels
    with pytest.raises(InvalidInputError, match="but those images have changed since: retrain"):
        encode_run(paths)
    assert not paths.latents.exists()


def test_build_refuses_latents_of_another_model(tmp_path: Path, small: DataSpec) -> None:
    paths = RunPaths(tmp_path / "run")
    train(paths, small, resume=False)
    encode_run(paths)
    train_run_autoencoder(
        paths,
        small,
        preset="tiny",
        train_config=BLAETrainConfig(epochs=1, batch_size=64, seed=1, precision="fp32"),
        device="cpu",
        progress=False,
    )
    with pytest.raises(RunError, match=r"encoded by another BL-AE .* run `latentgram encode"):
        build_run_tables(paths, (3,), progress=False)
    encode_run(paths)
    assert [t.gamma for t in build_run_tables(paths, (3,), progress=False)] == [3]


def test_checkpoint_without_a_record_is_checked_against_run_json(
    tmp_path: Path, small: DataSpec
) -> None:
    """Checkpoints from before the record existed: run.json's data entry stands in for it."""
    paths = RunPaths(tmp_path / "run")
    train(paths, small, resume=False)
    meta_path = config_path(paths.blae_weights)
    meta = json.loads(meta_path.read_text())
    del meta["data"]
    meta_path.write_text(json.dumps(meta))
    train(paths, small, resume=True)  # same spec and counts: accepted
    with pytest.raises(
        InvalidInputError, match=r"--limit 64 .* not on --source fashion-mnist --limit 32"
    ):
        train(paths, DataSpec(small.source, limit=32), resume=True)
