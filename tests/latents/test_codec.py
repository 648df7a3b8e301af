"""Batched encode and decode through a BL-AE."""

import numpy as np
import pytest
import torch

from models import BLAE, PRESETS
from service.errors import InvalidInputError
from service.latents.codec import decode_bits, encode_images


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
