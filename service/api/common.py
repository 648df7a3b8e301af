"""Pieces several routers share: the error responses every /v1 route documents, limits checked
against the settings, and base64 text."""

from __future__ import annotations

import base64
from typing import Any

from fastapi import APIRouter

from service.api.deps import ApiKey
from service.api.schemas import Hit, Problem
from service.errors import InvalidInputError

ERRORS: dict[int | str, dict[str, Any]] = {
    401: {"model": Problem, "description": "API key missing or wrong"},
    404: {"model": Problem, "description": "not found"},
    409: {"model": Problem, "description": "the run lacks what this needs"},
    413: {"model": Problem, "description": "request body too large"},
    422: {"model": Problem, "description": "a field is out of range or malformed"},
    503: {"model": Problem, "description": "the run is not ready"},
}


def v1_router() -> APIRouter:
    """A router under /v1 that needs the API key (when one is set) and documents ERRORS."""
    return APIRouter(prefix="/v1", responses=ERRORS, dependencies=[ApiKey])


def check_range(field: str, value: int, low: int, high: int) -> None:
    if not low <= value <= high:
        raise InvalidInputError(f"{field} must be in {low}..{high}, got {value}")


def b64(data: bytes) -> str:
    return base64.b64encode(data).decode("ascii")


def hits_of(found: list[dict[str, Any]]) -> list[Hit]:
    return [Hit(**hit) for hit in found]
