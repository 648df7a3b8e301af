"""One checkpoint module for every model: round trips, and one clear error for each bad file."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch
from torch import nn

from models import (
    BLAE,
    PRESETS,
    ARVMConfig,
    BLAETrainConfig,
    Classifier,
    ClassifierConfig,
    GammaARVM,
)
from service.checkpoint import config_path, load_checkpoint, save_checkpoint
from service.errors import InvalidInputError, RunError
from service.files import file_sha256
from service.run.models import load_arvm, load_blae
from service.run.paths import RunPaths
from service.training.autoencoder import save_blae

MODELS: list[tuple[type[nn.Module], object, tuple[int, ...]]] = [
    (BLAE, PRESETS["tiny"], (3, 1, 28, 28)),
    (GammaARVM, ARVMConfig(gamma=3, context_size=4, latent_channels=3, hidden=16), (3, 4)),
    (Classifier, ClassifierConfig(widths=(4, 8), feature_dim=16), (3, 1, 28, 28)),
]


def _input(shape: tuple[int, ...], model: nn.Module) -> torch.Tensor:
    if isinstance(model, GammaARVM):
        return torch.randint(0, 9, shape)  # tokens 0 … 7 and PAD = 8
    return torch.rand(shape)


@pytest.mark.parametrize(("model_class", "config", "shape"), MODELS)
def test_round_trip_reproduces_outputs_and_meta(
    tmp_path: Path, model_class: type[nn.Module], config: object, shape: tuple[int, ...]
) -> None:
    torch.manual_seed(0)
    model = model_class(config).eval()
    weights = tmp_path / "m.safetensors"
    sha = save_checkpoint(weights, model, note="kept", epochs_done=2)
    loaded = load_checkpoint(weights, model_class, remedy="latentgram train")
    assert loaded.sha256 == sha and loaded.meta["note"] == "kept"
    assert loaded.model.config == config and not loaded.model.training
    x = _input(shape, model)
    with torch.no_grad():
        torch.testing.assert_close(loaded.model(x), model(x), rtol=0, atol=0)


def test_blae_checkpoint_keeps_its_training_record(tmp_path: Path) -> None:
    torch.manual_seed(0)
    model = BLAE(PRESETS["tiny"]).eval()
    paths = RunPaths(tmp_path)
    sha = save_blae(paths, model, train_config=BLAETrainConfig(epochs=3), epochs_done=3)
    loaded = load_blae(paths)
    assert loaded.sha256 == sha and loaded.meta["epochs_done"] == 3
    assert BLAETrainConfig.from_dict(loaded.meta["train"]) == BLAETrainConfig(epochs=3)


@pytest.fixture
def saved(tmp_path: Path) -> Path:
    weights = tmp_path / "arvm-g3.safetensors"
    config = ARVMConfig(gamma=3, context_size=4, latent_channels=3, hidden=16)
    save_checkpoint(weights, GammaARVM(config))
    return weights


def _load(weights: Path) -> None:
    load_checkpoint(weights, GammaARVM, remedy="latentgram train-arvm --gamma 3")


def test_missing_files_name_the_command_that_makes_them(saved: Path) -> None:
    config_path(saved).unlink()
    with pytest.raises(RunError, match=r"arvm-g3.json is missing: run `latentgram train-arvm"):
        _load(saved)
    saved.unlink()
    with pytest.raises(RunError, match=r"arvm-g3.safetensors is missing"):
        _load(saved)


def test_corrupt_weights_or_config_are_run_errors(saved: Path) -> None:
    meta = config_path(saved).read_text()
    config_path(saved).write_text("{not json")
    with pytest.raises(RunError, match=r"not a GammaARVM config .* retrain with"):
        _load(saved)
    config_path(saved).write_text(meta)
    saved.write_bytes(b"\0" * 100)
    with pytest.raises(RunError, match="not a safetensors file"):
        _load(saved)


def test_an_older_or_mismatched_checkpoint_says_to_retrain(saved: Path) -> None:
    body = json.loads(config_path(saved).read_text())
    body["config"]["embedding"] = 8  # a field this code does not know: written by another version
    config_path(saved).write_text(json.dumps(body))
    with pytest.raises(RunError, match=r"unknown config fields \['embedding'\].*retrain with"):
        _load(saved)
    del body["config"]["embedding"]
    body["config"]["hidden"] = 32  # the weights were saved with hidden 16
    config_path(saved).write_text(json.dumps(body))
    with pytest.raises(RunError, match=r"does not match .* retrain with `latentgram train-arvm"):
        _load(saved)


def test_a_bad_device_is_a_user_error(saved: Path) -> None:
    with pytest.raises(InvalidInputError, match="device must be auto, cpu, cuda"):
        load_checkpoint(saved, GammaARVM, remedy="x", device="tpu")


def test_an_arvm_of_another_blae_is_refused(tmp_path: Path) -> None:
    """A BL-AE retrained since the γ-ARVM: its tokens mean other things now."""
    paths = RunPaths(str(tmp_path))  # a str root is taken too
    paths.blae_weights.write_bytes(b"the BL-AE of today")
    config = ARVMConfig(gamma=3, context_size=4, latent_channels=3, hidden=16)
    weights = paths.arvm_weights(3, False)
    save_checkpoint(weights, GammaARVM(config), model_sha256=file_sha256(paths.blae_weights))
    assert isinstance(load_arvm(paths, 3), GammaARVM)
    paths.blae_weights.write_bytes(b"the BL-AE retrained")
    with pytest.raises(RunError, match=r"another BL-AE .* run `latentgram train-arvm --gamma 3"):
        load_arvm(paths, 3)
