"""Every BL-AE preset trains on real images without collapsing: the paper presets once
collapsed to one code in their first epoch, and nothing said so. One pass over 1,000
Fashion-MNIST images, 125 steps of 8, at the preset's own learning rate must leave distinct
codes for at least 90 % of them and reconstructions well above the mean image (paper-t4 at
2e-3 fails both: 52 % distinct, 6.7 dB against the mean image's 10.6)."""

from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F

from models import (
    BLAE,
    PRESETS,
    BLAEConfig,
    BLAETrainConfig,
    blae_preset,
    collapse_reason,
    evaluate_blae,
    train_blae,
)

BATCH, EPOCHS = 8, 1  # 125 steps of the 1,000 images; paper-t4 at 2e-3 collapses in 64


def shaped_for(config: BLAEConfig, grey: torch.Tensor) -> torch.Tensor:
    """The grey 28×28 images as the preset's own images: RGB copies, padded to its size."""
    images = grey.repeat(1, config.image_channels, 1, 1)
    pad = config.image_size - images.shape[-1]
    return F.pad(images, (pad // 2, pad - pad // 2) * 2)


def assert_trains_without_collapsing(preset: str, grey: torch.Tensor) -> None:
    torch.manual_seed(0)
    model = BLAE(blae_preset(preset))
    images = shaped_for(model.config, grey)
    config = BLAETrainConfig.for_preset(
        preset, epochs=EPOCHS, batch_size=BATCH, precision="fp32", decoder_polish=0
    )
    train_blae(model, images, config)
    after = evaluate_blae(model, images)
    steps = EPOCHS * len(images) // BATCH
    assert collapse_reason(after, len(images), steps=steps) is None, preset
    assert after.distinct_codes >= 0.9
    assert after.psnr_binary > after.psnr_mean_image + 3  # it learned the images, not one code


# the paper presets, the slowest, are in test_paper_presets.py: another file, so another worker
@pytest.mark.parametrize("preset", sorted(p for p in PRESETS if not p.startswith("paper-")))
def test_every_preset_trains_without_collapsing(preset: str, thousand_images: torch.Tensor) -> None:
    assert_trains_without_collapsing(preset, thousand_images)
