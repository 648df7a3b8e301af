"""Building a γ table (DESIGN.md §4, §10): every window of the training token grids, counted into
context → token → (count, distinct images, smallest image id).

The windows are counted a chunk of whole images at a time, compiled and straight from the token
grids (ngram/counting.py), the chunks of every γ counted on every core at once. Each chunk's
counts are spilled to DuckDB's temp directory and merged from there a group of key buckets at a
time (ngram/merge.py), streamed into the store as they are merged. So the build's own memory
does not grow with the corpus, and DuckDB only inserts, within its memory limit (limit_memory).
Another engine's histogram files (the Spark build, run/spark_build.py) are written into the
store by the same commit_table.

A build runs in one transaction under a staging table id and replaces the previous table of the
same name in that transaction, so a build killed at any moment leaves the previous table in
service and nothing half-built visible.
"""

from __future__ import annotations

import contextlib
import logging
import os
import re
import tempfile
import time
from collections import deque
from collections.abc import Callable, Iterable, Iterator, Sequence
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path

import duckdb
import pyarrow as pa

from service.errors import InvalidInputError, RunError, first_line
from service.heap import freed_memory_kept
from service.ngram.counting import ChunkCounts, count_chunk
from service.ngram.merge import CONTEXT_SCHEMA, HISTOGRAM_SCHEMA, SpilledCounts, ahead
from service.ngram.store import TableInfo, get_table, table_name
from service.ngram.tokens import TokenGrids
from service.ngram.windows import check_gamma, context_size

log = logging.getLogger(__name__)

# Stages a build passes, in order, each reported to `on_stage` (tests stop builds at each one).
BUILD_STAGES = ("windows", "histograms", "contexts", "replaced", "committed")
StageHook = Callable[[str], None]

# Windows counted at once: the counting holds ~56 bytes a window (hashes and partitioned
# records, ~220 MB for 4 M) and its output at most as much again, for each γ of the two chunks
# in flight; the default run's 960,000 windows are one chunk.
CHUNK_WINDOWS = 1 << 22
# Context tokens a chunk may hold: each distinct context keeps its K tokens (2 or 4 bytes each)
# until the chunk is spilled, and K grows as γ² (4 at γ = 3, 480 at γ = 31), so a chunk has no
# more windows than this over the sum of K of the γs counted. 16×16's seven tables (ΣK = 1,088)
# in 4 M-window chunks held 11–12 GB while counting, 1–2 GB in these; the 4×4 default's three
# (ΣK = 40) stay one chunk.
CHUNK_CONTEXT_TOKENS = 1 << 29
COLLISION = "two different contexts share a 64-bit key: report this, it should not happen"
# What DuckDB's memory_limit takes: a number and a unit (B, KB, MiB, GB, …) or a percentage.
# DuckDB takes no bare number (its "Unknown unit for memory"), so the unit is required here.
_MEMORY_LIMIT = re.compile(r"(\d+(?:\.\d+)?)\s*([KMGT]i?B|B|bytes|%)", re.IGNORECASE)
_UNIT_BYTES = {
    "b": 1, "bytes": 1, "kb": 10**3, "mb": 10**6, "gb": 10**9, "tb": 10**12,
    "kib": 2**10, "mib": 2**20, "gib": 2**30, "tib": 2**40,
}  # fmt: skip
INDEX_MEMORY_LIMIT = "1GB"


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


def counted_chunk(grids: TokenGrids, gamma: int, positional: bool, threads: int = 1) -> ChunkCounts:
    """The histogram rows and distinct contexts of a chunk of whole images, counted where the
    grids are (ngram/counting.py) on `threads` threads; RunError when two contexts share a hash
    key."""
    counted, collision = count_chunk(
        grids.tokens, grids.image_ids, gamma, grids.pad, positional=positional, threads=threads
    )
    if collision:
        raise RunError(COLLISION)
    return counted


