"""POST /v1/nearest against the real app under uvicorn on loopback."""

from __future__ import annotations

import base64
import re

import numpy as np

from service.latents.bits import packed_to_text
from tests.helpers import assert_problem, get, png, post
from tests.live_server import LiveServer


def test_nearest_finds_the_training_image_itself(
    live_server: LiveServer, training: tuple[np.ndarray, np.ndarray, np.ndarray]
) -> None:
    ids, images, packed = training
    by_bits = post(
        live_server, "/v1/nearest", json={"bits": packed_to_text(packed[7]), "by": "latent"}
    ).json()
    top = by_bits["hits"][0]
    assert top["hamming"] == 0 and top["exact_copy"]
    assert packed_to_text(packed[ids == top["id"]][0]) == by_bits["bits"]
    by_image = post(
        live_server,
        "/v1/nearest",
        json={"image_png": base64.b64encode(png(images[7])).decode(), "k": 3},
    ).json()
    assert len(by_image["hits"]) == 3
    assert by_image["hits"][0]["id"] == int(ids[7]) and by_image["hits"][0]["memorized"]


def test_bad_nearest_requests(live_server: LiveServer) -> None:
    assert_problem(post(live_server, "/v1/nearest", json={"k": 1}), 422, "exactly one")
    bits = "00" * get(live_server, "/v1/info").json()["latent_bytes"]
    assert_problem(
        post(live_server, "/v1/nearest", json={"bits": bits, "k": 101}), 422, "k must be in 1.."
    )
    assert_problem(
        post(live_server, "/v1/nearest", json={"image_png": "%%%"}), 422, "not valid base64"
    )
    both = {"bits": bits, "image_png": base64.b64encode(png(np.zeros((28, 28), np.uint8))).decode()}
    assert_problem(post(live_server, "/v1/nearest", json=both), 422, "exactly one")


def test_schema_states_the_one_of_and_the_bits_of_this_run(
    live_server: LiveServer, training: tuple[np.ndarray, np.ndarray, np.ndarray]
) -> None:
    schemas = get(live_server, "/openapi.json").json()["components"]["schemas"]
    variants = {v["title"]: v for v in schemas["NearestRequest"]["oneOf"]}
    assert set(variants) == {"NearestByImage", "NearestByBitsHex", "NearestByBitsBase64"}
    by_image = variants["NearestByImage"]
    assert by_image["required"] == ["image_png"] and by_image["properties"]["bits"] == {
        "type": "null"
    }
    nbytes = len(training[2][0])
    for encoding in ("hex", "base64"):
        variant = variants[f"NearestByBits{encoding.capitalize()}"]
        pattern = variant["properties"]["bits"]["pattern"]
        assert re.fullmatch(pattern, packed_to_text(training[2][0], encoding))
        assert not re.fullmatch(pattern, packed_to_text(training[2][0][:-1], encoding))
    assert variants["NearestByBitsHex"]["properties"]["bits"]["pattern"] == (
        f"^[0-9a-fA-F]{{{2 * nbytes}}}$"
    )
    assert variants["NearestByBitsBase64"]["required"] == ["bits", "encoding"]
