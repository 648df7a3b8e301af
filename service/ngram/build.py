"""Building a γ table (DESIGN.md §4, §10): every window of the training token grids, counted into
context → token → (count, distinct images, smallest image id).

The windows are counted a chunk of whole images at a time, compiled and straight from the token
grids (ngram/counting.py), and each chunk's histogram is appended to a temporary DuckDB table;
one DuckDB GROUP BY merges them. So the build's own memory does not grow with the corpus:
DuckDB holds the chunks' histograms within its memory limit and spills past it (limit_memory).
Another engine's histogram files (the Spark build, run/spark_build.py) are written into the
store by the same commit_table.

A build runs in one transaction under a staging table id and replaces the previous table of the
same name in that transaction, so a build killed at any moment leaves the previous table in
service and nothing half-built visible.
"""

from __future__ import annotations

import contextlib
import logging
import re
import time
from collections.abc import Callable, Iterable, Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path

import duckdb
import numpy as np
import pyarrow as pa

from service.errors import InvalidInputError, RunError, first_line
from service.ngram.counting import count_chunk
from service.ngram.store import TableInfo, get_table, table_name
from service.ngram.tokens import TokenGrids
from service.ngram.windows import check_gamma

log = logging.getLogger(__name__)

# Stages a build passes, in order, each reported to `on_stage` (tests stop builds at each one).
BUILD_STAGES = ("windows", "histograms", "contexts", "replaced", "committed")
StageHook = Callable[[str], None]

# Windows counted at once: the counting holds ~56 bytes a window (hashes and partitioned
# records, ~220 MB for 4 M) and its output at most as much again; the default run's 960,000
# windows are one chunk.
CHUNK_WINDOWS = 1 << 22
COLLISION = "two different contexts share a 64-bit key: report this, it should not happen"
# What DuckDB's memory_limit takes: a number and a unit (B, KB, MiB, GB, …) or a percentage.
_MEMORY_LIMIT = re.compile(r"\d+(\.\d+)?\s*([KMGT]i?B|B|bytes|%)?", re.IGNORECASE)
_UNIT_BYTES = {
    "b": 1, "bytes": 1, "kb": 10**3, "mb": 10**6, "gb": 10**9, "tb": 10**12,
    "kib": 2**10, "mib": 2**20, "gib": 2**30, "tib": 2**40,
}  # fmt: skip
INDEX_MEMORY_LIMIT = "1GB"


@dataclass(frozen=True)
class BuildInput:
    """What the build writes from: a chunk's histogram rows and its distinct contexts."""

    histograms: pa.Table  # context_key, token, count, images, example_image
    contexts: pa.Table  # context_key, position, context (its tokens, a list of uint32)


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


def merged_histograms(histograms: str) -> str:
    """The build's one GROUP BY, over a relation of chunks' histogram rows: a chunk holds whole
    images, so no image is counted in two chunks, and the histogram of eq. 9 with its provenance
    is the sum of the chunks' counts and distinct images and the smallest of their example ids."""
    return (
        "SELECT context_key, token, sum(count)::BIGINT AS count, sum(images)::BIGINT AS images,"
        f" min(example_image) AS example_image FROM {histograms} GROUP BY context_key, token"
    )


def build_input(grids: TokenGrids, gamma: int, positional: bool) -> BuildInput:
    """The histogram rows and distinct contexts of a chunk of whole images, counted where the
    grids are (ngram/counting.py); RunError when two contexts share a hash key."""
    counted, collision = count_chunk(
        grids.tokens, grids.image_ids, gamma, grids.pad, positional=positional
    )
    if collision:
        raise RunError(COLLISION)
    histograms = pa.table(
        {
            "context_key": counted.keys,
            "token": counted.tokens.astype(np.int32),
            "count": counted.counts,
            "images": counted.images,
            "example_image": counted.example_images,
        }
    )
    positions = counted.context_positions
    contexts = pa.table(
        {
            "context_key": counted.context_keys,
            "position": (
                pa.nulls(len(counted.context_keys), pa.int32())
                if positions is None
                else pa.array(positions, pa.int32())
            ),
            "context": token_lists(counted.context_tokens),
        }
    )
    return BuildInput(histograms, contexts)


def token_lists(tokens: np.ndarray) -> pa.LargeListArray:
    """(M, K) tokens as M lists of K uint32, sharing one values buffer (no copy per list)."""
    m, k = tokens.shape
    offsets = np.arange(0, (m + 1) * k, k, dtype=np.int64)
    values = np.ascontiguousarray(tokens, np.uint32).reshape(-1)
    return pa.LargeListArray.from_arrays(pa.array(offsets), pa.array(values))


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


def index_memory_limit(build_limit: str | None) -> str:
    """DuckDB's limit while the index files are written: INDEX_MEMORY_LIMIT, or the build's own
    limit when that is a smaller size. The process then holds a table's arrays itself, and DuckDB
    only sorts the rows it reads out (at 100× the default corpus, 4GB left to DuckDB there made a
    peak of 8.95 GiB, 1GB one of 6.77 GiB, in the same time)."""
    if build_limit is not None:
        size = _size_in_bytes(parse_memory_limit(build_limit))
        if size is not None and size < (_size_in_bytes(INDEX_MEMORY_LIMIT) or 0):
            return build_limit.strip()
    return INDEX_MEMORY_LIMIT


