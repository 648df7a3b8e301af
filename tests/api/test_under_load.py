"""The service under load, each against a real `latentgram serve` on loopback: worker processes,
a table rebuilt while requests stream in, more requests than a process takes at once, and a
request that runs out of time."""

from __future__ import annotations

import shutil
import subprocess
import sys
import threading
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import httpx

from service.run.paths import RunPaths
from tests.helpers import get, post, wait_for
from tests.live_server import LiveServer, serving, wait_ready


def table_id(server: LiveServer, gamma: int) -> int:
    tables = get(server, "/v1/info").json()["tables"]
    return next(t["id"] for t in tables if t["gamma"] == gamma and not t["positional"])


def test_a_rebuilt_table_is_served_without_a_restart(
    prepared_run: RunPaths, tmp_path: Path
) -> None:
    """`latentgram build` while requests stream in: none fails, /readyz stays ready, and the new
    table id is served within 5 s of the build's end."""
    run = RunPaths(tmp_path / "run")
    shutil.copytree(prepared_run.root, run.root)
    with serving(run, LATENTGRAM_WATCH_SECONDS="0.2") as server:
        wait_ready(server)
        before = table_id(server, 3)
        stop, answers = threading.Event(), []

        def stream() -> None:
            seed = 0
            while not stop.is_set():
                answers.append(post(server, "/v1/sample", json={"n": 4, "gamma": 3, "seed": seed}))
                answers.append(get(server, "/readyz"))
                seed += 1

        streams = [threading.Thread(target=stream) for _ in range(2)]
        for thread in streams:
            thread.start()
        try:
            command = [sys.executable, "-m", "service.cli", "build", "--run", str(run.root)]
            subprocess.run([*command, "--gamma", "3"], check=True, capture_output=True)
            built = time.monotonic()
            after = wait_for(lambda: (i := table_id(server, 3)) != before and i, "the new table")
            assert time.monotonic() - built <= 5
            count = len(answers)
            wait_for(lambda: len(answers) > count + 4, "requests on the new table")
        finally:
            stop.set()
            for thread in streams:
                thread.join()
        assert after > before
        assert {a.status_code for a in answers} == {200}, [a.text for a in answers[-3:]]


def test_requests_beyond_what_a_process_takes_get_503_with_retry_after(
    prepared_run: RunPaths,
) -> None:
    heavy = {"n": 256, "gamma": 3, "budget": 100_000, "nearest": 5}
    with serving(prepared_run, LATENTGRAM_MAX_IN_FLIGHT="1") as server:
        wait_ready(server)
        with ThreadPoolExecutor(6) as pool:
            answers = list(pool.map(lambda s: post(server, "/v1/sample", json=heavy), range(6)))
        codes = sorted(a.status_code for a in answers)
        assert codes[0] == 200 and set(codes) == {200, 503}, codes
        busy = next(a for a in answers if a.status_code == 503)
        assert busy.headers["Retry-After"] == "1" and "busy" in busy.json()["detail"]
        assert get(server, "/readyz").status_code == 200  # not counted: only /v1 POSTs are


def test_a_request_out_of_time_reports_its_unreached_samples(prepared_run: RunPaths) -> None:
    with serving(prepared_run, LATENTGRAM_REQUEST_SECONDS="0.000001") as server:
        wait_ready(server)
        answer = post(server, "/v1/sample", json={"n": 64, "gamma": 3})
        assert answer.status_code == 200
        samples = answer.json()["samples"]
        assert {s["failure"] for s in samples} == {"deadline"}
        assert all(not s["ok"] and s["steps"] == 0 for s in samples)


def children(pid: int) -> list[int]:
    with open(f"/proc/{pid}/task/{pid}/children") as f:
        return [int(c) for c in f.read().split()]


def test_workers_are_processes_answering_the_same_port(prepared_run: RunPaths) -> None:
    with serving(prepared_run, LATENTGRAM_WORKERS="2") as server:
        # every worker, not only the first to load: each new connection may reach either
        wait_for(
            lambda: all(get(server, "/readyz").status_code == 200 for _ in range(12)),
            "both workers to be ready",
            timeout=180,
        )
        answers = [post(server, "/v1/sample", json={"n": 2, "gamma": 5, "seed": s}) for s in (1, 1)]
        assert [a.status_code for a in answers] == [200, 200]
        assert answers[0].json()["samples"] == answers[1].json()["samples"]
        assert len(children(server.pid)) >= 2
        assert httpx.get(f"{server.url}/healthz").status_code == 200
