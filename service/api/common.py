"""Pieces several routers share: the error responses every /v1 route documents, limits checked
against the settings, and base64 text."""

from __future__ import annotations

import base64
from typing import Any

from fastapi import APIRouter
from pydantic import BaseModel

from service.api.schemas import Hit, Problem
from service.errors import InvalidInputError
from service.run.loaded import LoadedRun

ERRORS: dict[int | str, dict[str, Any]] = {
    400: {"model": Problem, "description": "the body is not valid JSON"},
    401: {"model": Problem, "description": "API key missing or wrong"},
    404: {"model": Problem, "description": "not found"},
    409: {"model": Problem, "description": "the run lacks what this needs (a table, a γ-ARVM)"},
    411: {"model": Problem, "description": "a POST body without Content-Length (chunked)"},
    413: {"model": Problem, "description": "request body too large"},
    415: {"model": Problem, "description": "the body was not sent as JSON"},
    422: {"model": Problem, "description": "a field is out of range or malformed"},
    503: {"model": Problem, "description": "the run is not ready"},
}


def v1_router() -> APIRouter:
    """A router under /v1 that documents ERRORS (the API key is checked by a middleware)."""
    return APIRouter(prefix="/v1", responses=ERRORS)


DEFAULT_GAMMA = 5


def given_or_capped(body: BaseModel, field: str, limit: int) -> int:
    """The field as given; left out, its default capped at the server's limit, so that an empty
    request is a valid one (/openapi.json states the same default)."""
    value: int = getattr(body, field)
    return value if field in body.model_fields_set else min(value, limit)


def max_hits(max_k: int, run: LoadedRun | None) -> int:
    """The most nearest training images one query may ask for: max_k, and no more than the run
    has (the run unknown while it loads)."""
    return max_k if run is None else min(max_k, run.train_images)


def default_gamma(built: list[int]) -> int:
    """γ when a request leaves it out: 5, or the least built γ when 5 has no table."""
    return DEFAULT_GAMMA if DEFAULT_GAMMA in built or not built else min(built)


def check_range(field: str, value: int, low: int, high: int) -> None:
    if not low <= value <= high:
        raise InvalidInputError(f"{field} must be in {low}..{high}, got {value}")


def b64(data: bytes) -> str:
    return base64.b64encode(data).decode("ascii")


def hits_of(found: list[dict[str, Any]]) -> list[Hit]:
    return [Hit(**hit) for hit in found]