def images_per_chunk(height: int, width: int, windows: int = CHUNK_WINDOWS) -> int:
    """Whole images whose windows make about `windows` rows."""
    return max(1, windows // (height * width))


def windows_per_chunk(gammas: Iterable[int], windows: int = CHUNK_WINDOWS) -> int:
    """At most `windows`, and few enough that a chunk's contexts of all the γs in `gammas`
    hold at most CHUNK_CONTEXT_TOKENS tokens."""
    return max(1, min(windows, CHUNK_CONTEXT_TOKENS // sum(map(context_size, gammas))))


def in_chunks(grids: TokenGrids, images: int) -> Iterator[TokenGrids]:
    """The grids `images` at a time, in order."""
    for start in range(0, len(grids), images):
        part = slice(start, start + images)
        yield TokenGrids(
            grids.tokens[part], grids.image_ids[part], grids.channels, grids.model_sha256
        )


def parse_memory_limit(text: str) -> str:
    """A DuckDB memory size such as 4GB, 512MiB or 80%, stripped; InvalidInputError otherwise."""
    match = _MEMORY_LIMIT.fullmatch(text.strip())
    if not match:
        raise InvalidInputError(
            f"memory limit must be a size such as 4GB, 512MB or 2GiB, got {text!r}"
        )
    if float(match.group(1)) == 0:
        raise InvalidInputError(f"memory limit must be more than 0, got {text!r}")
    if match.group(2) == "%" and float(match.group(1)) > 100:
        raise InvalidInputError(f"memory limit must be at most 100% of the memory, got {text!r}")
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
    """The bytes of a size parse_memory_limit accepts; None for a percentage."""
    match = _MEMORY_LIMIT.fullmatch(limit)
    unit = match.group(2).lower() if match else ""
    if match is None or unit not in _UNIT_BYTES:
        return None
    return float(match.group(1)) * _UNIT_BYTES[unit]


def limit_memory(
    con: duckdb.DuckDBPyConnection, memory_limit: str | None, temp_directory: Path | None
) -> None:
    """Bound the memory DuckDB may use and say where it spills (the merge spills there too).
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
    latents.parquet). The windows of about `chunk_windows` rows are counted at a time, every γ
    of two chunks at once on a thread each, and the chunks' counts spilled to DuckDB's temp
    directory (ngram/merge.py). Each table's rows and contexts are then merged from there and
    streamed into the store; a single chunk's counts are the table's as they are.
    """
    for gamma in gammas:
        check_gamma(gamma)
    stage = on_stage or (lambda _: None)
    started = time.perf_counter()
    with _spill_folder(con) as folder:
        spills = {gamma: SpilledCounts(folder / f"g{gamma}") for gamma in gammas}
        chunk_windows = windows_per_chunk(gammas, chunk_windows)
        with freed_memory_kept():  # each chunk's arrays in the pages of the one before
            shape, windows, images = _count_chunks(grids, spills, positional, chunk_windows)
        stage("windows")
        load_share = (time.perf_counter() - started) / len(gammas)  # of each table's seconds
        built = []
        for gamma, spill in spills.items():
            built.append(
                _commit_spilled(
                    con,
                    spill,
                    TableSource(shape, windows, images),
                    gamma=gamma,
                    positional=positional,
                    run=run,
                    stage=stage,
                    started=time.perf_counter() - load_share,
                )
            )
            spill.remove()
        return built


@contextlib.contextmanager
def _spill_folder(con: duckdb.DuckDBPyConnection) -> Iterator[Path]:
    """A new folder in DuckDB's temp directory (limit_memory's), removed afterwards with the
    temp directory itself if this made it."""
    setting = con.execute("SELECT current_setting('temp_directory')").fetchall()[0][0]
    parent = Path(setting) if setting else Path(tempfile.gettempdir())
    made = not parent.exists()
    parent.mkdir(parents=True, exist_ok=True)
    try:
        with tempfile.TemporaryDirectory(prefix="merge-", dir=parent) as folder:
            yield Path(folder)
    finally:
        if made:
            with contextlib.suppress(OSError):  # DuckDB may have spilled there meanwhile
                parent.rmdir()


def _count_chunks(
    grids: TokenGrids | Iterable[TokenGrids],
    spills: dict[int, SpilledCounts],
    positional: bool,
    chunk_windows: int,
) -> tuple[TableShape, int, int]:
    """Count every chunk of the grids for each γ into that γ's spill, on a thread per core
    (the counting is compiled and releases the GIL), two chunks in flight. A chunk counted while
    no other is splits its γs' counting over the cores left (a single chunk of one γ would use
    one core: at 1×, γ = 7, its counting was half the build). Returns the grids' shape and the
    windows (per γ) and images counted."""
    shape: TableShape | None = None
    windows = images = 0
    in_flight: deque[list[Future[ChunkCounts]]] = deque()
    cores = len(os.sched_getaffinity(0))
    with ThreadPoolExecutor(cores) as pool:

        def collect(keep: int) -> None:
            while len(in_flight) > keep:
                for spill, counted in zip(spills.values(), in_flight.popleft(), strict=True):
                    spill.add(counted.result())

        for part in [grids] if isinstance(grids, TokenGrids) else ahead(grids):
            if not len(part):
                continue
            shape = shape or TableShape.of(part)
            shape.check(part)
            per_chunk = images_per_chunk(shape.height, shape.width, chunk_windows)
            for chunk in in_chunks(part, per_chunk):
                windows, images = windows + chunk.tokens.size, images + len(chunk)
                threads = 1 if in_flight else max(1, cores // len(spills))
                in_flight.append(
                    [pool.submit(counted_chunk, chunk, g, positional, threads) for g in spills]
                )
                collect(keep=1)
        collect(keep=0)
    if shape is None:
        raise InvalidInputError("latents have no training split to build from")
    return shape, windows, images


def _commit_spilled(
    con: duckdb.DuckDBPyConnection,
    spill: SpilledCounts,
    source: TableSource,
    *,
    gamma: int,
    positional: bool,
    run: str,
    stage: StageHook,
    started: float,
) -> TableInfo:
    """commit_table from a spill's merged rows and contexts, streamed into the store; RunError
    if the merge found two contexts sharing a key."""

    def contexts_checked() -> None:
        if spill.collided:
            raise RunError(COLLISION)

    readers = {
        "lg_merged_histograms": (HISTOGRAM_SCHEMA, spill.histogram_batches()),
        "lg_merged_contexts": (CONTEXT_SCHEMA, spill.context_batches()),
    }
    for name, (schema, batches) in readers.items():
        if spill.chunks == 1:  # in memory already: a table DuckDB scans on every core
            con.register(name, pa.Table.from_batches(list(batches), schema))
        else:
            con.register(name, pa.RecordBatchReader.from_batches(schema, batches))  # merged as read
    try:
        return commit_table(
            con,
            source,
            "SELECT * FROM lg_merged_histograms",
            "lg_merged_contexts",
            gamma=gamma,
            positional=positional,
            run=run,
            contexts_checked=contexts_checked,
            stage=stage,
            started=started,
        )
    finally:
        for name in readers:
            con.unregister(name)


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
        contexts_checked=None,
        stage=stage,
        started=time.perf_counter() if started is None else started,
    )


def commit_table(
    con: duckdb.DuckDBPyConnection,
    source: TableSource,
    histograms: str,
    contexts: str,
    *,
    gamma: int,
    positional: bool,
    run: str,
    contexts_checked: Callable[[], None] | None,
    stage: StageHook,
    started: float,
) -> TableInfo:
    """Write a table from a query of its histogram rows (context_key, token, count, images,
    example_image) and a relation of its contexts (context_key, position, context), under a
    staging id, and make it the served table of its name in the same transaction.

    With `contexts_checked` the contexts are distinct, and it raises RunError if their keys
    were found to collide once read; without it (another engine's files) they are made
    distinct here, and a key that comes with two contexts is a RunError.
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
        n_contexts = _insert_contexts(con, table_id, contexts, contexts_checked)
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
    con: duckdb.DuckDBPyConnection,
    table_id: int,
    contexts: str,
    checked: Callable[[], None] | None,
) -> int:
    """Insert the table's contexts, made distinct unless `checked` (see commit_table); returns
    how many."""
    n_contexts: int = con.execute(
        "INSERT INTO ngram_contexts (table_id, context_key, position, context)"
        f" SELECT {'' if checked else 'DISTINCT'} ?, context_key, position, context"
        f" FROM {contexts}",
        [table_id],
    ).fetchall()[0][0]
    if checked is not None:
        checked()
        return n_contexts
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
