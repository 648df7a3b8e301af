"""Commands of the n-gram store: migrate it, build tables, list them."""

from __future__ import annotations

from dataclasses import asdict
from typing import Annotated, Any

import duckdb
import typer

from service.cli.app import GammasOpt, RunOpt, app, emit, parse_int_list
from service.ngram.index import NgramIndex
from service.ngram.migrations import migrate as apply_migrations
from service.ngram.migrations import status as migration_status
from service.ngram.store import TableInfo, list_tables, open_store
from service.run.paths import DEFAULT_RUN_DIR, RunPaths
from service.run.steps import build_run_tables


@app.command()
def migrate(
    run: RunOpt = DEFAULT_RUN_DIR,
    show_status: Annotated[
        bool, typer.Option("--status", help="Only show current and latest schema versions.")
    ] = False,
) -> None:
    """Bring the run's DuckDB store up to the latest schema (migrating twice is a no-op)."""
    paths = RunPaths(run)
    if show_status:
        store = paths.require(paths.store, "migrate")
        with open_store(store, read_only=True, check_schema=False) as con:
            state = migration_status(con)
        emit(f"store: {paths.store}", asdict(state))
        return
    paths.root.mkdir(parents=True, exist_ok=True)
    with duckdb.connect(str(paths.store)) as con:
        applied = apply_migrations(con)
        state = migration_status(con)
    emit(f"store: {paths.store}", {**asdict(state), "applied_now": applied})


@app.command()
def build(
    run: RunOpt = DEFAULT_RUN_DIR,
    gamma: GammasOpt = None,
    positional: Annotated[
        bool, typer.Option(help="Add the position (y, x) to every context key.")
    ] = False,
) -> None:
    """Build the exact n-gram tables (context → next-token histograms) of the training latents."""
    gammas = parse_int_list(gamma, "--gamma")
    built = build_run_tables(RunPaths(run), gammas or None, positional=positional)
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
