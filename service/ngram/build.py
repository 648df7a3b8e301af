"""Building a γ table (DESIGN.md §4, §10): every window of the training token grids, counted by
one DuckDB GROUP BY into context → token → (count, distinct images, smallest image id).

The windows are extracted a chunk of whole images at a time and appended to a temporary DuckDB
table, so the build's own memory does not grow with the corpus: DuckDB holds the windows within
its memory limit and spills past it (limit_memory). Another engine's histogram files (the Spark
build, run/spark_build.py) are written into the store by the same commit_table.

A build runs in one transaction under a staging table id and replaces the previous table of the
same name in that transaction, so a build killed at any moment leaves the previous table in
service and nothing half-built visible.
"""

from __future__ import annotations

import contextlib
import logging
import re
import time
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass
from pathlib import Path

import duckdb
import numpy as np
import pyarrow as pa

from service.errors import InvalidInputError, RunError, first_line
from service.ngram.store import TableInfo, get_table, table_name
from service.ngram.tokens import TokenGrids
from service.ngram.windows import WindowSet, build_windows, check_gamma, extract_windows

log = logging.getLogger(__name__)

# Stages a build passes, in order, each reported to `on_stage` (tests stop builds at each one).
BUILD_STAGES = ("windows", "histograms", "contexts", "replaced", "committed")
StageHook = Callable[[str], None]

# Windows extracted at once: 4 M rows hold ~100 MB of keys, tokens and ids and K·2 bytes a row of
# contexts (~200 MB at γ = 7); the default run's 960,000 windows are one chunk.
CHUNK_WINDOWS = 1 << 22
COLLISION = "two different contexts share a 64-bit key: report this, it should not happen"
# What DuckDB's memory_limit takes: a number and a unit (B, KB, MiB, GB, …) or a percentage.
_MEMORY_LIMIT = re.compile(r"\d+(\.\d+)?\s*([KMGT]i?B|B|bytes|%)?", re.IGNORECASE)


@dataclass(frozen=True)
class BuildInput:
    """What the build writes from: one row per window, and one row per distinct context."""

    windows: pa.Table  # context_key, token, image, first_in_image
    contexts: pa.Table  # context_key, position, context (tokens as little-endian uint32 bytes)


@dataclass(frozen=True)
class TableShape:
    """What the catalogue records of the latents a table is built from."""

    channels: int  # C
    height: int
    width: int
    model_sha256: str

    @classmethod
    def of(cls, grids: TokenGrids) -> TableShape:
        _, h, w = grids.tokens.shape
        return cls(grids.channels, h, w, grids.model_sha256)

    def check(self, grids: TokenGrids) -> None:
        """RunError when a later batch of grids is not of the first batch's shape and model."""
        if TableShape.of(grids) != self:
            raise RunError(f"latents change shape or model between batches: {grids.tokens.shape}")


@dataclass(frozen=True)
class TableSource:
    """The latents a table counts: their shape, windows (None: the sum of the counts) and images."""

    shape: TableShape
    windows: int | None
    images: int


def histogram_query(windows: str) -> str:
    """The build's one GROUP BY over a relation of windows: the histogram of eq. 9 with its
    provenance. First-in-image flags count the distinct images without a COUNT(DISTINCT), which
    would cost more than the rest of the query."""
    return (
        "SELECT context_key, token, count(*) AS count, count_if(first_in_image) AS images,"
        f" min(image) AS example_image FROM {windows} GROUP BY context_key, token"
    )


def pad_pattern_classes(gamma: int, height: int, width: int, positional: bool) -> np.ndarray:
    """(H·W,) a class per raster position: windows at positions of different classes never
    share a context, because PAD (never a real token) fills different slots of their windows,
    or, in positional tables, because the position is part of the context."""
    if positional:
        return np.arange(height * width)
    pad_mask, _ = extract_windows(np.zeros((1, height, width), np.int64), gamma, pad=1)
    _, classes = np.unique(pad_mask, axis=0, return_inverse=True)
    return classes.reshape(-1)


