"""`latentgram serve` in its own process on a loopback port, for the API and browser tests."""

from __future__ import annotations

import os
import socket
import subprocess
import sys
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

import httpx

from service.run.paths import RunPaths


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


@dataclass(frozen=True)
class LiveServer:
    url: str
    run: RunPaths
    api_key: str | None
    pid: int = 0  # the `latentgram serve` process


def start_server(
    run: RunPaths,
    api_key: str | None = None,
    *,
    python: str = sys.executable,
    cwd: Path | None = None,
    **env: str,
) -> Iterator[LiveServer]:
    """`latentgram serve` in its own process on a loopback port, until the generator closes;
    `python` is the interpreter it runs under (an installed copy's, say), `cwd` where."""
    port = _free_port()
    environ = {**os.environ, "OMP_NUM_THREADS": "1", **env}
    environ.pop("LATENTGRAM_API_KEY", None)
    if api_key:
        environ["LATENTGRAM_API_KEY"] = api_key
    command = [python, "-m", "service.cli", "serve", "--run", str(run.root)]
    command += ["--port", str(port), "--log-level", "warning"]
    process = subprocess.Popen(command, env=environ, cwd=cwd)
    url = f"http://127.0.0.1:{port}"
    try:
        deadline = time.monotonic() + 60
        while True:
            if process.poll() is not None:
                raise RuntimeError(f"server exited with {process.returncode}")
            try:
                if httpx.get(f"{url}/healthz", timeout=1).status_code == 200:
                    break
            except httpx.TransportError:
                pass
            if time.monotonic() > deadline:
                raise RuntimeError("server did not answer /healthz within 60 s")
            time.sleep(0.1)
        yield LiveServer(url, run, api_key, process.pid)
    finally:
        process.terminate()
        process.wait(timeout=10)


serving = contextmanager(start_server)  # `with serving(run) as server:`


def wait_ready(server: LiveServer, timeout: float = 60) -> None:
    headers = {"X-API-Key": server.api_key} if server.api_key else {}
    deadline = time.monotonic() + timeout
    while httpx.get(f"{server.url}/readyz", headers=headers).status_code != 200:
        if time.monotonic() > deadline:
            raise RuntimeError(httpx.get(f"{server.url}/readyz").text)
        time.sleep(0.1)
