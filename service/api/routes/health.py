"""GET /healthz (the process is up), /readyz (the run is loaded) and /metrics (Prometheus)."""

from __future__ import annotations

from fastapi import APIRouter, Request
from fastapi.responses import JSONResponse, PlainTextResponse, Response

from service.api.metrics import Metrics
from service.api.schemas import Problem
from service.api.state import RunHolder

router = APIRouter(tags=["health"])


@router.get("/healthz")
def healthz() -> dict[str, str]:
    """The process is up (says nothing about the run)."""
    return {"status": "ok"}


@router.get("/readyz", responses={503: {"description": "not ready"}})
def readyz(request: Request) -> JSONResponse:
    """Whether the run is loaded; false with the reason when it is missing or half built."""
    holder: RunHolder = request.app.state.holder
    ready, reason = holder.status()
    return JSONResponse({"ready": ready, "reason": reason}, status_code=200 if ready else 503)


@router.get(
    "/metrics",
    response_class=PlainTextResponse,
    responses={200: {"content": {"text/plain": {}}}, 401: {"model": Problem}},
)
def prometheus(request: Request) -> Response:
    """Prometheus text format: requests, latencies and samples drawn."""
    metrics: Metrics = request.app.state.metrics
    return Response(metrics.render(), media_type="text/plain; version=0.0.4")
