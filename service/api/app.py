"""The FastAPI app: wiring, errors, API key, body limit, metrics, health and the web page."""

from __future__ import annotations

import hmac
import time
from collections.abc import AsyncIterator, Awaitable, Callable
from contextlib import asynccontextmanager
from importlib import metadata, resources
from pathlib import Path
from typing import Any

from fastapi import Depends, FastAPI, Request
from fastapi.exceptions import HTTPException, RequestValidationError
from fastapi.openapi.docs import get_swagger_ui_html
from fastapi.responses import FileResponse, JSONResponse, PlainTextResponse, Response
from fastapi.staticfiles import StaticFiles

from service.api.metrics import Metrics
from service.api.routes import router
from service.api.schemas import Problem
from service.api.settings import Settings
from service.api.state import EngineHolder, NotReadyError
from service.errors import InvalidInputError, LatentgramError

STATIC = Path(__file__).parent / "static"
SWAGGER_UI = Path(str(resources.files("fastapi_swagger") / "resources"))  # Swagger UI 5 files


def _problem(status: int, detail: str, **headers: str) -> JSONResponse:
    return JSONResponse({"detail": detail}, status_code=status, headers=headers or None)


def _field(loc: tuple[Any, ...]) -> str:
    """("body", "n") → "n"; ("query", "k") → "k"."""
    parts = [str(p) for p in loc if p not in ("body", "query", "path", "form")]
    return ".".join(parts) or "body"


def require_key(request: Request) -> None:
    """With LATENTGRAM_API_KEY set, /v1 and /metrics need it as X-API-Key or a Bearer token."""
    key = request.app.state.settings.api_key
    if not key:
        return
    given = request.headers.get("x-api-key")
    auth = request.headers.get("authorization", "")
    if given is None and auth.lower().startswith("bearer "):
        given = auth[7:].strip()
    if not given or not hmac.compare_digest(given.encode(), key.encode()):
        raise HTTPException(
            401,
            "missing or wrong API key: send it as X-API-Key or Authorization: Bearer",
            headers={"WWW-Authenticate": "Bearer"},
        )


def create_app(settings: Settings | None = None) -> FastAPI:
    settings = settings or Settings.from_env()
    holder = EngineHolder(settings.run, settings.reload_seconds)
    metrics = Metrics()

    @asynccontextmanager
    async def lifespan(app: FastAPI) -> AsyncIterator[None]:
        holder.start()  # in a thread: health answers while the run loads
        yield

    app = FastAPI(
        title="latentgram",
        version=metadata.version("latentgram"),
        description="Exact and neural sampling from binary latent n-grams, and memorization.",
        lifespan=lifespan,
        docs_url=None,  # served below from local files: FastAPI's default loads them from a CDN
        redoc_url=None,
    )
    app.state.settings, app.state.holder, app.state.metrics = settings, holder, metrics

    @app.exception_handler(RequestValidationError)
    async def invalid_request(request: Request, exc: RequestValidationError) -> JSONResponse:
        errors = exc.errors()
        detail = "; ".join(f"{_field(tuple(e['loc']))}: {e['msg']}" for e in errors)
        return _problem(422, detail or "invalid request")

    @app.exception_handler(InvalidInputError)
    async def invalid_input(request: Request, exc: InvalidInputError) -> JSONResponse:
        return _problem(422, str(exc))

    @app.exception_handler(LookupError)
    async def not_found(request: Request, exc: LookupError) -> JSONResponse:
        return _problem(404, str(exc.args[0]) if exc.args else "not found")

    @app.exception_handler(NotReadyError)
    async def not_ready(request: Request, exc: NotReadyError) -> JSONResponse:
        return _problem(503, f"the run is not ready: {exc}", **{"Retry-After": "5"})

    @app.exception_handler(LatentgramError)
    async def run_problem(request: Request, exc: LatentgramError) -> JSONResponse:
        return _problem(409, str(exc))

    @app.middleware("http")
    async def limit_and_measure(
        request: Request, call_next: Callable[[Request], Awaitable[Response]]
    ) -> Response:
        started = time.perf_counter()
        length = request.headers.get("content-length")
        if length is not None and (not length.isdigit() or int(length) > settings.max_upload_bytes):
            response: Response = _problem(
                413, f"request body must be at most {settings.max_upload_bytes} bytes"
            )
        else:
            response = await call_next(request)
        route = request.scope.get("route")
        template = getattr(route, "path", "unmatched")
        metrics.observe(
            request.method, template, response.status_code, time.perf_counter() - started
        )
        return response

    @app.get("/healthz", tags=["health"])
    def healthz() -> dict[str, str]:
        """The process is up (says nothing about the run)."""
        return {"status": "ok"}

    @app.get("/readyz", tags=["health"], responses={503: {"description": "not ready"}})
    def readyz() -> JSONResponse:
        """Whether the run is loaded; false with the reason when it is missing or half built."""
        ready, reason = holder.status()
        return JSONResponse({"ready": ready, "reason": reason}, status_code=200 if ready else 503)

    @app.get(
        "/metrics",
        tags=["health"],
        dependencies=[Depends(require_key)],
        response_class=PlainTextResponse,
        responses={200: {"content": {"text/plain": {}}}, 401: {"model": Problem}},
    )
    def prometheus() -> Response:
        """Prometheus text format: requests, latencies and samples drawn."""
        return Response(metrics.render(), media_type="text/plain; version=0.0.4")

    @app.get("/", include_in_schema=False)
    def page() -> FileResponse:
        return FileResponse(STATIC / "index.html")

    @app.get("/docs", include_in_schema=False)
    def docs() -> Response:
        """Swagger UI for /openapi.json, from the fastapi-swagger package: works offline."""
        return get_swagger_ui_html(
            openapi_url="/openapi.json",
            title="latentgram API",
            swagger_js_url="/docs-assets/swagger-ui-bundle.js",
            swagger_css_url="/docs-assets/swagger-ui.css",
            swagger_favicon_url="/docs-assets/favicon-32x32.png",
        )

    app.mount("/docs-assets", StaticFiles(directory=SWAGGER_UI), name="docs-assets")
    app.mount("/static", StaticFiles(directory=STATIC), name="static")
    app.include_router(router, dependencies=[Depends(require_key)])
    return app