def first_in_image(keys: np.ndarray, tokens: np.ndarray, classes: np.ndarray) -> np.ndarray:
    """True for the first window of each (image, context, token), windows image-major in raster
    order: summing it over a group counts the distinct images that hold the window.

    Only windows at positions of one PAD class can repeat within an image (`classes`), so only
    those pairs are compared: a few dozen column compares on 4×4 grids, none at all at γ = 7.
    Grids with large classes sort each image's windows instead.
    """
    per_image = len(classes)
    k, t = keys.reshape(-1, per_image), tokens.reshape(-1, per_image)
    pairs = [(i, j) for j in range(per_image) for i in np.flatnonzero(classes[:j] == classes[j])]
    if len(pairs) > 4 * per_image:
        order = np.lexsort((t, k), axis=-1)
        ks, ts = np.take_along_axis(k, order, -1), np.take_along_axis(t, order, -1)
        repeat = np.zeros_like(ks, dtype=bool)
        repeat[:, 1:] = (ks[:, 1:] == ks[:, :-1]) & (ts[:, 1:] == ts[:, :-1])
        first = np.empty_like(repeat)
        np.put_along_axis(first, order, ~repeat, -1)
        return first.reshape(-1)
    first = np.ones(k.T.shape, dtype=bool)
    if not pairs:
        return first.reshape(-1)
    k, t = k.T.copy(), t.T.copy()  # position-major: each compare reads contiguous memory
    for i, j in pairs:
        first[j] &= (k[i] != k[j]) | (t[i] != t[j])
    return first.T.reshape(-1)


def windows_table(win: WindowSet, classes: np.ndarray) -> pa.Table:
    """What histogram_query reads: one row per window, with its first-in-image flag."""
    return pa.table(
        {
            "context_key": win.keys,
            "token": win.tokens.astype(np.int32),
            "image": win.images,
            "first_in_image": first_in_image(win.keys, win.tokens, classes),
        }
    )


def window_rows(grids: TokenGrids, gamma: int, positional: bool) -> tuple[WindowSet, pa.Table]:
    """The windows of the grids, and what histogram_query reads of them."""
    _, h, w = grids.tokens.shape
    win = build_windows(grids.tokens, grids.image_ids, gamma, grids.pad, positional=positional)
    return win, windows_table(win, pad_pattern_classes(gamma, h, w, positional))


def context_rows(win: WindowSet, positional: bool) -> pa.Table:
    """The distinct contexts of a set of windows (context_key, position, context as
    little-endian uint32 bytes), after an exact check of their hash keys."""
    keys, first_of_key, key_of_window = np.unique(win.keys, return_index=True, return_inverse=True)
    check_keys(win.contexts, first_of_key[key_of_window])
    slots_of_keys = np.take(win.contexts.T, first_of_key, axis=1)  # gathers whole slots
    context_bytes = np.ascontiguousarray(slots_of_keys.T, dtype="<u4").view(np.uint8)
    blob = pa.Array.from_buffers(
        pa.binary(context_bytes.shape[1]), len(keys), [None, pa.py_buffer(context_bytes)]
    )
    position = (
        pa.array(win.positions[first_of_key], pa.int32())
        if positional
        else pa.nulls(len(keys), pa.int32())
    )
    return pa.table({"context_key": keys, "position": position, "context": blob.cast(pa.binary())})


def build_input(grids: TokenGrids, gamma: int, positional: bool) -> BuildInput:
    """Windows and distinct contexts of the grids, with an exact check of the hash keys."""
    win, windows = window_rows(grids, gamma, positional)
    return BuildInput(windows, context_rows(win, positional))


