"""Real training runs on a small slice of the real Fashion-MNIST."""

import json
import logging

import numpy as np
import pytest
import torch

from models import BLAE, BLAETrainConfig, blae_preset, evaluate_blae, train_blae
from models.blae_train import polish_decoder
from service.data.sources import DataSpec
from service.run.models import load_blae
from service.run.paths import RunPaths
from service.run.record import read_run_json
from service.training.autoencoder import AutoencoderTraining, train_run_autoencoder


def test_noise_drives_codes_binary(fashion_small: DataSpec) -> None:
    """Same model, same data: with noise on the codes brate rises; without noise it does not."""
    images = torch.from_numpy(fashion_small.load().split("train").images)
    config = BLAETrainConfig(epochs=3, batch_size=64, precision="fp32", code_gain_start=None)
    results = {}
    for sigma in (1.25, 0.0):
        torch.manual_seed(0)
        model = BLAE(blae_preset("tiny", code_gain=1.0, sigma=sigma))
        before = evaluate_blae(model, images)
        train_blae(model, images, config)
        results[sigma] = (before, evaluate_blae(model, images))
    before, after = results[1.25]
    assert after.brate > before.brate + 0.2
    assert after.brate > results[0.0][1].brate + 0.15
    assert after.psnr_binary > before.psnr_binary + 3


def test_tiny_run_writes_metrics_curve_and_checkpoint(tiny_run: RunPaths) -> None:
    records = [json.loads(x) for x in tiny_run.blae_metrics.read_text().splitlines()]
    assert [r["epoch"] for r in records] == [1, 2]
    assert {"psnr_binary", "brate", "mse", "distinct_codes"} <= set(records[-1]["test"])
    assert [r["collapse"] for r in records] == [None, None]  # a healthy run is not flagged
    assert tiny_run.blae_curve.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    run = read_run_json(tiny_run)
    assert run["blae"]["weights_sha256"] == load_blae(tiny_run).sha256
    assert run["blae"]["collapse"] is None and run["blae"]["test_metrics"]["distinct_codes"] > 0.9
    assert run["data"]["train"] == 512 and run["data"]["test"] == 512
    assert "torch" in run["versions"]


def test_resume_continues_exactly(tmp_path, fashion_small: DataSpec) -> None:
    """Two epochs in one go equal one epoch, a stop, and a resumed second epoch."""
    data = DataSpec(fashion_small.source, limit=128)
    config = BLAETrainConfig(epochs=2, batch_size=32, seed=3, precision="fp32")
    straight, halted = RunPaths(tmp_path / "a"), RunPaths(tmp_path / "b")
    kwargs = dict(preset="tiny", device="cpu", progress=False)
    train_run_autoencoder(straight, data, train_config=config, **kwargs)
    train_run_autoencoder(halted, data, train_config=config, stop_epoch=1, **kwargs)
    train_run_autoencoder(halted, data, train_config=config, resume=True, **kwargs)
    a, b = load_blae(straight).model, load_blae(halted).model
    for (name, pa), pb in zip(a.state_dict().items(), b.state_dict().values(), strict=True):
        np.testing.assert_array_equal(pa.numpy(), pb.numpy(), err_msg=name)
    assert len(halted.blae_metrics.read_text().splitlines()) == 2


def test_checkpoints_every_n_epochs_and_a_resume_retrains_from_the_last(
    tmp_path, fashion_small: DataSpec
) -> None:
    """With checkpoint_every=2 the weights are saved after epochs 2 and 3 (the last) only; the
    record of an epoch trained after the last checkpoint, as a killed run leaves it, is dropped
    when the run resumes from that checkpoint and trains the epoch again."""
    data = DataSpec(fashion_small.source, limit=64)
    config = BLAETrainConfig(epochs=3, batch_size=32, seed=3, precision="fp32")
    kwargs = dict(preset="tiny", device="cpu", progress=False, checkpoint_every=2)
    whole = RunPaths(tmp_path / "whole")
    train_run_autoencoder(whole, data, train_config=config, **kwargs)
    records = [json.loads(line) for line in whole.blae_metrics.read_text().splitlines()]
    assert [r["checkpoint"] for r in records] == [False, True, True]
    assert load_blae(whole).meta["epochs_done"] == 3

    killed = RunPaths(tmp_path / "killed")
    train_run_autoencoder(killed, data, train_config=config, stop_epoch=2, **kwargs)
    assert load_blae(killed).meta["epochs_done"] == 2
    with killed.blae_metrics.open("a") as f:  # epoch 3 recorded, killed before its checkpoint
        f.write(json.dumps({**records[-1], "elapsed_s": -1.0}) + "\n")
    train_run_autoencoder(killed, data, train_config=config, resume=True, **kwargs)
    resumed = [json.loads(line) for line in killed.blae_metrics.read_text().splitlines()]
    assert [r["epoch"] for r in resumed] == [1, 2, 3]
    assert all(r["elapsed_s"] >= 0 for r in resumed)
    assert load_blae(killed).sha256 == load_blae(whole).sha256


