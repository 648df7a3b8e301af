"""Commands of the n-gram store: migrate it, build tables, list them."""

from __future__ import annotations

from dataclasses import asdict
from pathlib import Path
from typing import Annotated, Any

import duckdb
import typer

from service.cli.app import GammasOpt, RunOpt, app, emit, parse_int_list
from service.errors import InvalidInputError
from service.ngram.index import NgramIndex
from service.ngram.migrations import MigrationStatus, check_not_newer
from service.ngram.migrations import migrate as apply_migrations
from service.ngram.migrations import status as migration_status
from service.ngram.store import TableInfo, list_tables, open_store
from service.run.build import build_run_tables
from service.run.paths import DEFAULT_RUN_DIR, RunPaths
from service.settings import BuildSettings


@app.command()
def migrate(
    run: RunOpt = DEFAULT_RUN_DIR,
    show_status: Annotated[
        bool, typer.Option("--status", help="Only show current and latest schema versions.")
    ] = False,
) -> None:
    """Bring the run's DuckDB store up to the latest schema (migrating twice is a no-op)."""
    paths = RunPaths(run).existing()  # a mistyped run is not made
    store = paths.store
    if show_status:
        emit(f"store: {store}", asdict(_schema_state(paths.require(store, "build"))))
        return
    applied: list[str] = []
    if not store.exists() or _pending(store):  # opened for writing only then: it may be read-only
        with duckdb.connect(str(store)) as con:  # a new store gets every migration
            applied = apply_migrations(con)
    emit(f"store: {store}", {**asdict(_schema_state(store)), "applied_now": applied})


def _pending(store: Path) -> bool:
    state = _schema_state(store)
    check_not_newer(state.current, state.latest)
    return bool(state.pending)


def _schema_state(store: Path) -> MigrationStatus:
    with open_store(store, read_only=True, check_schema=False) as con:
        return migration_status(con)


@app.command()
def build(
    run: RunOpt = DEFAULT_RUN_DIR,
    gamma: GammasOpt = None,
    positional: Annotated[
        bool, typer.Option(help="Add the position (y, x) to every context key.")
    ] = False,
    engine: Annotated[
        str | None,
        typer.Option(
            help="duckdb (this machine; memory bounded by --memory-limit) or spark (pyspark, "
            "local or a cluster). Default: LATENTGRAM_BUILD_ENGINE, else duckdb."
        ),
    ] = None,
    memory_limit: Annotated[
        str | None,
        typer.Option(
            help="DuckDB's memory limit for the build, e.g. 4GB; the chunks' counts are spilled "
            "to <run>/tmp and merged from there. Default: LATENTGRAM_BUILD_MEMORY_LIMIT, else "
            "DuckDB's (80% of RAM)."
        ),
    ] = None,
    spark_master: Annotated[
        str | None,
        typer.Option(
            help="Spark master for --engine spark: local[*], local[N], spark://HOST:PORT, yarn, "
            "k8s://https://HOST:PORT. Default: LATENTGRAM_BUILD_SPARK_MASTER, else local[*]."
        ),
    ] = None,
) -> None:
    """Build the exact n-gram tables (context → next-token histograms) of the training latents."""
    gammas = parse_int_list(gamma, "--gamma")
    settings = BuildSettings.from_env(
        engine=engine, memory_limit=memory_limit, spark_master=spark_master
    )
    if spark_master is not None and settings.engine != "spark":
        raise InvalidInputError(
            f"--spark-master is for --engine spark; this build runs on {settings.engine}"
        )
    built = build_run_tables(
        RunPaths(run), gammas or None, positional=positional, settings=settings
    )
    emit("tables built", {t.name: table_figures(t) for t in built})


def table_figures(table: TableInfo) -> dict[str, Any]:
    return {
        "windows": table.windows,
        "contexts": table.contexts,
        "rows": table.rows,
        "images": table.images,
        "build_s": round(table.build_seconds, 3),
    }


@app.command()
def tables(run: RunOpt = DEFAULT_RUN_DIR) -> None:
    """List the n-gram tables built in the run's store, with their sizes."""
    paths = RunPaths(run)
    with open_store(paths.require(paths.store, "build"), read_only=True) as con:
        built = list_tables(con)
    if not built:
        typer.echo("no tables built yet: run `latentgram build`")
        return
    typer.echo(
        f"{'table':<6} {'γ':>3} {'windows':>10} {'contexts':>10} {'rows':>10}"
        f" {'index MiB':>9} {'built':>20}"
    )
    for t in built:
        typer.echo(
            f"{t.name:<6} {t.gamma:>3} {t.windows:>10,} {t.contexts:>10,} {t.rows:>10,}"
            f" {NgramIndex.nbytes_of(t) / 2**20:>9.1f} {t.created_at:%Y-%m-%d %H:%M:%S}"
        )
