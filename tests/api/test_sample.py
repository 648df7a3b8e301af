"""POST /v1/sample against the real app under uvicorn on loopback (tests/conftest.py)."""

from __future__ import annotations

import base64
import threading
from concurrent.futures import ThreadPoolExecutor
from typing import Any

import numpy as np
import pytest

from tests.helpers import assert_problem, get, post, wait_for, without_timing
from tests.live_server import LiveServer


def test_exact_samples_decode_to_their_images(live_server: LiveServer) -> None:
    body = post(live_server, "/v1/sample", json={"n": 6, "gamma": 5, "seed": 3}).json()
    assert body["finished"] == sum(s["ok"] for s in body["samples"]) > 0
    for sample in body["samples"]:
        assert 0 <= sample["jumps"] <= sample["backtracks"]
        if not sample["ok"]:
            assert sample["failure"] in ("budget", "exhausted") and sample["bits"] is None
            continue
        assert sample["neural_share"] == 0.0
        assert {g for row in sample["answered_by"] for g in row} == {5}
        assert min(e for row in sample["examples"] for e in row) >= 0
        decoded = post(live_server, "/v1/decode", json={"bits": [sample["bits"]], "format": "png"})
        assert decoded.headers["content-type"] == "image/png"
        assert decoded.content == base64.b64decode(sample["image_png"])


def test_same_seed_same_bytes_and_concurrency_changes_nothing(live_server: LiveServer) -> None:
    requests = [{"n": 8, "gamma": g, "seed": s, "mode": "exact"} for g in (3, 5) for s in (0, 1)]
    requests += [{"n": 8, "gamma": 5, "seed": 2, "mode": m} for m in ("hybrid", "neural")]
    serial = [without_timing(post(live_server, "/v1/sample", json=r).json()) for r in requests]
    again = without_timing(post(live_server, "/v1/sample", json=requests[0]).json())
    assert again == serial[0]
    with ThreadPoolExecutor(8) as pool:
        concurrent = list(pool.map(lambda r: post(live_server, "/v1/sample", json=r), requests * 2))
    assert [without_timing(r.json()) for r in concurrent] == serial * 2


def test_modes_report_who_answered(live_server: LiveServer) -> None:
    neural = post(live_server, "/v1/sample", json={"n": 4, "mode": "neural"}).json()
    assert all(s["ok"] and s["neural_share"] == 1.0 for s in neural["samples"])
    assert all(e == -1 for s in neural["samples"] for row in s["examples"] for e in row)
    backoff = post(live_server, "/v1/sample", json={"n": 16, "mode": "backoff"}).json()
    for sample in backoff["samples"]:
        assert {g for row in sample["answered_by"] for g in row} <= {0, 3, 5}


def test_sample_with_nearest_training_images(
    live_server: LiveServer, training: tuple[np.ndarray, np.ndarray, np.ndarray]
) -> None:
    """Hits ranked by the Hamming distance from the sample's own latent: a sample that copies a
    training latent has that image first."""
    body = post(live_server, "/v1/sample", json={"n": 8, "gamma": 5, "nearest": 2}).json()
    latents = dict(zip(training[0].tolist(), training[2], strict=True))
    for sample in (s for s in body["samples"] if s["ok"]):
        hits = sample["nearest"]
        assert len(hits) == 2 and hits[0]["hamming"] <= hits[1]["hamming"]
        bits = np.frombuffer(bytes.fromhex(sample["bits"]), np.uint8)
        closest = min(int(np.unpackbits(bits ^ other).sum()) for other in latents.values())
        assert hits[0]["hamming"] == closest
        for hit in hits:
            distance = int(np.unpackbits(bits ^ latents[hit["id"]]).sum())
            assert hit["hamming"] == distance and hit["exact_copy"] == (distance == 0)
            assert hit["memorized_reconstruction"] == (hit["psnr_reconstruction"] > 30)
        if hits[0]["exact_copy"]:  # its decoding is the training image's reconstruction
            assert hits[0]["memorized_reconstruction"]


