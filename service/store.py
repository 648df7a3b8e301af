"""The DuckDB n-gram store: build γ tables atomically, list them, read them (DESIGN.md §4).

DuckDB lets several read-only processes, or one writing process, open the file at a time: the
service opens it read-only; builds go through the CLI.
A build runs in one transaction under a staging table id, so a build killed at any moment
leaves the previous table in service and nothing half-built visible.
"""

from __future__ import annotations

import contextlib
import logging
import time
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import datetime
from pathlib import Path

import duckdb
import numpy as np
import pyarrow as pa

from service.bits import bits_to_tokens
from service.errors import InvalidInputError, RunError
from service.migrate import migrate
from service.migrate import status as migration_status
from service.parquet_io import LatentSet
from service.windows import WindowSet, build_windows, check_gamma, extract_windows

log = logging.getLogger(__name__)


def table_name(gamma: int, positional: bool) -> str:
    return f"g{gamma}{'p' if positional else ''}"


@dataclass(frozen=True)
class TableInfo:
    """A catalogue row of a ready table."""

    table_id: int
    name: str
    gamma: int
    positional: bool
    run: str
    model_sha256: str
    latent_channels: int
    grid_height: int
    grid_width: int
    windows: int
    contexts: int
    rows: int
    images: int
    build_seconds: float
    created_at: datetime


_INFO_COLUMNS = (
    "table_id, name, gamma, by_position, run, model_sha256, latent_channels, grid_height,"
    " grid_width, windows, contexts, rows, images, build_seconds, created_at"
)


def open_store(
    path: Path, *, read_only: bool = False, check_schema: bool = True
) -> duckdb.DuckDBPyConnection:
    """Connect to the store; a writer brings the schema up to date first, a reader refuses a
    store whose schema is behind this code (unless `check_schema` is off, to report it)."""
    if read_only and not path.exists():
        raise RunError(f"{path} is missing: run `latentgram build` first")
    path.parent.mkdir(parents=True, exist_ok=True)
    try:
        con = duckdb.connect(str(path), read_only=read_only)
    except duckdb.IOException as exc:  # DuckDB allows one writing process, or only readers
        raise RunError(f"{path} is in use by another process (a build?): {exc}") from exc
    except duckdb.Error as exc:
        raise RunError(f"{path} is not a readable DuckDB store: {exc}") from exc
    if not read_only:
        migrate(con)
    elif check_schema and (state := migration_status(con)).pending:
        con.close()
        raise RunError(
            f"{path} has schema version {state.current}, this latentgram needs {state.latest}:"
            f" run `latentgram migrate --run {path.parent}`"
        )
    return con


def upgrade_store(path: Path) -> list[str]:
    """Apply pending migrations to an existing store (the service does this as it starts);
    returns the migrations applied. A store in use by a build is a RunError: retry later."""
    if not path.exists():
        return []
    with open_store(path, read_only=True, check_schema=False) as con:
        pending = migration_status(con).pending
    if pending:
        open_store(path).close()  # a writer applies them
    return list(pending)


def list_tables(con: duckdb.DuckDBPyConnection) -> list[TableInfo]:
    rows = con.execute(
        f"SELECT {_INFO_COLUMNS} FROM ngram_tables WHERE state = 'ready'"
        " ORDER BY gamma, by_position"
    ).fetchall()
    return [TableInfo(*row) for row in rows]


def get_table(con: duckdb.DuckDBPyConnection, gamma: int, positional: bool = False) -> TableInfo:
    """The ready table for γ, or InvalidInputError listing what is built."""
    check_gamma(gamma)
    for info in list_tables(con):
        if info.gamma == gamma and info.positional == positional:
            return info
    built = ", ".join(t.name for t in list_tables(con)) or "none"
    raise InvalidInputError(
        f"no table built for gamma={gamma}{' (positional)' if positional else ''}; "
        f"built: {built}. Run `latentgram build --gamma {gamma}`"
    )


@dataclass(frozen=True)
class _BuildInput:
    """What the build writes from: one row per window, and one row per distinct context."""

    windows: pa.Table  # context_key, token, image, first_in_image
    contexts: pa.Table  # context_key, position, context (tokens as little-endian uint32 bytes)


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


