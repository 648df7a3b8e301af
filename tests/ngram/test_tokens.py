"""Tokens: the integer whose bit c is channel c, and the limits on C."""

import numpy as np
import pytest

from service.errors import InvalidInputError
from service.ngram.tokens import TokenGrids, bits_to_tokens, tokens_to_bits


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


def test_tokens_out_of_range_rejected() -> None:
    with pytest.raises(InvalidInputError, match=r"0\.\.255"):
        tokens_to_bits(np.array([[[256]]]), 8)


@pytest.mark.parametrize("channels", [0, 17])
def test_token_grids_refuse_unsupported_channel_counts(channels: int) -> None:
    with pytest.raises(InvalidInputError, match="tokens hold 1 to 16 bits"):
        TokenGrids(np.zeros((1, 2, 2), np.int64), np.zeros(1, np.int64), channels)
    with pytest.raises(InvalidInputError, match="tokens hold 1 to 16 bits"):
        bits_to_tokens(np.zeros((1, max(channels, 17), 2, 2), bool))