@pytest.mark.parametrize(
    ("body", "words"),
    [
        ({"n": 0}, ["n", "greater than or equal to 1"]),
        ({"n": 10_000}, ["n must be in 1..256"]),
        ({"gamma": 4}, ["gamma", "odd"]),
        ({"mode": "dream"}, ["mode"]),
        ({"temperature": 0}, ["temperature"]),
        ({"budget": 10**9}, ["budget must be in 1..100000"]),
        ({"nearest": 1000}, ["nearest must be in 0..100"]),
        ({"colour": "red"}, ["colour", "Extra inputs"]),
        ({"n": "many"}, ["n", "integer"]),
        ({"n": "5"}, ["n: Input should be a valid integer"]),  # strict: no coercion
        ({"n": 2.5}, ["n: Input should be a valid integer"]),
        ({"images": 0}, ["images: Input should be a valid boolean"]),
        ({"positional": "yes"}, ["positional: Input should be a valid boolean"]),
    ],
)
def test_bad_sample_requests_name_the_field(
    live_server: LiveServer, body: dict[str, Any], words: list[str]
) -> None:
    assert_problem(post(live_server, "/v1/sample", json=body), 422, *words)


@pytest.mark.parametrize("number", [b"NaN", b"Infinity", b"-Infinity"])
def test_non_finite_temperature_has_its_own_message(live_server: LiveServer, number: bytes) -> None:
    """Python's JSON reader takes these literals; the answer must not speak of bounds."""
    body = b'{"temperature": ' + number + b"}"
    response = post(
        live_server, "/v1/sample", content=body, headers={"content-type": "application/json"}
    )
    assert_problem(response, 422, "temperature: Input should be a finite number")


@pytest.mark.parametrize(
    ("body", "words"),
    [
        ({"gamma": 7}, ["no table g7 built for gamma=7", "built: g3, g5"]),
        ({"gamma": 3, "mode": "neural"}, ["no γ-ARVM trained for gamma=3"]),
        ({"gamma": 3, "positional": True}, ["no positional table g3p built", "--positional"]),
    ],
)
def test_what_the_run_lacks_is_a_conflict(
    live_server: LiveServer, body: dict[str, Any], words: list[str]
) -> None:
    """A well-formed request the run cannot answer yet: 409, naming what to build."""
    assert_problem(post(live_server, "/v1/sample", json=body), 409, *words)


def test_integers_may_be_written_as_json_numbers_with_a_zero_fraction(
    live_server: LiveServer,
) -> None:
    """JSON Schema's integer: 2.0 is 2, as the schema promises."""
    body = post(live_server, "/v1/sample", json={"n": 2.0, "seed": 3.0, "images": False}).json()
    assert len(body["samples"]) == 2 and body["seed"] == 3


def test_bad_json_is_a_documented_400(live_server: LiveServer) -> None:
    broken = {"content": b"{not json", "headers": {"content-type": "application/json"}}
    assert_problem(post(live_server, "/v1/sample", **broken), 400, "not valid JSON", "character 1")
    form = post(live_server, "/v1/sample", data={"n": "2"})  # what `curl -d` sends
    assert_problem(form, 415, "content-type: application/json", "x-www-form-urlencoded")
    documented = get(live_server, "/openapi.json").json()["paths"]["/v1/sample"]["post"]
    assert {"400", "415"} <= set(documented["responses"])


def test_health_answers_while_samples_are_made(live_server: LiveServer) -> None:
    """/healthz answers while heavy samples are being drawn in the thread pool, one after the
    other, so that one is always under way."""
    heavy = {"n": 256, "gamma": 3, "budget": 100_000, "seed": 11, "nearest": 5}
    stop, drawn = threading.Event(), []

    def draw() -> None:
        while not stop.is_set():
            drawn.append(post(live_server, "/v1/sample", json=heavy).status_code)

    worker = threading.Thread(target=draw)
    worker.start()
    try:
        gauge = 'latentgram_requests_in_progress{kind="sample"} 1.0'
        wait_for(lambda: gauge in get(live_server, "/metrics").text, "a sample to be under way")
        assert get(live_server, "/healthz").status_code == 200
    finally:
        stop.set()
        worker.join()
    assert drawn and set(drawn) == {200}
