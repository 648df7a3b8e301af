"""Service figures: `latentgram serve` on loopback against the same work done in-process.

    .venv/bin/python benchmarks/service_figures.py --run runs/default

- POST /v1/sample (n=16, γ=5, exact, images as PNG): requests/s and p50/p99 latency with 1 and 8
  concurrent clients, each request with its own seed; beside it the same work in-process
  (LoadedRun.sample and the PNG encoding), so the ratio is the service's overhead;
- POST /v1/nearest (k=5) for one test image, by pixels and by latent, p50/p99, beside the same
  engine call in-process.
"""

from __future__ import annotations

import argparse
import base64
import json
import subprocess
import sys
import time
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import httpx
import numpy as np

from service.data.images import png_bytes
from service.latents.bits import packed_to_text
from service.ngram.samples import SampleConfig
from service.run.loaded import LoadedRun

SAMPLE = {"n": 16, "gamma": 5, "mode": "exact"}


def percentiles(seconds: list[float]) -> dict[str, float]:
    p50, p99 = np.percentile(np.array(seconds) * 1e3, [50, 99])
    return {"p50_ms": round(float(p50), 2), "p99_ms": round(float(p99), 2)}


def timed_calls(fn: Callable[[int], object], count: int) -> list[float]:
    fn(-1)  # warm-up
    times = []
    for i in range(count):
        started = time.perf_counter()
        fn(i)
        times.append(time.perf_counter() - started)
    return times


def start_server(run: Path, port: int) -> subprocess.Popen[bytes]:
    command = [sys.executable, "-m", "service.cli", "serve", "--run", str(run)]
    process = subprocess.Popen([*command, "--port", str(port), "--log-level", "warning"])
    deadline = time.monotonic() + 120
    while time.monotonic() < deadline:
        try:
            if httpx.get(f"http://127.0.0.1:{port}/readyz", timeout=2).status_code == 200:
                return process
        except httpx.TransportError:
            pass
        time.sleep(0.2)
    process.terminate()
    raise SystemExit("the server did not become ready within 120 s")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--run", type=Path, default=Path("runs/default"))
    parser.add_argument("--port", type=int, default=8765)
    parser.add_argument("--requests", type=int, default=200)
    args = parser.parse_args()
    engine = LoadedRun.load(args.run)

    def in_process(seed: int) -> None:
        result = engine.sample(gamma=5, mode="exact", config=SampleConfig(n=16, seed=seed + 1))
        [png_bytes(image) for image in result.images]

    local = timed_calls(in_process, args.requests)
    test = np.flatnonzero(engine.latents.splits == "test")
    image, packed = engine.images.images[test[0]], engine.latents.packed[test[:1]]
    nearest_local = {
        by: percentiles(
            timed_calls(lambda _, b=by: engine.nearest(images=image[None], k=5, by=b), 100)
        )
        for by in ("pixels", "latent")
    }
    figures: dict[str, object] = {"in_process_sample": percentiles(local)}
    server = start_server(args.run, args.port)
    url = f"http://127.0.0.1:{args.port}"
    try:
        with httpx.Client(base_url=url, timeout=60) as client:
            one = timed_calls(
                lambda i: client.post(
                    "/v1/sample", json={**SAMPLE, "seed": i + 1}
                ).raise_for_status(),
                args.requests,
            )
        figures["one_client"] = {
            **percentiles(one),
            "requests_per_s": round(len(one) / sum(one), 1),
            "overhead_p50": round(float(np.median(one) / np.median(local)), 2),
        }
        errors = 0

        def client_loop(worker: int) -> list[float]:
            nonlocal errors
            times = []
            with httpx.Client(base_url=url, timeout=60) as client:
                for i in range(args.requests // 8):
                    started = time.perf_counter()
                    response = client.post("/v1/sample", json={**SAMPLE, "seed": worker * 1000 + i})
                    times.append(time.perf_counter() - started)
                    errors += response.status_code != 200
            return times

        started = time.perf_counter()
        with ThreadPoolExecutor(8) as pool:
            eight = [t for times in pool.map(client_loop, range(8)) for t in times]
        wall = time.perf_counter() - started
        figures["eight_clients"] = {
            **percentiles(eight),
            "requests_per_s": round(len(eight) / wall, 1),
            "errors": errors,
        }
        body = {"image_png": base64.b64encode(png_bytes(image)).decode(), "k": 5}
        with httpx.Client(base_url=url, timeout=60) as client:
            figures["nearest_http"] = {
                "pixels": percentiles(
                    timed_calls(lambda _: client.post("/v1/nearest", json=body), 100)
                ),
                "latent": percentiles(
                    timed_calls(
                        lambda _: client.post(
                            "/v1/nearest",
                            json={"bits": packed_to_text(packed[0]), "k": 5, "by": "latent"},
                        ),
                        100,
                    )
                ),
            }
        figures["nearest_in_process"] = nearest_local
    finally:
        server.terminate()
        server.wait(timeout=10)
    print(json.dumps(figures, indent=2))


if __name__ == "__main__":
    main()
