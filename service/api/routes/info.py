"""GET /v1/info: what the served run holds, and the server's limits."""

from __future__ import annotations

from typing import Any

from service.api.common import v1_router
from service.api.deps import RunDep, SettingsDep
from service.evaluation.report_config import REPORT_JSON
from service.ngram.samples import MODES

router = v1_router()


@router.get("/info", tags=["run"])
def info(run: RunDep, settings: SettingsDep) -> dict[str, Any]:
    """The run: shapes, tables, which γ have a γ-ARVM, and the server's limits."""
    limits = settings.model_dump(exclude={"run", "api_key", "reload_seconds"})
    return {
        **run.describe(),
        "modes": list(MODES),
        "limits": limits,
        "report": (run.paths.reports / REPORT_JSON).exists(),
    }
