"""GET /v1/report and its plot: the latest memorization report of the run."""

from __future__ import annotations

from typing import Any

from fastapi.responses import FileResponse, Response

from service.api.common import v1_router
from service.api.deps import RunDep
from service.evaluation.report_config import REPORT_JSON, REPORT_PLOT

router = v1_router()


@router.get("/report", tags=["memorization"])
def report(run: RunDep) -> Any:
    """The latest memorization report (written by `latentgram report`)."""
    path = run.paths.reports / REPORT_JSON
    if not path.exists():
        raise LookupError(f"no report yet: run `latentgram report --run {run.paths.root}`")
    return FileResponse(path, media_type="application/json")


@router.get(
    "/report/memorization.png",
    tags=["memorization"],
    response_class=Response,
    responses={200: {"content": {"image/png": {}}}},
)
def report_plot(run: RunDep) -> Any:
    """Memorization and exact-copy rates against γ, as PNG."""
    path = run.paths.reports / REPORT_PLOT
    if not path.exists():
        raise LookupError(f"no report yet: run `latentgram report --run {run.paths.root}`")
    return FileResponse(path, media_type="image/png")