def _build_input(latents: LatentSet, gamma: int, positional: bool) -> _BuildInput:
    """Windows and distinct contexts of the latents, with an exact check of the hash keys."""
    c, h, w = latents.shape
    tokens = bits_to_tokens(latents.bits())  # (N, H, W)
    win = build_windows(tokens, latents.ids, gamma, pad=1 << c, positional=positional)
    keys, first_of_key, key_of_window = np.unique(win.keys, return_index=True, return_inverse=True)
    # Every window that repeats an earlier window's key must repeat its context too. Slot by
    # slot: each slot is a contiguous column of the extracted windows.
    first_window = first_of_key[key_of_window]
    later = np.flatnonzero(first_window != np.arange(len(first_window)))
    earlier = first_window[later]
    for slot in win.contexts.T:
        if not np.array_equal(slot[later], slot[earlier]):
            raise RunError(
                "two different contexts share a 64-bit key: report this, it should not happen"
            )
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
    windows = windows_table(win, pad_pattern_classes(gamma, h, w, positional))
    contexts = pa.table(
        {
            "context_key": keys,
            "position": position,
            "context": blob.cast(pa.binary()),
        }
    )
    return _BuildInput(windows, contexts)


def build_table(
    con: duckdb.DuckDBPyConnection,
    latents: LatentSet,
    *,
    gamma: int,
    positional: bool = False,
    run: str = "",
) -> TableInfo:
    """Count every (context, token) of the training latents into a new ready γ table.

    Replaces the previous table of the same name in the same transaction.
    """
    check_gamma(gamma)
    if latents.shape[0] > 16:
        raise InvalidInputError(f"tokens hold at most 16 bits, latents have {latents.shape[0]}")
    train = latents.select(latents.splits == "train")
    if len(train) == 0:
        raise InvalidInputError("latents have no training split to build from")
    name = table_name(gamma, positional)
    started = time.perf_counter()
    built = _build_input(train, gamma, positional)
    _, h, w = train.shape
    con.register("lg_windows", built.windows)
    con.register("lg_contexts", built.contexts)
    try:
        con.execute("BEGIN TRANSACTION")
        table_id = con.execute("SELECT nextval('ngram_table_ids')").fetchall()[0][0]
        con.execute(
            "INSERT INTO ngram_tables (table_id, name, gamma, by_position, state, run,"
            " model_sha256, latent_channels, grid_height, grid_width)"
            " VALUES (?, ?, ?, ?, 'building', ?, ?, ?, ?, ?)",
            [table_id, name, gamma, positional, run, train.model_sha256, train.shape[0], h, w],
        )
        rows = con.execute(
            "INSERT INTO ngrams (table_id, context_key, token, count, images, example_image)"
            f" SELECT ?, * FROM ({histogram_query('lg_windows')})",
            [table_id],
        ).fetchall()[0][0]
        con.execute(
            "INSERT INTO ngram_contexts SELECT ?, context_key, position, context FROM lg_contexts",
            [table_id],
        )
        old = [
            r[0]
            for r in con.execute(
                "SELECT table_id FROM ngram_tables WHERE name = ? AND table_id <> ?",
                [name, table_id],
            ).fetchall()
        ]
        if old:
            for table in ("ngrams", "ngram_contexts", "ngram_tables"):
                con.execute(f"DELETE FROM {table} WHERE table_id IN (SELECT unnest(?))", [old])
        con.execute(
            "UPDATE ngram_tables SET state = 'ready', windows = ?, contexts = ?, rows = ?,"
            " images = ?, build_seconds = ? WHERE table_id = ?",
            [
                len(built.windows),
                len(built.contexts),
                rows,
                len(train),
                time.perf_counter() - started,
                table_id,
            ],
        )
        con.execute("COMMIT")
    except BaseException:
        with contextlib.suppress(duckdb.Error):  # keep the original error if COMMIT failed
            con.execute("ROLLBACK")
        raise
    finally:
        con.unregister("lg_windows")
        con.unregister("lg_contexts")
    con.execute("CHECKPOINT")
    info = get_table(con, gamma, positional)
    log.info(
        "built %s: %d windows, %d contexts in %.2fs",
        name,
        info.windows,
        info.contexts,
        info.build_seconds,
    )
    return info


def read_table(
    con: duckdb.DuckDBPyConnection,
    info: TableInfo,
    columns: Sequence[str] = ("context_key", "token", "count", "example_image"),
) -> pa.Table:
    """A table's rows sorted by (context_key, token), through Arrow (no per-row Python)."""
    cols = ", ".join(columns)
    return con.sql(
        f"SELECT {cols} FROM ngrams WHERE table_id = $id ORDER BY context_key, token",
        params={"id": info.table_id},
    ).to_arrow_table()


def read_contexts(con: duckdb.DuckDBPyConnection, info: TableInfo) -> pa.Table:
    """A table's contexts (context_key, position, context) sorted by key, through Arrow."""
    return con.sql(
        "SELECT context_key, position, context FROM ngram_contexts WHERE table_id = $id"
        " ORDER BY context_key",
        params={"id": info.table_id},
    ).to_arrow_table()
