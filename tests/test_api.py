"""The HTTP API against the real app under uvicorn on loopback (tests/conftest.py: live_server)."""

from __future__ import annotations

import base64
import io
import shutil
import struct
import threading
import time
import zlib
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

import httpx
import numpy as np
import pytest
from live_server import LiveServer, start_server, wait_ready
from ngram_helpers import downgrade_to_first_schema
from PIL import Image

from service.bits import packed_to_text
from service.migrate import status as migration_status
from service.parquet_io import read_images, read_latents
from service.run import RunPaths
from service.store import open_store


def png(pixels: np.ndarray) -> bytes:
    buffer = io.BytesIO()
    Image.fromarray(pixels).save(buffer, format="PNG")
    return buffer.getvalue()


def pixels_of(data: bytes) -> np.ndarray:
    return np.asarray(Image.open(io.BytesIO(data)))


def without_timing(body: dict[str, Any]) -> dict[str, Any]:
    return {k: v for k, v in body.items() if k != "seconds"}


def post(server: LiveServer, path: str, **kwargs: Any) -> httpx.Response:
    return httpx.post(f"{server.url}{path}", timeout=60, **kwargs)


def get(server: LiveServer, path: str, **kwargs: Any) -> httpx.Response:
    return httpx.get(f"{server.url}{path}", timeout=60, **kwargs)


def assert_problem(response: httpx.Response, status: int, *words: str) -> None:
    assert response.status_code == status, response.text
    detail = response.json()["detail"]
    for word in words:
        assert word in detail, detail


@pytest.fixture(scope="module")
def training(live_server: LiveServer) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """(ids, uint8 images (N, 28, 28), packed latents) of the served run's training split."""
    ids, images = read_images(live_server.run.images)
    latents = read_latents(live_server.run.latents)
    train = images.splits == "train"
    assert np.array_equal(latents.ids, ids)
    return ids[train], images.images[train][:, 0], latents.packed[train]


def test_health_ready_and_info(live_server: LiveServer) -> None:
    assert get(live_server, "/healthz").json() == {"status": "ok"}
    assert get(live_server, "/readyz").json() == {"ready": True, "reason": "ready"}
    info = get(live_server, "/v1/info").json()
    assert info["latent_shape"][1:] == [4, 4] and info["image_shape"] == [1, 28, 28]
    tables = {(t["gamma"], t["positional"]): t for t in info["tables"]}
    assert set(tables) == {(3, False), (5, False), (5, True)}
    assert tables[(5, False)]["arvm"] and not tables[(3, False)]["arvm"]
    assert info["limits"]["max_n"] == 256 and info["report"] is False


def test_exact_samples_decode_to_their_images(live_server: LiveServer) -> None:
    body = post(live_server, "/v1/sample", json={"n": 6, "gamma": 5, "seed": 3}).json()
    assert body["finished"] == sum(s["ok"] for s in body["samples"]) > 0
    for sample in body["samples"]:
        if not sample["ok"]:
            assert sample["failure"] and sample["bits"] is None
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
    body = post(live_server, "/v1/sample", json={"n": 3, "gamma": 5, "nearest": 2}).json()
    ids = set(training[0].tolist())
    for sample in (s for s in body["samples"] if s["ok"]):
        hits = sample["nearest"]
        assert len(hits) == 2 and hits[0]["psnr"] >= hits[1]["psnr"]
        assert {h["id"] for h in hits} <= ids


@pytest.mark.parametrize(
    ("body", "words"),
    [
        ({"n": 0}, ["n", "greater than or equal to 1"]),
        ({"n": 10_000}, ["n must be in 1..256"]),
        ({"gamma": 4}, ["gamma", "odd"]),
        ({"gamma": 7}, ["no table built for gamma=7", "built: 3, 5"]),
        ({"mode": "dream"}, ["mode"]),
        ({"temperature": 0}, ["temperature"]),
        ({"budget": 10**9}, ["budget must be in 1..100000"]),
        ({"nearest": 1000}, ["nearest must be in 0..100"]),
        ({"gamma": 3, "mode": "neural"}, ["no γ-ARVM trained for gamma=3"]),
        ({"colour": "red"}, ["colour", "Extra inputs"]),
        ({"n": "many"}, ["n", "integer"]),
    ],
)
def test_bad_sample_requests_name_the_field(
    live_server: LiveServer, body: dict[str, Any], words: list[str]
) -> None:
    assert_problem(post(live_server, "/v1/sample", json=body), 422, *words)


def test_bad_json_is_422(live_server: LiveServer) -> None:
    response = post(
        live_server,
        "/v1/sample",
        content=b"{not json",
        headers={"content-type": "application/json"},
    )
    assert response.status_code == 422


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


