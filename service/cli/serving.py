"""Commands over a finished run: the memorization report, and the HTTP service."""

from __future__ import annotations

import os
import socket
from collections.abc import Iterable
from pathlib import Path
from typing import Annotated

import typer

from service.cli.app import RunOpt, SeedOpt, app, emit, parse_int_list
from service.errors import InvalidInputError, first_line
from service.evaluation.report_config import (
    REPORT_JSON,
    REPORT_MODES,
    REPORT_PLOT,
    ReportConfig,
    parse_modes,
)
from service.run.paths import DEFAULT_RUN_DIR, RunPaths


@app.command()
def report(
    run: RunOpt = DEFAULT_RUN_DIR,
    samples: Annotated[
        int, typer.Option(help="Samples per γ and mode (and test images in the baseline).", min=2)
    ] = ReportConfig.samples,
    gamma: Annotated[
        str | None, typer.Option(help="Comma-separated γ (default: every table built).")
    ] = None,
    modes: Annotated[
        str, typer.Option(help="Comma-separated sampling modes among exact, hybrid, neural.")
    ] = ",".join(REPORT_MODES),
    seed: SeedOpt = 0,
    budget: Annotated[int, typer.Option(help="Search steps per exact sample.", min=1)] = (
        ReportConfig.budget
    ),
    inception: Annotated[
        Path | None,
        typer.Option(
            help="inception-2015-12-05.pt (TorchScript Inception-v3) to also report the standard "
            "FID; without it only the classifier Fréchet distance is reported."
        ),
    ] = None,
) -> None:
    """Memorization report: how often samples copy training images, per γ and mode, beside a
    held-out baseline; JSON, plots and sample sheets in the run's reports/ folder."""
    config = ReportConfig(
        samples=samples,
        gammas=parse_int_list(gamma, "--gamma"),
        modes=parse_modes(modes),
        seed=seed,
        budget=budget,
        inception=inception,
    )
    paths = RunPaths(run).existing()  # these first: torch takes seconds to load
    from service.evaluation.features import checked_inception
    from service.evaluation.report import build_report
    from service.run.loaded import LoadedRun

    network = checked_inception(inception) if inception is not None else None  # before the run
    result = build_report(LoadedRun.load(paths.root), config, inception=network)
    emit(
        f"report: {paths.reports / REPORT_JSON} (plot: {paths.reports / REPORT_PLOT})",
        {"seconds": result["seconds"], **result["summary"]},
    )


@app.command()
def serve(
    run: RunOpt = DEFAULT_RUN_DIR,
    host: Annotated[str, typer.Option(help="Address to listen on (0.0.0.0 for all).")] = (
        "127.0.0.1"
    ),
    port: Annotated[int, typer.Option(help="TCP port.", min=1, max=65535)] = 8000,
    log_level: Annotated[str, typer.Option(help="uvicorn log level.")] = "info",
    workers: Annotated[
        int | None,
        typer.Option(help="Processes serving the port (default: LATENTGRAM_WORKERS, 1).", min=1),
    ] = None,
) -> None:
    """Serve the run over HTTP: the /v1 API, /docs, the web page at /, /healthz, /metrics.

    Limits and the API key come from LATENTGRAM_* variables (see README, "The service").
    """
    import uvicorn  # the web stack loads only for this command

    from service.api import Settings, create_app
    from service.api.settings import ENV_PREFIX
    from service.api.workers import serve_workers

    settings = Settings.from_env(run=run, workers=workers)
    RunPaths(settings.run)  # a run that is a file is refused; one still to come is waited for
    _check_can_serve(host, port, log_level, uvicorn.config.LOG_LEVELS)
    typer.echo(
        f"serving {settings.run} on http://{host}:{port} with {settings.workers} process(es)"
        " (API docs at /docs)"
    )
    if settings.workers == 1:
        uvicorn.run(create_app(settings), host=host, port=port, log_level=log_level)
        return
    # Worker processes read their settings from the environment, as the parent did. Each one's
    # numpy gets its share of the cores (torch and the exact search are set in create_app).
    os.environ[f"{ENV_PREFIX}RUN"] = str(settings.run)
    os.environ[f"{ENV_PREFIX}WORKERS"] = str(settings.workers)
    for variable in ("OMP_NUM_THREADS", "OPENBLAS_NUM_THREADS", "MKL_NUM_THREADS"):
        os.environ.setdefault(variable, str(settings.search_threads))
    raise typer.Exit(serve_workers(settings.workers, host, port, log_level))


def _check_can_serve(host: str, port: int, log_level: str, levels: Iterable[str]) -> None:
    """InvalidInputError before the server starts, for what would otherwise stop it later with
    a traceback: a log level uvicorn lacks, an address it cannot bind."""
    if log_level not in levels:
        allowed = ", ".join(levels)
        raise InvalidInputError(f"--log-level must be one of {allowed}, got {log_level!r}")
    family = socket.AF_INET6 if ":" in host else socket.AF_INET  # as uvicorn chooses it
    try:
        socket.create_server((host, port), family=family).close()  # SO_REUSEADDR, as uvicorn
    except OSError as exc:
        raise InvalidInputError(f"cannot listen on {host}:{port}: {first_line(exc)}") from None


@app.command()
def evaluate(
    run: RunOpt = DEFAULT_RUN_DIR,
    images: Annotated[
        int, typer.Option(help="Images of each split to score (test: its report half).", min=1)
    ] = 5000,
) -> None:
    """Held-out likelihood: bits per token on test and training windows for each γ, for the
    unigram, the smoothed n-gram, the γ-ARVM and the two interpolated; with the gap."""
    paths = RunPaths(run).existing()
    paths.require(paths.latents, "encode")  # before torch, which takes seconds to load
    from service.evaluation.likelihood import LIKELIHOOD_JSON, LIKELIHOOD_PLOT, evaluate_run

    figures = evaluate_run(paths, images=images)
    emit(
        f"likelihood: {paths.reports / LIKELIHOOD_JSON} (plot: {paths.reports / LIKELIHOOD_PLOT})",
        {"images": figures["images"], **figures["bits_per_token"], "gap": figures["gap"]},
    )
