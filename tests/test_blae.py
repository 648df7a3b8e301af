import numpy as np
import pytest
import torch

from models import BLAE, PRESETS, BLAEConfig, TrainConfig, binarize, blae_preset
from service.bits import bits_to_tokens
from service.checkpoints import load_blae, save_blae
from service.codec import decode_bits, encode_images
from service.errors import InvalidInputError
from service.run import RunPaths


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
        codes = model.encode(torch.rand(64, 1, 28, 28), gain=TrainConfig().code_gain_start)
    tokens = bits_to_tokens((codes > 0).numpy())
    assert len(np.unique(tokens)) > 32
    assert codes.abs().mean() < 0.9  # not saturated from the start


def test_checkpoint_reloads_identical_model(tmp_path) -> None:
    torch.manual_seed(0)
    model = BLAE(PRESETS["tiny"]).eval()
    paths = RunPaths(tmp_path)
    sha = save_blae(paths, model, train_config=TrainConfig(), epochs_done=3)
    loaded = load_blae(paths)
    assert loaded.sha256 == sha and loaded.epochs_done == 3
    assert loaded.model.config == model.config
    x = torch.rand(4, 1, 28, 28)
    torch.testing.assert_close(loaded.model.encode(x), model.encode(x), rtol=0, atol=0)


def test_codec_round_trip_through_bits(rng: np.random.Generator) -> None:
    torch.manual_seed(0)
    model = BLAE(PRESETS["tiny"]).eval()
    images = rng.integers(0, 256, (10, 1, 28, 28), dtype=np.uint8)
    packed, brate = encode_images(model, images, batch_size=3)
    assert packed.shape == (10, 16) and 0 <= brate <= 1
    bits = np.unpackbits(packed, axis=1).astype(bool).reshape(10, 8, 4, 4)
    with torch.no_grad():
        expected = model.encode(torch.from_numpy(images).float() / 255) > 0
    np.testing.assert_array_equal(bits, expected.numpy())
    decoded = decode_bits(model, bits, batch_size=4)
    assert decoded.shape == images.shape and decoded.dtype == np.uint8


def test_codec_rejects_wrong_images() -> None:
    model = BLAE(PRESETS["tiny"]).eval()
    with pytest.raises(InvalidInputError, match=r"\(N, 1, 28, 28\)"):
        encode_images(model, np.zeros((2, 3, 28, 28), np.uint8))
    with pytest.raises(InvalidInputError, match="latents must have shape"):
        decode_bits(model, np.zeros((2, 8, 5, 5), bool))
