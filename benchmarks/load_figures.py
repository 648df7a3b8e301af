"""Load figures: `latentgram serve --workers W` on loopback under C concurrent clients.

    .venv/bin/python benchmarks/load_figures.py --run runs/default
    .venv/bin/python benchmarks/load_figures.py --run runs/default --workers 2 --clients 8 \\
        --seconds 600 --every 60        # the 10-minute soak: memory over time

Each client posts /v1/sample (n=16, γ=5, exact, images as PNG, its own seeds) back to back for
--seconds, as asyncio tasks in this process. Per (workers, clients): requests/s, p50 and p99
latency, 503s (the service's own overload answer) and other errors; per worker process its
resident memory (RSS) and proportional share (PSS, shared pages split between the processes
that map them) when the server is ready and after each load. The ratio that matters is
throughput at C clients over throughput at one client, with the same workers: both run on the
same machine, so the clients' own CPU time counts against the server in both.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import subprocess
import sys
import time
from pathlib import Path

import httpx
import numpy as np

SAMPLE = {"n": 16, "gamma": 5, "mode": "exact"}


def memory_of(pid: int) -> dict[str, float]:
    """RSS and PSS of one process, MiB (from /proc/PID/smaps_rollup)."""
    values = {}
    with open(f"/proc/{pid}/smaps_rollup") as f:
        for line in f:
            name, _, rest = line.partition(":")
            if name in ("Rss", "Pss"):
                values[name.lower() + "_mib"] = round(int(rest.split()[0]) / 1024, 1)
    return values


def worker_pids(server: subprocess.Popen[bytes], workers: int) -> list[int]:
    """The processes answering requests: the server itself, or its worker children."""
    if workers == 1:
        return [server.pid]
    with open(f"/proc/{server.pid}/task/{server.pid}/children") as f:
        children = [int(c) for c in f.read().split()]
    # uvicorn's children are the workers (and, with spawn, a resource tracker: it maps nothing)
    return [p for p in children if memory_of(p).get("rss_mib", 0) > 100]


def start_server(run: Path, port: int, workers: int) -> subprocess.Popen[bytes]:
    command = [sys.executable, "-m", "service.cli", "serve", "--run", str(run)]
    command += ["--port", str(port), "--log-level", "warning", "--workers", str(workers)]
    process = subprocess.Popen(command)
    deadline = time.monotonic() + 300
    while time.monotonic() < deadline:
        try:  # every worker must be ready, not only the first to answer
            ready = [
                httpx.get(f"http://127.0.0.1:{port}/readyz", timeout=5).status_code == 200
                for _ in range(4 * workers)
            ]
            if all(ready):
                return process
        except httpx.TransportError:
            pass
        time.sleep(0.5)
    process.terminate()
    raise SystemExit("the server did not become ready within 300 s")


async def load(url: str, clients: int, seconds: float) -> dict[str, float]:
    """`clients` loops posting samples until `seconds` have passed."""
    latencies: list[float] = []
    busy = errors = 0
    stop = time.monotonic() + seconds
    limits = httpx.Limits(max_connections=clients, max_keepalive_connections=clients)

    async def client(number: int, http: httpx.AsyncClient) -> None:
        nonlocal busy, errors
        seed = number * 1_000_000
        while time.monotonic() < stop:
            started = time.perf_counter()
            try:
                response = await http.post("/v1/sample", json={**SAMPLE, "seed": seed})
                busy += response.status_code == 503
                errors += response.status_code not in (200, 503)
            except httpx.TransportError:  # a broken connection is an error too
                errors += 1
            latencies.append(time.perf_counter() - started)
            seed += 1

    started = time.perf_counter()
    async with httpx.AsyncClient(base_url=url, timeout=120, limits=limits) as http:
        await asyncio.gather(*(client(i, http) for i in range(clients)))
    wall = time.perf_counter() - started
    p50, p99 = np.percentile(np.array(latencies) * 1e3, [50, 99])
    return {
        "requests": len(latencies),
        "requests_per_s": round(len(latencies) / wall, 1),
        "p50_ms": round(float(p50), 1),
        "p99_ms": round(float(p99), 1),
        "busy_503": busy,
        "errors": errors,
    }


def measure(args: argparse.Namespace, workers: int) -> dict[str, object]:
    server = start_server(args.run, args.port, workers)
    url = f"http://127.0.0.1:{args.port}"
    try:
        pids = worker_pids(server, workers)
        figures: dict[str, object] = {"memory_at_start": [memory_of(p) for p in pids]}
        for clients in args.clients:
            if args.every:  # the soak: memory every `every` seconds under this load
                timeline = []
                for _ in range(int(args.seconds // args.every)):
                    result = asyncio.run(load(url, clients, args.every))
                    timeline.append({**result, "memory": [memory_of(p) for p in pids]})
                    print(json.dumps(timeline[-1]), flush=True)
                figures[f"{clients}_clients"] = timeline
                continue
            result = asyncio.run(load(url, clients, args.seconds))
            figures[f"{clients}_clients"] = {**result, "memory": [memory_of(p) for p in pids]}
            print(json.dumps({workers: {clients: figures[f"{clients}_clients"]}}), flush=True)
        one = figures.get("1_clients")
        if isinstance(one, dict):
            for clients in args.clients:
                entry = figures[f"{clients}_clients"]
                assert isinstance(entry, dict)
                entry["vs_one_client"] = round(entry["requests_per_s"] / one["requests_per_s"], 2)
        return figures
    finally:
        server.terminate()
        server.wait(timeout=30)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--run", type=Path, default=Path("runs/default"))
    parser.add_argument("--port", type=int, default=8766)
    parser.add_argument("--workers", default="1,2", help="comma-separated worker counts")
    parser.add_argument("--clients", default="1,8,32", help="comma-separated client counts")
    parser.add_argument("--seconds", type=float, default=60)
    parser.add_argument("--every", type=float, default=0, help="report memory this often (s)")
    args = parser.parse_args()
    args.clients = [int(c) for c in args.clients.split(",")]
    figures = {
        "cores": len(os.sched_getaffinity(0)),
        **{f"{w}_workers": measure(args, int(w)) for w in args.workers.split(",")},
    }
    print(json.dumps(figures, indent=2))


if __name__ == "__main__":
    main()
