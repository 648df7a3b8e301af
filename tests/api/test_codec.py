"""POST /v1/encode and /v1/decode against the real app under uvicorn on loopback."""

from __future__ import annotations

import base64
import io
import struct
import zlib
from collections.abc import Iterator

import numpy as np
import pytest
from PIL import Image

from service.latents.bits import packed_to_text
from tests.helpers import assert_problem, get, pixels_of, png, post
from tests.live_server import LiveServer


def test_encode_matches_stored_latents_and_reconstructs(
    live_server: LiveServer, training: tuple[np.ndarray, np.ndarray, np.ndarray]
) -> None:
    _, images, packed = training
    files = [("files", (f"{i}.png", png(images[i]), "image/png")) for i in range(3)]
    body = post(live_server, "/v1/encode", files=files, data={"reconstruction": "true"}).json()
    assert [item["bits"] for item in body["items"]] == [packed_to_text(p) for p in packed[:3]]
    for i, item in enumerate(body["items"]):
        assert item["filename"] == f"{i}.png"
        recon = pixels_of(base64.b64decode(item["reconstruction_png"]))
        assert recon.shape == (28, 28) and 5 < item["psnr_reconstruction"] < 60
    b64 = post(live_server, "/v1/encode", files=files[:1], data={"encoding": "base64"}).json()
    assert base64.b64decode(b64["items"][0]["bits"]) == packed[0].tobytes()


def test_16_bit_and_alpha_uploads_encode_like_the_8_bit_picture(
    live_server: LiveServer, training: tuple[np.ndarray, np.ndarray, np.ndarray]
) -> None:
    """16-bit was clipped to white and alpha ignored (a blank image): both now keep the pixels."""
    _, images, packed = training
    picture = images[0]
    glyph = np.dstack([np.full_like(picture, 255)] * 3 + [picture])  # white in alpha
    forms = {
        "8-bit": png(picture),
        "16-bit": encoded(Image.fromarray(picture.astype(np.uint16) * 257)),
        "alpha": encoded(Image.fromarray(glyph, "RGBA")),
    }
    files = [("files", (f"{name}.png", data, "image/png")) for name, data in forms.items()]
    body = post(live_server, "/v1/encode", files=files).json()
    assert [item["bits"] for item in body["items"]] == [packed_to_text(packed[0])] * 3
    assert get(live_server, "/v1/info").json()["background"] == [0, 0, 0]


def encoded(image: Image.Image) -> bytes:
    buffer = io.BytesIO()
    image.save(buffer, format="PNG")
    return buffer.getvalue()


def test_encode_resizes_colour_images(live_server: LiveServer) -> None:
    rgb = np.random.default_rng(0).integers(0, 255, (56, 40, 3), dtype=np.uint8)
    jpeg = io.BytesIO()
    Image.fromarray(rgb).save(jpeg, format="JPEG")
    body = post(live_server, "/v1/encode", files=[("files", ("a.jpg", jpeg.getvalue()))]).json()
    latent_bytes = get(live_server, "/v1/info").json()["latent_bytes"]
    assert len(bytes.fromhex(body["items"][0]["bits"])) == latent_bytes


NOISE = np.random.default_rng(0).integers(0, 255, (28, 28), dtype=np.uint8)


def bomb_png(width: int, height: int) -> bytes:
    """A valid PNG header claiming width × height pixels, with almost no data."""

    def chunk(kind: bytes, data: bytes) -> bytes:
        crc = zlib.crc32(kind + data)
        return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", crc)

    header = struct.pack(">IIBBBBB", width, height, 8, 0, 0, 0, 0)
    body = zlib.compress(b"\0" * 1024)
    return (
        b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", header) + chunk(b"IDAT", body) + chunk(b"IEND", b"")
    )


@pytest.mark.parametrize(
    ("content", "words"),
    [
        (b"", ["files[0]", "empty"]),
        (b"this is not an image", ["files[0]", "not an image format"]),
        (png(NOISE)[: len(png(NOISE)) // 2], ["files[0]", "corrupt or truncated"]),
        (bomb_png(100_000, 100_000), ["files[0]", "pixels", "at most 16777216"]),
    ],
)
def test_bad_uploads_are_422(live_server: LiveServer, content: bytes, words: list[str]) -> None:
    response = post(live_server, "/v1/encode", files=[("files", ("x.png", content))])
    assert_problem(response, 422, *words)


def test_upload_limits(live_server: LiveServer) -> None:
    many = [("files", (f"{i}.png", png(np.zeros((28, 28), np.uint8)))) for i in range(65)]
    assert_problem(post(live_server, "/v1/encode", files=many), 422, "files must be in 1..64")
    huge = [("files", ("big.png", b"\0" * (5 << 20)))]
    assert_problem(post(live_server, "/v1/encode", files=huge), 413, "at most 4194304 bytes")
    assert post(live_server, "/v1/encode").status_code == 422


def test_a_chunked_body_is_refused_unread(live_server: LiveServer) -> None:
    """Without a Content-Length the size limit could be checked only after reading it all."""

    def endless() -> Iterator[bytes]:
        yield b'{"n": 1, "gamma": 3'
        yield b" " * (1 << 20)

    headers = {"content-type": "application/json"}
    response = post(live_server, "/v1/sample", content=endless(), headers=headers)
    assert_problem(response, 411, "Content-Length", "at most 4194304 bytes")
    assert post(live_server, "/v1/sample", json={"n": 1, "gamma": 3}).status_code == 200


def test_decode_json_and_bad_bits(
    live_server: LiveServer, training: tuple[np.ndarray, np.ndarray, np.ndarray]
) -> None:
    bits = [packed_to_text(p) for p in training[2][:2]]
    body = post(live_server, "/v1/decode", json={"bits": bits}).json()
    assert [pixels_of(base64.b64decode(i)).shape for i in body["images_png"]] == [(28, 28)] * 2
    nbytes = len(training[2][0])
    wrong = {"bits": ["z" * 2 * nbytes]}
    assert_problem(post(live_server, "/v1/decode", json=wrong), 422, "got other characters")
    expected = f"{nbytes} bytes"
    assert_problem(post(live_server, "/v1/decode", json={"bits": ["00"]}), 422, expected)
    spaced = {"bits": [" ".join(bits[0][i : i + 2] for i in range(0, len(bits[0]), 2))]}
    assert_problem(post(live_server, "/v1/decode", json=spaced), 422, "with no spaces")
    assert_problem(
        post(live_server, "/v1/decode", json={"bits": bits, "format": "png"}), 422, "exactly one"
    )
    assert_problem(post(live_server, "/v1/decode", json={"bits": []}), 422, "bits")
