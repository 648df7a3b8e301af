"""How errors become HTTP answers, in one place: engine errors by type, validation errors with
the field named, and the two checks made before a body is read: the API key, then its size."""

from __future__ import annotations

import time
from collections.abc import Awaitable, Callable
from typing import Any

from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse, Response

from service.api.deps import key_is_wrong
from service.api.metrics import Metrics
from service.api.settings import Settings
from service.api.state import NotReadyError
from service.errors import InvalidInputError, LatentgramError

PROTECTED = ("/v1/", "/metrics")  # the paths that need the API key when one is set


def problem(status: int, detail: str, **headers: str) -> JSONResponse:
    """The one error body of the API: {"detail": "..."}."""
    return JSONResponse({"detail": detail}, status_code=status, headers=headers or None)


def field_name(loc: tuple[Any, ...]) -> str:
    """("body", "n") → "n"; ("query", "k") → "k"."""
    parts = [str(p) for p in loc if p not in ("body", "query", "path", "form")]
    return ".".join(parts) or "body"


async def invalid_request(request: Request, exc: Exception) -> JSONResponse:
    """422 naming each bad field; 400 when the body is not JSON at all, 415 when it was not
    sent as JSON (`curl -d` sends a form)."""
    assert isinstance(exc, RequestValidationError)
    errors = exc.errors()
    media = request.headers.get("content-type", "").split(";")[0].strip().lower()
    if media and media != "application/json" and any(tuple(e["loc"]) == ("body",) for e in errors):
        return problem(
            415, f"send the body as JSON, with content-type: application/json (got {media})"
        )
    broken = [e for e in errors if e["type"] == "json_invalid"]
    if broken:
        why = broken[0].get("ctx", {}).get("error", broken[0]["msg"])
        at = broken[0]["loc"][-1]
        return problem(400, f"the body is not valid JSON: {why} (at character {at})")
    detail = "; ".join(f"{field_name(tuple(e['loc']))}: {e['msg']}" for e in errors)
    return problem(422, detail or "invalid request")


async def invalid_input(request: Request, exc: Exception) -> JSONResponse:
    return problem(422, str(exc))


async def not_found(request: Request, exc: Exception) -> JSONResponse:
    return problem(404, str(exc.args[0]) if exc.args else "not found")


async def not_ready(request: Request, exc: Exception) -> JSONResponse:
    return problem(503, f"the run is not ready: {exc}", **{"Retry-After": "5"})


async def run_problem(request: Request, exc: Exception) -> JSONResponse:
    return problem(409, str(exc))


def add_error_handlers(app: FastAPI) -> None:
    """Engine errors → 4xx/503 by type (the most specific handler wins)."""
    app.add_exception_handler(RequestValidationError, invalid_request)
    app.add_exception_handler(InvalidInputError, invalid_input)
    app.add_exception_handler(LookupError, not_found)
    app.add_exception_handler(NotReadyError, not_ready)
    app.add_exception_handler(LatentgramError, run_problem)


def add_limits_and_metrics(app: FastAPI, settings: Settings, metrics: Metrics) -> None:
    """Refuse a request without the key, then a body over the limit from its Content-Length,
    before the body is read, then a /v1 POST beyond the requests this process may work on at
    once; count and time every request."""
    in_flight = 0  # /v1 POSTs being worked on; only the event loop's thread changes it

    @app.middleware("http")
    async def limit_and_measure(
        request: Request, call_next: Callable[[Request], Awaitable[Response]]
    ) -> Response:
        nonlocal in_flight
        started = time.perf_counter()
        length = request.headers.get("content-length")
        response: Response
        if request.url.path.startswith(PROTECTED) and key_is_wrong(request, settings):
            response = problem(
                401,
                "missing or wrong API key: send it as X-API-Key or Authorization: Bearer",
                **{"WWW-Authenticate": "Bearer"},
            )
        elif length is not None and (
            not length.isdigit() or int(length) > settings.max_upload_bytes
        ):
            response = problem(
                413, f"request body must be at most {settings.max_upload_bytes} bytes"
            )
        elif request.method != "POST" or not request.url.path.startswith("/v1/"):
            response = await call_next(request)
        elif length is None:  # a chunked body: its size would be known only once it is all read
            response = problem(
                411,
                "send the body with a Content-Length header "
                f"(at most {settings.max_upload_bytes} bytes), not chunked",
            )
        elif in_flight >= settings.max_in_flight:
            # Read the (small, size-checked) body first: closing a connection with unread data
            # resets it, and the client would see a broken connection instead of the 503.
            await request.body()
            response = problem(
                503,
                f"busy: {in_flight} requests in progress, the most this process takes at once;"
                " retry shortly",
                **{"Retry-After": "1"},
            )
        else:
            in_flight += 1
            try:
                response = await call_next(request)
            finally:
                in_flight -= 1
        route = request.scope.get("route")
        template = getattr(route, "path", "unmatched")
        metrics.observe(
            request.method, template, response.status_code, time.perf_counter() - started
        )
        return response
