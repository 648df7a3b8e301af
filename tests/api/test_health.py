"""Health, readiness, info, metrics, the API key and run loading, on a real server."""

from __future__ import annotations

import shutil
from functools import partial
from pathlib import Path

from service.ngram.migrations import status as migration_status
from service.ngram.store import open_store
from service.run.paths import RunPaths
from tests.helpers import (
    assert_problem,
    downgrade_to_first_schema,
    get,
    post,
    readiness_reason,
    wait_for,
)
from tests.live_server import LiveServer, start_server, wait_ready


def test_health_ready_and_info(live_server: LiveServer) -> None:
    assert get(live_server, "/healthz").json() == {"status": "ok"}
    assert get(live_server, "/readyz").json() == {"ready": True, "reason": "ready"}
    info = get(live_server, "/v1/info").json()
    assert info["latent_shape"][1:] == [4, 4] and info["image_shape"] == [1, 28, 28]
    tables = {(t["gamma"], t["positional"]): t for t in info["tables"]}
    assert set(tables) == {(3, False), (5, False), (5, True)}
    assert tables[(5, False)]["arvm"] and not tables[(3, False)]["arvm"]
    assert info["limits"]["max_n"] == 256 and info["report"] is False


def test_metrics_count_requests(live_server: LiveServer) -> None:
    get(live_server, "/v1/info")
    text = get(live_server, "/metrics").text
    assert 'latentgram_requests_total{method="GET",route="/v1/info",status="200"}' in text
    assert "latentgram_request_seconds_bucket" in text


def test_report_is_404_until_written(live_server: LiveServer) -> None:
    assert_problem(get(live_server, "/v1/report"), 404, "latentgram report")


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
        # the key is checked before the body is read: a stranger learns nothing from a parse error
        broken = {"content": b"{not json", "headers": {"content-type": "application/json"}}
        assert_problem(post(server, "/v1/sample", **broken), 401, "API key")
        keyed = {**broken, "headers": {**broken["headers"], "X-API-Key": "s3cret"}}
        assert_problem(post(server, "/v1/sample", **keyed), 400, "not valid JSON")
        schema = get(server, "/openapi.json").json()
        assert schema["paths"]["/v1/sample"]["post"]["security"] == [{"ApiKey": []}, {"Bearer": []}]
        assert "security" not in schema["paths"]["/healthz"]["get"]


def test_missing_run_is_not_ready_with_the_reason(tmp_path: Path) -> None:
    for server in start_server(RunPaths(tmp_path / "nothing-here")):
        assert get(server, "/healthz").status_code == 200
        wait_for(partial(readiness_reason, server), "the first load to fail")
        ready = get(server, "/readyz")
        assert ready.status_code == 503 and not ready.json()["ready"]
        assert "does not exist" in ready.json()["reason"]
        assert_problem(get(server, "/v1/info"), 503, "not ready", "does not exist")


def test_half_built_run_is_not_ready(tmp_path: Path, tiny_run: RunPaths) -> None:
    """Trained and encoded, but no tables: readyz names the missing step."""
    half = RunPaths(tmp_path / "run")
    shutil.copytree(tiny_run.root, half.root, ignore=shutil.ignore_patterns("store.duckdb*"))
    for server in start_server(half):
        reason = wait_for(partial(readiness_reason, server), "the first load to fail")
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