def test_decode_json_and_bad_bits(
    live_server: LiveServer, training: tuple[np.ndarray, np.ndarray, np.ndarray]
) -> None:
    bits = [packed_to_text(p) for p in training[2][:2]]
    body = post(live_server, "/v1/decode", json={"bits": bits}).json()
    assert [pixels_of(base64.b64decode(i)).shape for i in body["images_png"]] == [(28, 28)] * 2
    assert_problem(post(live_server, "/v1/decode", json={"bits": ["zz"]}), 422, "not valid hex")
    expected = f"{len(training[2][0])} bytes"
    assert_problem(post(live_server, "/v1/decode", json={"bits": ["00"]}), 422, expected)
    assert_problem(
        post(live_server, "/v1/decode", json={"bits": bits, "format": "png"}), 422, "exactly one"
    )
    assert_problem(post(live_server, "/v1/decode", json={"bits": []}), 422, "bits")


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


def test_training_images_by_id(live_server: LiveServer, prepared_run: RunPaths) -> None:
    ids, images = read_images(prepared_run.images)
    response = get(live_server, f"/v1/images/{ids[5]}")
    assert response.headers["content-type"] == "image/png"
    assert np.array_equal(pixels_of(response.content), images.images[5, 0])
    assert response.headers["x-split"] == "train"
    assert_problem(get(live_server, "/v1/images/999999"), 404, "no image with id 999999")
    assert get(live_server, "/v1/images/-1").status_code == 422


def test_metrics_count_requests(live_server: LiveServer) -> None:
    get(live_server, "/v1/info")
    text = get(live_server, "/metrics").text
    assert 'latentgram_requests_total{method="GET",route="/v1/info",status="200"}' in text
    assert "latentgram_request_seconds_bucket" in text


def test_report_is_404_until_written(live_server: LiveServer) -> None:
    assert_problem(get(live_server, "/v1/report"), 404, "latentgram report")


def test_health_answers_while_samples_are_made(live_server: LiveServer) -> None:
    heavy = {"n": 256, "gamma": 3, "budget": 100_000, "seed": 11}
    done = threading.Event()

    def draw() -> None:
        post(live_server, "/v1/sample", json=heavy)
        done.set()

    worker = threading.Thread(target=draw)
    worker.start()
    time.sleep(0.2)
    started = time.perf_counter()
    assert get(live_server, "/healthz").status_code == 200
    assert time.perf_counter() - started < 1.0 or done.is_set()
    worker.join()


def test_api_key_guards_everything_but_health(prepared_run: RunPaths) -> None:
    for server in start_server(prepared_run, api_key="s3cret"):
        wait_ready(server)
        assert get(server, "/healthz").status_code == 200
        assert_problem(get(server, "/v1/info"), 401, "API key")
        assert get(server, "/metrics").status_code == 401
        assert get(server, "/v1/info", headers={"X-API-Key": "wrong"}).status_code == 401
        assert get(server, "/v1/info", headers={"X-API-Key": "s3cret"}).status_code == 200
        bearer = {"Authorization": "Bearer s3cret"}
        assert get(server, "/v1/info", headers=bearer).status_code == 200


def test_missing_run_is_not_ready_with_the_reason(tmp_path: Path) -> None:
    for server in start_server(RunPaths(tmp_path / "nothing-here")):
        assert get(server, "/healthz").status_code == 200
        time.sleep(0.5)
        ready = get(server, "/readyz")
        assert ready.status_code == 503 and not ready.json()["ready"]
        assert "does not exist" in ready.json()["reason"]
        assert_problem(get(server, "/v1/info"), 503, "not ready", "does not exist")


def test_half_built_run_is_not_ready(tmp_path: Path, tiny_run: RunPaths) -> None:
    """Trained and encoded, but no tables: readyz names the missing step."""
    half = RunPaths(tmp_path / "run")
    shutil.copytree(tiny_run.root, half.root, ignore=shutil.ignore_patterns("store.duckdb*"))
    for server in start_server(half):
        reason = "the run is loading"
        deadline = time.monotonic() + 30
        while reason == "the run is loading" and time.monotonic() < deadline:
            time.sleep(0.1)
            reason = get(server, "/readyz").json()["reason"]
        assert "store.duckdb is missing" in reason and "latentgram build" in reason


def test_service_start_applies_pending_migrations(tmp_path: Path, prepared_run: RunPaths) -> None:
    """A store an older latentgram left (schema 0001) is migrated as the service starts."""
    old = RunPaths(tmp_path / "run")
    shutil.copytree(prepared_run.root, old.root)
    downgrade_to_first_schema(old.store)
    for server in start_server(old):
        wait_ready(server)
        assert get(server, "/v1/info").status_code == 200
        sampled = post(server, "/v1/sample", json={"n": 8, "seed": 1})
        assert sampled.status_code == 200 and sampled.json()["finished"] > 0
    with open_store(old.store, read_only=True) as con:
        assert not migration_status(con).pending
