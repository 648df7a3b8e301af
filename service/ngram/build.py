"""Building a γ table (DESIGN.md §4): every window of the training token grids, counted by one
DuckDB GROUP BY into context → token → (count, distinct images, smallest image id).

A build runs in one transaction under a staging table id and replaces the previous table of the
same name in that transaction, so a build killed at any moment leaves the previous table in
service and nothing half-built visible.
"""

from __future__ import annotations

import contextlib
import logging
import time
from collections.abc import Callable
from dataclasses import dataclass

import duckdb
import numpy as np
import pyarrow as pa

from service.errors import InvalidInputError, RunError
from service.ngram.store import TableInfo, get_table, table_name
from service.ngram.tokens import TokenGrids
from service.ngram.windows import WindowSet, build_windows, check_gamma, extract_windows

log = logging.getLogger(__name__)

# Stages a build passes, in order, each reported to `on_stage` (tests stop builds at each one).
BUILD_STAGES = ("windows", "histograms", "contexts", "replaced", "committed")
StageHook = Callable[[str], None]


@dataclass(frozen=True)
class BuildInput:
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


def build_input(grids: TokenGrids, gamma: int, positional: bool) -> BuildInput:
    """Windows and distinct contexts of the grids, with an exact check of the hash keys."""
    _, h, w = grids.tokens.shape
    win = build_windows(grids.tokens, grids.image_ids, gamma, grids.pad, positional=positional)
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
    windows = windows_table(win, pad_pattern_classes(gamma, h, w, positional))
    contexts = pa.table(
        {"context_key": keys, "position": position, "context": blob.cast(pa.binary())}
    )
    return BuildInput(windows, contexts)


def check_keys(contexts: np.ndarray, first_window: np.ndarray) -> None:
    """RunError unless every window that repeats an earlier window's key repeats its context.

    contexts: (M, K) column-major, so each slot (a column) is contiguous; first_window: (M,) the
    first window with the same key as each window.
    """
    later = np.flatnonzero(first_window != np.arange(len(first_window)))
    earlier = first_window[later]
    for slot in contexts.T:
        if not np.array_equal(slot[later], slot[earlier]):
            raise RunError(
                "two different contexts share a 64-bit key: report this, it should not happen"
            )


def build_table(
    con: duckdb.DuckDBPyConnection,
    grids: TokenGrids,
    *,
    gamma: int,
    positional: bool = False,
    run: str = "",
    on_stage: StageHook | None = None,
) -> TableInfo:
    """Count every (context, token) of the training grids into a new ready γ table, replacing
    the previous table of the same name in the same transaction."""
    check_gamma(gamma)
    if len(grids) == 0:
        raise InvalidInputError("latents have no training split to build from")
    stage = on_stage or (lambda _: None)
    started = time.perf_counter()
    built = build_input(grids, gamma, positional)
    stage("windows")
    con.register("lg_windows", built.windows)
    con.register("lg_contexts", built.contexts)
    try:
        con.execute("BEGIN TRANSACTION")
        table_id = _stage_table(con, grids, gamma, positional, run)
        rows = con.execute(
            "INSERT INTO ngrams (table_id, context_key, token, count, images, example_image)"
            f" SELECT ?, * FROM ({histogram_query('lg_windows')})",
            [table_id],
        ).fetchall()[0][0]
        stage("histograms")
        con.execute(
            "INSERT INTO ngram_contexts SELECT ?, context_key, position, context FROM lg_contexts",
            [table_id],
        )
        stage("contexts")
        _replace_previous(con, table_name(gamma, positional), table_id)
        stage("replaced")
        counts = (len(built.windows), len(built.contexts), rows, len(grids))
        _mark_ready(con, table_id, counts, time.perf_counter() - started)
        con.execute("COMMIT")
    except BaseException:
        with contextlib.suppress(duckdb.Error):  # keep the original error if COMMIT failed
            con.execute("ROLLBACK")
        raise
    finally:
        con.unregister("lg_windows")
        con.unregister("lg_contexts")
    stage("committed")
    con.execute("CHECKPOINT")
    info = get_table(con, gamma, positional)
    log.info(
        "built %s: %d windows, %d contexts in %.2fs",
        info.name,
        info.windows,
        info.contexts,
        info.build_seconds,
    )
    return info


def _stage_table(
    con: duckdb.DuckDBPyConnection, grids: TokenGrids, gamma: int, positional: bool, run: str
) -> int:
    """A catalogue row in state 'building' (invisible to readers); returns its table id."""
    table_id: int = con.execute("SELECT nextval('ngram_table_ids')").fetchall()[0][0]
    _, h, w = grids.tokens.shape
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
            grids.model_sha256,
            grids.channels,
            h,
            w,
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
