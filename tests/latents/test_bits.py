"""Packed latents: bytes and text round trips."""

import numpy as np
import pytest

from service.errors import InvalidInputError
from service.latents.bits import (
    pack_bits,
    packed_from_text,
    packed_size,
    packed_to_text,
    unpack_bits,
)


@pytest.mark.parametrize("shape", [(8, 4, 4), (12, 4, 4), (1, 16, 16), (3, 5, 7), (16, 2, 3)])
def test_pack_unpack_is_identity(shape: tuple[int, int, int], rng: np.random.Generator) -> None:
    bits = rng.random((9, *shape)) > 0.5
    packed = pack_bits(bits)
    assert packed.shape == (9, packed_size(shape))
    np.testing.assert_array_equal(unpack_bits(packed, shape), bits)


def test_unpack_rejects_wrong_width() -> None:
    with pytest.raises(InvalidInputError, match="16 bytes"):
        unpack_bits(np.zeros((2, 15), np.uint8), (8, 4, 4))


@pytest.mark.parametrize("encoding", ["hex", "base64"])
def test_text_round_trip_and_bad_text(encoding: str, rng: np.random.Generator) -> None:
    shape = (12, 4, 4)
    packed = pack_bits(rng.random((1, *shape)) > 0.5)[0]
    text = packed_to_text(packed, encoding)  # type: ignore[arg-type]
    np.testing.assert_array_equal(packed_from_text(text, shape, encoding), packed)  # type: ignore[arg-type]
    with pytest.raises(InvalidInputError, match=f"not valid {encoding}"):
        packed_from_text("!!", shape, encoding)  # type: ignore[arg-type]
    with pytest.raises(InvalidInputError, match="must be 24 bytes"):
        packed_from_text(packed_to_text(packed[:-1], encoding), shape, encoding)  # type: ignore[arg-type]
