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
from service.parquet_io import LatentSet
from service.windows import build_windows, check_gamma

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


def open_store(path: Path, *, read_only: bool = False) -> duckdb.DuckDBPyConnection:
    """Connect to the store; a writer brings the schema up to date first."""
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
    return con


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
    """What the GROUP BY reads: one row per window, and one row per distinct context."""

    windows: pa.Table  # context_key, position, token, image, first_in_image
    contexts: pa.Table  # context_key, context (tokens as little-endian uint32 bytes)


def first_in_image(keys: np.ndarray, tokens: np.ndarray, per_image: int) -> np.ndarray:
    """True for the first window of each (image, context, token): summing it over a group
    counts distinct images without a COUNT(DISTINCT), the costly part of the GROUP BY."""
    k, t = keys.reshape(-1, per_image), tokens.reshape(-1, per_image)
    order = np.lexsort((t, k), axis=-1)  # windows sorted within each image
    ks, ts = np.take_along_axis(k, order, -1), np.take_along_axis(t, order, -1)
    repeat = np.zeros_like(ks, dtype=bool)
    repeat[:, 1:] = (ks[:, 1:] == ks[:, :-1]) & (ts[:, 1:] == ts[:, :-1])
    first = np.empty_like(repeat)
    np.put_along_axis(first, order, ~repeat, -1)
    return first.reshape(-1)


def _build_input(latents: LatentSet, gamma: int, positional: bool) -> _BuildInput:
    """Windows and distinct contexts of the latents, with an exact check of the hash keys."""
    c, h, w = latents.shape
    tokens = bits_to_tokens(latents.bits())  # (N, H, W)
    win = build_windows(tokens, latents.ids, gamma, pad=1 << c, positional=positional)
    keys, first_of_key, key_of_window = np.unique(win.keys, return_index=True, return_inverse=True)
    contexts = win.contexts[first_of_key]  # (M, K) one context per key
    if not np.array_equal(contexts[key_of_window], win.contexts):
        raise RunError(
            "two different contexts share a 64-bit key: report this, it should not happen"
        )
    context_bytes = np.ascontiguousarray(contexts.astype("<u4")).view(np.uint8)
    blob = pa.Array.from_buffers(
        pa.binary(context_bytes.shape[1]), len(keys), [None, pa.py_buffer(context_bytes)]
    )
    windows = pa.table(
        {
            "context_key": win.keys,
            "position": win.positions.astype(np.int32),
            "token": win.tokens.astype(np.int32),
            "image": win.images,
            "first_in_image": first_in_image(win.keys, win.tokens, h * w).astype(np.int8),
        }
    )
    return _BuildInput(windows, pa.table({"context_key": keys, "context": blob.cast(pa.binary())}))


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
        # The one GROUP BY of the build: the histogram of eq. 9 with provenance, then the
        # context tokens joined on by key.
        con.execute(
            f"""
            INSERT INTO ngrams
            SELECT {table_id}, h.context_key, c.context, h.position, h.token,
                   h.count, h.images, h.example_image
            FROM (
                SELECT context_key, token,
                       {"any_value(position)" if positional else "NULL::INTEGER"} AS position,
                       count(*) AS count, sum(first_in_image) AS images,
                       min(image) AS example_image
                FROM lg_windows
                GROUP BY context_key, token
            ) h JOIN lg_contexts c USING (context_key)
            """
        )
        contexts, rows = (
            len(built.contexts),
            con.execute("SELECT count(*) FROM ngrams WHERE table_id = ?", [table_id]).fetchall()[0][
                0
            ],
        )
        old = [
            r[0]
            for r in con.execute(
                "SELECT table_id FROM ngram_tables WHERE name = ? AND table_id <> ?",
                [name, table_id],
            ).fetchall()
        ]
        if old:
            con.execute("DELETE FROM ngrams WHERE table_id IN (SELECT unnest(?))", [old])
            con.execute("DELETE FROM ngram_tables WHERE table_id IN (SELECT unnest(?))", [old])
        con.execute(
            "UPDATE ngram_tables SET state = 'ready', windows = ?, contexts = ?, rows = ?,"
            " images = ?, build_seconds = ? WHERE table_id = ?",
            [
                len(built.windows),
                contexts,
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
