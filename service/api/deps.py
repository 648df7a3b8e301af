"""The dependencies routes declare (the settings, the loaded run) and the API key check."""

from __future__ import annotations

import hmac
from typing import Annotated

from fastapi import Depends, Request

from service.api.settings import Settings
from service.api.state import RunHolder
from service.run.loaded import LoadedRun


def get_app_settings(request: Request) -> Settings:
    settings: Settings = request.app.state.settings
    return settings


def get_run(request: Request) -> LoadedRun:
    """The loaded run, or NotReadyError (a 503 with the reason) while there is none."""
    holder: RunHolder = request.app.state.holder
    return holder.get()


SettingsDep = Annotated[Settings, Depends(get_app_settings)]
RunDep = Annotated[LoadedRun, Depends(get_run)]


def key_is_wrong(request: Request, settings: Settings) -> bool:
    """With LATENTGRAM_API_KEY set: whether the request lacks it, as X-API-Key or a Bearer token.
    Checked by a middleware (service/api/handlers.py) before the body is read."""
    key = settings.api_key
    if not key:
        return False
    given = request.headers.get("x-api-key")
    auth = request.headers.get("authorization", "")
    if given is None and auth.lower().startswith("bearer "):
        given = auth[7:].strip()
    return not given or not hmac.compare_digest(given.encode(), key.encode())
