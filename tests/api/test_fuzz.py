"""Property-based fuzzing of every operation in the OpenAPI schema: no input may cause a 5xx.

The server runs with small limits so that the largest request the fuzzer can make is quick.
"""

from __future__ import annotations

from collections.abc import Iterator

import pytest
import schemathesis
from hypothesis import HealthCheck, given, settings
from schemathesis.checks import not_a_server_error
from schemathesis.specs.openapi.checks import (
    content_type_conformance,
    response_schema_conformance,
    status_code_conformance,
)

from service.run.paths import RunPaths
from tests.live_server import LiveServer, start_server, wait_ready


@pytest.fixture(scope="module")
def fuzzed_server(prepared_run: RunPaths) -> Iterator[LiveServer]:
    limits = {"LATENTGRAM_MAX_N": "4", "LATENTGRAM_MAX_BUDGET": "500", "LATENTGRAM_MAX_K": "5"}
    for server in start_server(prepared_run, **limits):
        wait_ready(server)
        yield server


def test_no_input_causes_a_server_error(fuzzed_server: LiveServer) -> None:
    """Each operation gets the same derandomized examples on every run (reproducible)."""
    api = schemathesis.openapi.from_url(f"{fuzzed_server.url}/openapi.json")
    checks = [
        not_a_server_error,
        status_code_conformance,
        content_type_conformance,
        response_schema_conformance,
    ]
    operations = [result.ok() for result in api.get_all_operations()]
    assert len(operations) >= 10
    for operation in operations:

        @given(case=operation.as_strategy())
        @settings(
            max_examples=25,
            deadline=None,
            derandomize=True,
            suppress_health_check=list(HealthCheck),
        )
        def fuzz(case: schemathesis.Case) -> None:
            case.call_and_validate(checks=checks)

        fuzz()
