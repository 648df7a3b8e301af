"""The BL-AE model: shapes, presets, configs and its initialization."""

import numpy as np
import pytest
import torch

from models import BLAE, PRESETS, BLAEConfig, BLAETrainConfig, binarize, blae_preset
from service.ngram.tokens import bits_to_tokens


@pytest.mark.parametrize("image_size,channels", [(28, 1), (32, 3), (20, 1)])
def test_encode_decode_shapes(image_size: int, channels: int) -> None:
    config = blae_preset("tiny", image_size=image_size, image_channels=channels)
    model = BLAE(config).eval()
    x = torch.rand(5, channels, image_size, image_size)
    codes = model.encode(x)
    assert codes.shape == (5, *config.latent_shape)
    assert codes.abs().max() <= 1
    assert model.decode(binarize(codes)).shape == x.shape
    out = model.train()(x)
    assert out.reconstruction.shape == x.shape and out.codes.shape == codes.shape


def test_presets_build_and_latent_geometry() -> None:
    for name, config in PRESETS.items():
        if name == "paper-t5":  # 8196-wide layers: fine to build, slow to allocate in a unit test
            continue
        model = BLAE(config)
        assert model.encode(torch.rand(1, 1, 28, 28)).shape == (1, *config.latent_shape)
    assert PRESETS["default"].latent_shape == (12, 4, 4)


def test_config_round_trips_through_dict() -> None:
    config = blae_preset("default", sigma=0.5, noise="gaussian")
    assert BLAEConfig.from_dict(config.to_dict()) == config
    with pytest.raises(ValueError, match="latent_channels"):
        blae_preset("tiny", latent_channels=17)
    with pytest.raises(ValueError, match="unknown BL-AE preset"):
        blae_preset("huge")


def test_initial_codes_are_not_collapsed() -> None:
    """Kaiming init: distinct images get distinct, unsaturated codes at the first step."""
    torch.manual_seed(0)
    model = BLAE(PRESETS["default"]).eval()
    with torch.no_grad():  # the gain training starts with
        codes = model.encode(torch.rand(64, 1, 28, 28), gain=BLAETrainConfig().code_gain_start)
    tokens = bits_to_tokens((codes > 0).numpy())
    assert len(np.unique(tokens)) > 32
    assert codes.abs().mean() < 0.9  # not saturated from the start
