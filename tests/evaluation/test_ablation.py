"""The σ ablation (Theorem 3.3) on a real tiny run: fresh decoders on the frozen encoder."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import pytest
import torch

from models.blae_ablation import AblationConfig, retrain_decoder
from service.errors import InvalidInputError
from service.evaluation.ablation import ABLATION_JSON, ABLATION_PLOT, sigma_ablation
from service.run.models import load_blae
from service.run.paths import RunPaths


def test_retraining_the_decoder_leaves_the_encoder_untouched(tiny_run: RunPaths) -> None:
    model = load_blae(tiny_run).model
    before = {k: v.clone() for k, v in model.state_dict().items()}
    images = (torch.rand(64, 1, 28, 28) * 255).to(torch.uint8)
    retrained = retrain_decoder(model, images, "triangular", 2.0, AblationConfig(epochs=1))
    for name, value in retrained.encoder.state_dict().items():
        assert torch.equal(value, before[f"encoder.{name}"]), name
    assert any(  # the decoder is new
        not torch.equal(value, before[f"decoder.{name}"])
        for name, value in retrained.decoder.state_dict().items()
    )
    for name, value in model.state_dict().items():  # and the model it came from is unchanged
        assert torch.equal(value, before[name]), name


def test_psnr_falls_as_sigma_rises(tiny_run: RunPaths, tmp_path: Path) -> None:
    run = RunPaths(tmp_path / "run")
    shutil.copytree(tiny_run.root, run.root)
    weights = run.blae_weights.read_bytes()
    result = sigma_ablation(
        run, sigmas=(3.0, 0.5), noises=("triangular", "gaussian"), images=256, progress=False
    )
    points = {(p["noise"], p["sigma"]): p for p in result["points"]}
    for noise in ("triangular", "gaussian"):
        assert points[(noise, 3.0)]["psnr_noisy"] < points[(noise, 0.5)]["psnr_noisy"] - 1
    assert result["psnr_falls_as_sigma_rises"] == {"triangular": True, "gaussian": True}
    assert json.loads((run.reports / ABLATION_JSON).read_text()) == result
    assert (run.reports / ABLATION_PLOT).read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    assert run.blae_weights.read_bytes() == weights  # the run's model is not rewritten
    with pytest.raises(InvalidInputError, match="noises must be among"):
        sigma_ablation(run, noises=("uniform",), progress=False)
