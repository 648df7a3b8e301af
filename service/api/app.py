"""The FastAPI app: settings, the run holder, error handlers, limits, metrics and the routers."""

from __future__ import annotations

from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from importlib import metadata

import torch
from fastapi import FastAPI

from service.api.handlers import add_error_handlers, add_limits_and_metrics
from service.api.metrics import Metrics
from service.api.openapi import install_openapi
from service.api.routes import ROUTERS
from service.api.routes.pages import mount_static
from service.api.settings import Settings, get_settings
from service.api.state import RunHolder


def create_app(settings: Settings | None = None) -> FastAPI:
    """The app serving `settings.run`; it answers /healthz at once and loads the run in a thread."""
    settings = settings or get_settings()
    holder = RunHolder(settings.run, settings.reload_seconds, settings.search_threads)

    @asynccontextmanager
    async def lifespan(app: FastAPI) -> AsyncIterator[None]:
        # Requests run side by side in threads (and processes): one decode gains nothing from
        # more than one core, and several multi-threaded ones at once stall each other.
        torch.set_num_threads(1)
        holder.start()  # in a thread: health answers while the run loads
        if settings.watch_seconds > 0:
            holder.watch(settings.watch_seconds)
        yield
        holder.stop()

    app = FastAPI(
        title="latentgram",
        version=metadata.version("latentgram"),
        description="Exact and neural sampling from binary latent n-grams, and memorization.",
        lifespan=lifespan,
        docs_url=None,  # served by routes/pages.py from local files, not from a CDN
        redoc_url=None,
    )
    metrics = Metrics()
    app.state.settings, app.state.holder, app.state.metrics = settings, holder, metrics
    add_error_handlers(app)
    add_limits_and_metrics(app, settings, metrics)
    for router in ROUTERS:
        app.include_router(router)
    mount_static(app)
    install_openapi(app, settings, holder)
    return app