def check_keys(contexts: np.ndarray, first_window: np.ndarray) -> None:
    """RunError unless every window that repeats an earlier window's key repeats its context.

    contexts: (M, K) column-major, so each slot (a column) is contiguous; first_window: (M,) the
    first window with the same key as each window.
    """
    later = np.flatnonzero(first_window != np.arange(len(first_window)))
    earlier = first_window[later]
    for slot in contexts.T:
        if not np.array_equal(slot[later], slot[earlier]):
            raise RunError(COLLISION)


def images_per_chunk(height: int, width: int, windows: int = CHUNK_WINDOWS) -> int:
    """Whole images whose windows make about `windows` rows."""
    return max(1, windows // (height * width))


def in_chunks(grids: TokenGrids, images: int) -> Iterator[TokenGrids]:
    """The grids `images` at a time, in order."""
    for start in range(0, len(grids), images):
        part = slice(start, start + images)
        yield TokenGrids(
            grids.tokens[part], grids.image_ids[part], grids.channels, grids.model_sha256
        )


def parse_memory_limit(text: str) -> str:
    """A DuckDB memory size such as 4GB, 512MiB or 80%, stripped; InvalidInputError otherwise."""
    if not _MEMORY_LIMIT.fullmatch(text.strip()):
        raise InvalidInputError(
            f"memory limit must be a size such as 4GB, 512MB or 2GiB, got {text!r}"
        )
    return text.strip()


def limit_memory(
    con: duckdb.DuckDBPyConnection, memory_limit: str | None, temp_directory: Path | None
) -> None:
    """Bound the memory DuckDB may use (the GROUP BY spills past it) and say where it spills.
    Set once per connection, before the first build: DuckDB refuses to move a temp directory
    it has used."""
    if temp_directory is not None:
        temp_directory.mkdir(parents=True, exist_ok=True)  # DuckDB makes one level, not parents
        con.execute(f"SET temp_directory = '{_quoted(temp_directory)}'")
    if memory_limit is not None:
        limit = parse_memory_limit(memory_limit)
        try:
            con.execute(f"SET memory_limit = '{limit}'")
        except duckdb.Error as exc:
            raise InvalidInputError(
                f"memory limit {memory_limit!r} is not a size DuckDB takes: {first_line(exc)}"
            ) from None


def _quoted(path: Path) -> str:
    return str(path).replace("'", "''")


def build_table(
    con: duckdb.DuckDBPyConnection,
    grids: TokenGrids | Iterable[TokenGrids],
    *,
    gamma: int,
    positional: bool = False,
    run: str = "",
    on_stage: StageHook | None = None,
    chunk_windows: int = CHUNK_WINDOWS,
) -> TableInfo:
    """Count every (context, token) of the training grids into a new ready γ table, replacing
    the previous table of the same name in the same transaction.

    `grids` is one set of grids or batches of whole images (iter_train_grids streams them from
    latents.parquet). The windows of about `chunk_windows` rows are extracted at a time and
    appended to a temporary DuckDB table, so only DuckDB holds them all, within its memory limit
    (limit_memory), spilling to its temp directory past it.
    """
    check_gamma(gamma)
    stage = on_stage or (lambda _: None)
    started = time.perf_counter()
    if isinstance(grids, TokenGrids):
        _, h, w = grids.tokens.shape
        grids = in_chunks(grids, images_per_chunk(h, w, chunk_windows))
    try:
        shape, windows, images, chunks = _load_windows(con, grids, gamma, positional, chunk_windows)
        stage("windows")
        return commit_table(
            con,
            TableSource(shape, windows, images),
            histogram_query("lg_windows"),
            "lg_contexts",
            gamma=gamma,
            positional=positional,
            run=run,
            distinct_contexts=chunks == 1,
            stage=stage,
            started=started,
        )
    finally:
        for table in ("lg_windows", "lg_contexts"):
            with contextlib.suppress(duckdb.Error):
                con.unregister(table)
            con.execute(f"DROP TABLE IF EXISTS temp.{table}")


def _load_windows(
    con: duckdb.DuckDBPyConnection,
    grids: Iterable[TokenGrids],
    gamma: int,
    positional: bool,
    chunk_windows: int,
) -> tuple[TableShape, int, int, int]:
    """Every chunk's windows and contexts into lg_windows and lg_contexts: temporary tables, or
    the Arrow tables of a single chunk registered in place (no copy). Returns the grids' shape
    and the windows, images and chunks seen."""
    shape: TableShape | None = None
    windows = images = chunks = 0
    first: BuildInput | None = None  # held until a second chunk shows up: one chunk needs no copy
    for part in grids:
        if not len(part):
            continue
        shape = shape or TableShape.of(part)
        shape.check(part)
        for chunk in in_chunks(part, images_per_chunk(shape.height, shape.width, chunk_windows)):
            built = build_input(chunk, gamma, positional)
            windows, images, chunks = windows + len(built.windows), images + len(chunk), chunks + 1
            if chunks == 1:
                first = built
                continue
            if first is not None:
                _append(con, first, create=True)
                first = None
            _append(con, built, create=False)
    if shape is None:
        raise InvalidInputError("latents have no training split to build from")
    if first is not None:
        con.register("lg_windows", first.windows)
        con.register("lg_contexts", first.contexts)
    return shape, windows, images, chunks


def import_table(
    con: duckdb.DuckDBPyConnection,
    histograms: Path,
    contexts: Path,
    shape: TableShape,
    *,
    images: int,
    gamma: int,
    positional: bool = False,
    run: str = "",
    on_stage: StageHook | None = None,
    started: float | None = None,
) -> TableInfo:
    """A table from another engine's Parquet folders (run/spark_build.py): histograms
    (context_key, token, count, images, example_image) and contexts (context_key, position,
    context), written by commit_table as build_table's own rows are."""
    check_gamma(gamma)
    if images == 0:
        raise InvalidInputError("latents have no training split to build from")
    stage = on_stage or (lambda _: None)
    stage("windows")
    return commit_table(
        con,
        TableSource(shape, None, images),
        f"SELECT * FROM read_parquet('{_quoted(histograms / '*.parquet')}')",
        f"read_parquet('{_quoted(contexts / '*.parquet')}')",
        gamma=gamma,
        positional=positional,
        run=run,
        distinct_contexts=False,
        stage=stage,
        started=time.perf_counter() if started is None else started,
    )


def _append(con: duckdb.DuckDBPyConnection, built: BuildInput, *, create: bool) -> None:
    """Append a chunk's windows and contexts to temporary tables (made by the first chunk).
    DuckDB keeps temporary tables in memory up to its memory limit and spills them past it."""
    for table, rows in (("lg_windows", built.windows), ("lg_contexts", built.contexts)):
        con.register("lg_chunk", rows)
        try:
            if create:
                con.execute(f"CREATE OR REPLACE TEMP TABLE {table} AS SELECT * FROM lg_chunk")
            else:
                con.execute(f"INSERT INTO temp.{table} SELECT * FROM lg_chunk")
        finally:
            con.unregister("lg_chunk")


def commit_table(
    con: duckdb.DuckDBPyConnection,
    source: TableSource,
    histograms: str,
    contexts: str,
    *,
    gamma: int,
    positional: bool,
    run: str,
    distinct_contexts: bool,
    stage: StageHook,
    started: float,
) -> TableInfo:
    """Write a table from a query of its histogram rows (context_key, token, count, images,
    example_image) and a relation of its contexts (context_key, position, context), under a
    staging id, and make it the served table of its name in the same transaction.

    Contexts that are not known to be distinct (several chunks, or another engine's files) are
    made distinct here, and a key that comes with two contexts is a RunError: the exact check
    of the 64-bit keys across chunks.
    """
    try:
        con.execute("BEGIN TRANSACTION")
        table_id = _stage_table(con, source.shape, gamma, positional, run)
        rows = con.execute(
            "INSERT INTO ngrams (table_id, context_key, token, count, images, example_image)"
            f" SELECT ?, context_key, token, count, images, example_image FROM ({histograms})",
            [table_id],
        ).fetchall()[0][0]
        stage("histograms")
        n_contexts = _insert_contexts(con, table_id, contexts, distinct_contexts)
        stage("contexts")
        _replace_previous(con, table_name(gamma, positional), table_id)
        stage("replaced")
        windows = source.windows
        if windows is None:
            windows = con.execute(
                "SELECT sum(count) FROM ngrams WHERE table_id = ?", [table_id]
            ).fetchall()[0][0]
        counts = (windows, n_contexts, rows, source.images)
        _mark_ready(con, table_id, counts, time.perf_counter() - started)
        con.execute("COMMIT")
    except BaseException:
        with contextlib.suppress(duckdb.Error):  # keep the original error if COMMIT failed
            con.execute("ROLLBACK")
        raise
    stage("committed")
    con.execute("CHECKPOINT")
    info = get_table(con, gamma, positional)
    log.info("built %s: %d windows, %d contexts in %.2fs",
             info.name, info.windows, info.contexts, info.build_seconds)  # fmt: skip
    return info


def _insert_contexts(
    con: duckdb.DuckDBPyConnection, table_id: int, contexts: str, distinct: bool
) -> int:
    """Insert the table's contexts, made distinct unless known to be; returns how many. A key
    that comes with two contexts is a RunError: the exact check of the keys across chunks."""
    n_contexts: int = con.execute(
        "INSERT INTO ngram_contexts (table_id, context_key, position, context)"
        f" SELECT {'' if distinct else 'DISTINCT'} ?, context_key, position, context"
        f" FROM {contexts}",
        [table_id],
    ).fetchall()[0][0]
    if not distinct:
        keys = con.execute(
            "SELECT count(DISTINCT context_key) FROM ngrams WHERE table_id = ?", [table_id]
        ).fetchall()[0][0]
        if n_contexts != keys:
            raise RunError(COLLISION if n_contexts > keys else "histograms and contexts differ")
    return n_contexts


def _stage_table(
    con: duckdb.DuckDBPyConnection, shape: TableShape, gamma: int, positional: bool, run: str
) -> int:
    """A catalogue row in state 'building' (invisible to readers); returns its table id."""
    table_id: int = con.execute("SELECT nextval('ngram_table_ids')").fetchall()[0][0]
    con.execute(
        "INSERT INTO ngram_tables (table_id, name, gamma, by_position, state, run,"
        " model_sha256, latent_channels, grid_height, grid_width)"
        " VALUES (?, ?, ?, ?, 'building', ?, ?, ?, ?, ?)",
        [
            table_id,
            table_name(gamma, positional),
            gamma,
            positional,
            run,
            shape.model_sha256,
            shape.channels,
            shape.height,
            shape.width,
        ],
    )
    return table_id


def _replace_previous(con: duckdb.DuckDBPyConnection, name: str, table_id: int) -> None:
    """Delete every other table of this name, with its rows and contexts."""
    old = [
        r[0]
        for r in con.execute(
            "SELECT table_id FROM ngram_tables WHERE name = ? AND table_id <> ?", [name, table_id]
        ).fetchall()
    ]
    if old:
        for table in ("ngrams", "ngram_contexts", "ngram_tables"):
            con.execute(f"DELETE FROM {table} WHERE table_id IN (SELECT unnest(?))", [old])


def _mark_ready(
    con: duckdb.DuckDBPyConnection, table_id: int, counts: tuple[int, ...], seconds: float
) -> None:
    """Record the figures and make the table visible (at COMMIT)."""
    windows, contexts, rows, images = counts
    con.execute(
        "UPDATE ngram_tables SET state = 'ready', windows = ?, contexts = ?, rows = ?,"
        " images = ?, build_seconds = ? WHERE table_id = ?",
        [windows, contexts, rows, images, seconds, table_id],
    )
