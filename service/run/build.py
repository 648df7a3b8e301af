"""The build step of a run: its training latents → one n-gram table per γ, on DuckDB or Spark,
and their index files. No torch: `latentgram build` starts in a second."""

from __future__ import annotations

import contextlib
import shutil
from collections.abc import Iterator, Sequence
from functools import partial
from typing import Any

import duckdb
from tqdm import tqdm

from service.data.latent_batches import count_train_images, iter_train_grids, read_latents_header
from service.errors import RunError, first_line
from service.files import file_sha256
from service.ngram.build import (
    build_tables,
    images_per_chunk,
    index_memory_limit,
    limit_memory,
)
from service.ngram.index_files import write_run_indexes
from service.ngram.store import TableInfo, get_table, list_tables, open_store
from service.ngram.tokens import TokenGrids
from service.ngram.windows import check_gamma, check_gamma_fits, default_gammas
from service.run.paths import RunPaths
from service.run.record import read_run_json, update_run_json
from service.settings import BuildSettings

BUILD_SCRATCH = "tmp"  # <run>/tmp: DuckDB's spill files and Spark's staging, removed after a build


def built_gammas(paths: RunPaths, positional: bool = False) -> list[int]:
    """The γ of the run's tables of one family, ascending."""
    with open_store(paths.require(paths.store, "build"), read_only=True) as con:
        return [t.gamma for t in list_tables(con) if t.positional == positional]


def check_run_gamma(paths: RunPaths, gamma: int, *, table: bool, positional: bool) -> None:
    """Refusals that need no torch, so that they come at once: a γ wider than the run's grid,
    a run without latents, and when `table`, γ's table not built."""
    shape = read_latents_header(paths.latents).shape
    check_gamma_fits(gamma, *shape[1:])
    if table:
        with open_store(paths.require(paths.store, "build"), read_only=True) as con:
            get_table(con, gamma, positional)


def build_run_tables(
    paths: RunPaths,
    gammas: Sequence[int] | None = None,
    *,
    positional: bool = False,
    progress: bool = True,
    settings: BuildSettings | None = None,
) -> list[TableInfo]:
    """Build (or rebuild) the n-gram tables of the run's training latents, one per γ; without
    `gammas`, the grid's default ones, from local to global (ngram/windows.py). Each table's
    index files are written beside the store afterwards, for the service to map.

    The latents are streamed from latents.parquet a batch of images at a time, on DuckDB
    (within `settings.memory_limit`, spilling to <run>/tmp) or on Spark (`settings.engine`);
    <run>/tmp is removed afterwards. Every check that can fail is made before the store is
    touched, so a bad setting leaves the tables served as they were.
    """
    settings = settings or BuildSettings.from_env()
    gammas = _checked_build(paths, gammas)
    scratch = paths.root / BUILD_SCRATCH
    try:
        with contextlib.ExitStack() as stack:
            spark = None
            if settings.engine == "spark":
                from service.run.spark_build import spark_session

                spark = stack.enter_context(
                    spark_session(settings.spark_master, work_dir=scratch / "spark")
                )
            con = stack.enter_context(open_store(paths.store))
            limit_memory(con, settings.memory_limit, scratch / "duckdb")
            if spark is None:
                built = _build_on_duckdb(paths, con, gammas, positional, progress)
            else:
                steps = tqdm(gammas, desc="build n-gram tables", unit="table", disable=not progress)
                built = [_build_on_spark(paths, con, spark, g, positional) for g in steps]
            # the index files hold a table's arrays here: DuckDB needs less meanwhile
            limit_memory(con, index_memory_limit(settings.memory_limit), None)
            bar = partial(tqdm, desc="write index files", unit="table", disable=not progress)
            write_run_indexes(con, paths.store, bar)
            served = list_tables(con)  # all of them: a build of some γ keeps the others
    except duckdb.Error as exc:  # out of memory or disk past the limit: the old tables stay
        raise RunError(f"the build failed in DuckDB: {first_line(exc)}") from None
    finally:
        shutil.rmtree(scratch, ignore_errors=True)
    figures = {t.name: {"contexts": t.contexts, "rows": t.rows, "seconds": t.build_seconds}
               for t in served}  # fmt: skip
    update_run_json(paths, "tables", figures)
    return built


def _checked_build(paths: RunPaths, gammas: Sequence[int] | None) -> Sequence[int]:
    """The γ to build (the grid's defaults without `gammas`), once the γ, the latents and the
    BL-AE that encoded them are checked (BuildSettings checks its own fields)."""
    for gamma in gammas or ():
        check_gamma(gamma)
    latents = paths.require(paths.latents, "encode")
    header = read_latents_header(latents)
    _, height, width = header.shape
    gammas = gammas or default_gammas(height, width)
    for gamma in gammas:
        check_gamma_fits(gamma, height, width)
    read_run_json(paths)  # its figures are recorded after the commit: a damaged one fails now
    blae = paths.require(paths.blae_weights, "train-ae")
    if header.model_sha256 != file_sha256(blae):
        raise RunError(
            f"{paths.latents} was encoded by another BL-AE than {blae} (retrained since?): "
            f"run `{paths.remedy('encode')}` first"
        )
    return gammas


def _build_on_duckdb(
    paths: RunPaths,
    con: duckdb.DuckDBPyConnection,
    gammas: Sequence[int],
    positional: bool,
    progress: bool,
) -> list[TableInfo]:
    """Every γ's table in one pass over batches of the latents, with a bar over the images, then,
    once they are counted, one over the tables as they are committed (a large one takes
    minutes)."""
    header = read_latents_header(paths.latents)
    _, height, width = header.shape
    bar = tqdm(
        total=count_train_images(paths.latents),
        desc=f"count windows (γ = {', '.join(map(str, gammas))})",
        unit="image",
        unit_scale=True,
        disable=not progress,
    )
    commits: list[tqdm] = []  # opened when the counting's bar closes, not beneath it

    def batches() -> Iterator[TokenGrids]:
        for batch in iter_train_grids(paths.latents, images_per_chunk(height, width)):
            yield batch
            bar.update(len(batch))

    def on_stage(stage: str) -> None:
        if stage == "windows":
            bar.close()
            commits.append(tqdm(total=len(gammas), desc="commit tables", unit="table",
                                disable=not progress))  # fmt: skip
        elif stage == "committed":
            commits[0].update()

    try:
        with bar:
            return build_tables(
                con, batches(), gammas=gammas, positional=positional, run=str(paths.root),
                on_stage=on_stage,
            )  # fmt: skip
    finally:
        for opened in commits:
            opened.close()


def _build_on_spark(
    paths: RunPaths, con: duckdb.DuckDBPyConnection, spark: Any, gamma: int, positional: bool
) -> TableInfo:
    """One table, counted on Spark and imported into the store."""
    from service.run.spark_build import build_table_spark

    return build_table_spark(
        con,
        spark,
        paths.latents,
        paths.root / BUILD_SCRATCH,
        gamma=gamma,
        positional=positional,
        run=str(paths.root),
    )
