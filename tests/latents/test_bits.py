"""Packed latents: bytes and text round trips."""

import base64
import re
import string

import numpy as np
import pytest
from hypothesis import given
from hypothesis import strategies as st

from service.errors import InvalidInputError
from service.latents.bits import (
    pack_bits,
    packed_from_text,
    packed_size,
    packed_to_text,
    text_pattern,
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
    length = len(text)
    with pytest.raises(InvalidInputError, match="got other characters"):
        packed_from_text("!" * length, shape, encoding)  # type: ignore[arg-type]
    with pytest.raises(InvalidInputError, match=f"must be 24 bytes .* written as {length} "):
        packed_from_text(packed_to_text(packed[:-1], encoding), shape, encoding)  # type: ignore[arg-type]
    with pytest.raises(InvalidInputError, match="with no spaces"):
        packed_from_text(f" {text[1:]}", shape, encoding)  # type: ignore[arg-type]


@given(data=st.binary(min_size=1, max_size=40), encoding=st.sampled_from(["hex", "base64"]))
def test_text_pattern_matches_exactly_the_canonical_text(data: bytes, encoding: str) -> None:
    """The schema's pattern accepts what packed_to_text writes, for every length mod 3, and
    refuses base64 whose padding bits are not zero (another text of the same bytes)."""
    pattern = text_pattern(len(data), encoding)  # type: ignore[arg-type]
    text = packed_to_text(np.frombuffer(data, np.uint8), encoding)  # type: ignore[arg-type]
    assert re.fullmatch(pattern, text)
    assert not re.fullmatch(pattern, text + ("0" if encoding == "hex" else "A"))
    if encoding == "base64" and len(data) % 3:
        alphabet = string.ascii_uppercase + string.ascii_lowercase + string.digits + "+/"
        body = text.rstrip("=")
        unused_bit_set = alphabet[alphabet.index(body[-1]) | 1]
        twin = body[:-1] + unused_bit_set + "=" * (3 - len(data) % 3)
        assert base64.b64decode(twin) == data  # Python would take it ...
        assert not re.fullmatch(pattern, twin)  # ... the schema and the server do not
