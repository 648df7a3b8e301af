"""The schemathesis command line, `--checks all`, against a real server: every operation of
/openapi.json, schema-valid and schema-violating requests alike, must be answered as the schema
says (not only without a 5xx), with and without an API key.

The server runs with small limits so that the largest request the fuzzer can make is quick; a
fixed seed makes every run send the same requests.
"""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

from service.run.paths import RunPaths
from tests.live_server import start_server, wait_ready

LIMITS = {
    "LATENTGRAM_MAX_N": "4",
    "LATENTGRAM_MAX_BUDGET": "500",
    "LATENTGRAM_MAX_K": "5",
    "LATENTGRAM_MAX_IMAGES": "4",
}
ST = Path(sys.executable).with_name("st")  # schemathesis, installed beside this interpreter
ROOT = Path(__file__).resolve().parents[2]  # where `tests.api.image_strategies` imports from


@pytest.mark.parametrize("api_key", [None, "s3cret"])
def test_every_conformance_check_passes(prepared_run: RunPaths, api_key: str | None) -> None:
    for server in start_server(prepared_run, api_key, **LIMITS):
        wait_ready(server)
        command = [str(ST), "run", f"{server.url}/openapi.json", "--checks", "all"]
        command += ["--max-examples", "8", "--seed", "7", "--no-color"]
        if api_key:
            command += ["--header", f"X-API-Key: {api_key}"]
        # real image files where the schema asks for one (see image_strategies.py)
        env = {**os.environ, "SCHEMATHESIS_HOOKS": "tests.api.image_strategies"}
        done = subprocess.run(
            command, env=env, cwd=ROOT, capture_output=True, text=True, timeout=600
        )
        summary = done.stdout[-4000:]
        assert done.returncode == 0, summary
        assert " passed" in summary and "failed" not in summary, summary