def test_resume_without_a_checkpoint_says_it_starts_afresh(
    tmp_path, fashion_small: DataSpec, caplog: pytest.LogCaptureFixture
) -> None:
    data = DataSpec(fashion_small.source, limit=64)
    config = BLAETrainConfig(epochs=1, batch_size=32, seed=7, precision="fp32")
    with caplog.at_level(logging.WARNING, logger="service.training.autoencoder"):
        train_run_autoencoder(
            RunPaths(tmp_path / "r"), data, preset="tiny", train_config=config, resume=True,
            device="cpu", progress=False,
        )  # fmt: skip
    assert any("no checkpoint to resume" in r.message for r in caplog.records)


def test_same_seed_same_weights(tmp_path, fashion_small: DataSpec) -> None:
    data = DataSpec(fashion_small.source, limit=64)
    config = BLAETrainConfig(epochs=1, batch_size=32, seed=7, precision="fp32")
    runs = [RunPaths(tmp_path / str(i)) for i in range(2)]
    for paths in runs:
        train_run_autoencoder(
            paths, data, preset="tiny", train_config=config, device="cpu", progress=False
        )
    assert load_blae(runs[0]).sha256 == load_blae(runs[1]).sha256


@pytest.mark.gpu
@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs CUDA")
def test_cuda_training_step_with_autocast(fashion_small: DataSpec) -> None:
    images = torch.from_numpy(fashion_small.load().split("train").images[:256])
    model = BLAE(blae_preset("tiny")).cuda()
    train_blae(model, images, BLAETrainConfig(epochs=1, batch_size=64, precision="auto"))
    assert evaluate_blae(model, images).brate > 0


def test_source_without_test_split(tmp_path, fashion_small: DataSpec) -> None:
    """Training on train images only records no test figures, and does not divide by zero."""
    images = fashion_small.load().split("train")
    paths = RunPaths(tmp_path)
    training = AutoencoderTraining(
        paths, images, blae_preset("tiny"), BLAETrainConfig(epochs=1, batch_size=64)
    )
    summary = training.run(resume=False, device="cpu", progress=False, stop_epoch=None)
    assert summary.test is None and summary.train.brate > 0
    assert json.loads(paths.blae_metrics.read_text())["test"] is None
    assert paths.blae_curve.exists()


def test_code_gain_anneals_to_the_model_gain(fashion_small: DataSpec) -> None:
    """With the gain annealed from 5 to 10 the codes end more binary than at a constant 5,
    and the sign of each code (what is stored) does not depend on the gain at all."""
    images = torch.from_numpy(fashion_small.load().split("train").images)
    brates = {}
    for start in (5.0, None):
        torch.manual_seed(0)
        model = BLAE(blae_preset("tiny", code_gain=10.0 if start else 5.0))
        train_blae(model, images, BLAETrainConfig(epochs=2, batch_size=64, code_gain_start=start))
        brates[start] = evaluate_blae(model, images).brate
        with torch.no_grad():
            x = images[:64].float() / 255
            assert torch.equal(model.encode(x) > 0, model.encode(x, gain=1.0) > 0)
    assert brates[5.0] > brates[None]


def test_a_polish_longer_than_an_epoch_passes_over_the_images_again() -> None:
    """decoder_polish = 2.5 is two and a half epochs of decoder-only steps, each image seen in
    every pass (it once stopped after one pass, whatever the share asked for)."""
    torch.manual_seed(0)
    model = BLAE(blae_preset("tiny"))
    images = torch.randint(0, 256, (40, 1, 28, 28), dtype=torch.uint8)
    config = BLAETrainConfig(epochs=1, batch_size=8, decoder_polish=2.5, precision="fp32")
    encoder = {k: v.clone() for k, v in model.encoder.state_dict().items()}
    steps: list[int] = []
    polish_decoder(model, images, config, on_step=lambda step, loss: steps.append(step))
    assert steps == list(range(config.polish_steps(len(images)))) and len(steps) == 13
    for name, value in model.encoder.state_dict().items():  # the decoder alone trains
        assert torch.equal(value, encoder[name]), name