def _size_in_bytes(limit: str) -> float | None:
    """The bytes of a size parse_memory_limit accepts; None for a percentage or a bare number."""
    match = _MEMORY_LIMIT.fullmatch(limit)
    unit = (match.group(2) or "").lower() if match else ""
    if match is None or unit not in _UNIT_BYTES:
        return None
    return float(limit[: match.start(2)]) * _UNIT_BYTES[unit]


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
    the previous table of the same name in the same transaction: build_tables for one γ."""
    (info,) = build_tables(
        con,
        grids,
        gammas=[gamma],
        positional=positional,
        run=run,
        on_stage=on_stage,
        chunk_windows=chunk_windows,
    )
    return info


def build_tables(
    con: duckdb.DuckDBPyConnection,
    grids: TokenGrids | Iterable[TokenGrids],
    *,
    gammas: Sequence[int],
    positional: bool = False,
    run: str = "",
    on_stage: StageHook | None = None,
    chunk_windows: int = CHUNK_WINDOWS,
) -> list[TableInfo]:
    """Build the table of each γ in one pass over the grids, then commit them one at a time
    (each in its own transaction, replacing the previous table of its name).

    `grids` is one set of grids or batches of whole images (iter_train_grids streams them from
    latents.parquet). The windows of about `chunk_windows` rows are counted at a time, and the
    chunk's histogram for each γ appended to a temporary DuckDB table, so only DuckDB holds
    them all, within its memory limit (limit_memory), spilling to its temp directory past it.
    One GROUP BY per γ merges the chunks' histograms; the histogram of a single chunk is the
    table's as it is.
    """
    for gamma in gammas:
        check_gamma(gamma)
    stage = on_stage or (lambda _: None)
    started = time.perf_counter()
    if isinstance(grids, TokenGrids):
        _, h, w = grids.tokens.shape
        grids = in_chunks(grids, images_per_chunk(h, w, chunk_windows))
    temporary = {gamma: (f"lg_histograms_{gamma}", f"lg_contexts_{gamma}") for gamma in gammas}
    try:
        shape, windows, images, chunks = _load_chunks(
            con, grids, temporary, positional, chunk_windows
        )
        stage("windows")
        load_share = (time.perf_counter() - started) / len(gammas)  # of each table's seconds
        built = []
        for gamma, (histograms, contexts) in temporary.items():
            started = time.perf_counter() - load_share
            built.append(
                commit_table(
                    con,
                    TableSource(shape, windows, images),
                    f"SELECT * FROM {histograms}" if chunks == 1 else merged_histograms(histograms),
                    contexts,
                    gamma=gamma,
                    positional=positional,
                    run=run,
                    distinct_contexts=chunks == 1,
                    stage=stage,
                    started=started,
                )
            )
        return built
    finally:
        for table in (name for names in temporary.values() for name in names):
            with contextlib.suppress(duckdb.Error):
                con.unregister(table)
            con.execute(f"DROP TABLE IF EXISTS temp.{table}")


def _load_chunks(
    con: duckdb.DuckDBPyConnection,
    grids: Iterable[TokenGrids],
    temporary: dict[int, tuple[str, str]],
    positional: bool,
    chunk_windows: int,
) -> tuple[TableShape, int, int, int]:
    """Every chunk's histogram and contexts for each γ into that γ's two `temporary` tables, or
    the Arrow tables of a single chunk registered under those names (no copy). Returns the
    grids' shape and the windows (per γ), images and chunks seen."""
    shape: TableShape | None = None
    windows = images = chunks = 0
    first: dict[int, BuildInput] = {}  # held until a second chunk shows up: one needs no copy
    for part in grids:
        if not len(part):
            continue
        shape = shape or TableShape.of(part)
        shape.check(part)
        for chunk in in_chunks(part, images_per_chunk(shape.height, shape.width, chunk_windows)):
            windows += chunk.tokens.size
            images, chunks = images + len(chunk), chunks + 1
            for gamma, names in temporary.items():
                built = build_input(chunk, gamma, positional)
                if chunks == 1:
                    first[gamma] = built
                    continue
                if gamma in first:
                    _append(con, first.pop(gamma), names, create=True)
                _append(con, built, names, create=False)
    if shape is None:
        raise InvalidInputError("latents have no training split to build from")
    for gamma, built in first.items():
        histograms, contexts = temporary[gamma]
        con.register(histograms, built.histograms)
        con.register(contexts, built.contexts)
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


def _append(
    con: duckdb.DuckDBPyConnection, built: BuildInput, names: tuple[str, str], *, create: bool
) -> None:
    """Append a chunk's histogram and contexts to the two temporary tables `names` (made by the
    first chunk). DuckDB keeps temporary tables in memory up to its memory limit and spills them
    past it."""
    for table, rows in zip(names, (built.histograms, built.contexts), strict=True):
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
