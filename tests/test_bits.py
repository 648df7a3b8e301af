import numpy as np
import pytest

from service.bits import bits_to_tokens, pack_bits, packed_size, tokens_to_bits, unpack_bits
from service.errors import InvalidInputError


@pytest.mark.parametrize("shape", [(8, 4, 4), (12, 4, 4), (1, 16, 16), (3, 5, 7), (16, 2, 3)])
def test_pack_unpack_is_identity(shape: tuple[int, int, int], rng: np.random.Generator) -> None:
    bits = rng.random((9, *shape)) > 0.5
    packed = pack_bits(bits)
    assert packed.shape == (9, packed_size(shape))
    np.testing.assert_array_equal(unpack_bits(packed, shape), bits)


@pytest.mark.parametrize("channels", [1, 8, 12, 16])
def test_tokens_bits_round_trip(channels: int, rng: np.random.Generator) -> None:
    bits = rng.random((5, channels, 4, 4)) > 0.5
    tokens = bits_to_tokens(bits)
    assert tokens.min() >= 0 and tokens.max() < 2**channels
    np.testing.assert_array_equal(tokens_to_bits(tokens, channels), bits)


def test_token_bit_c_is_channel_c() -> None:
    bits = np.zeros((1, 4, 1, 1), bool)
    bits[0, 2, 0, 0] = True
    assert bits_to_tokens(bits)[0, 0, 0] == 4


def test_unpack_rejects_wrong_width() -> None:
    with pytest.raises(InvalidInputError, match="16 bytes"):
        unpack_bits(np.zeros((2, 15), np.uint8), (8, 4, 4))


def test_tokens_out_of_range_rejected() -> None:
    with pytest.raises(InvalidInputError, match=r"0\.\.255"):
        tokens_to_bits(np.array([[[256]]]), 8)
