"""The DuckDB n-gram store (DESIGN.md §4): connections, the table catalogue, reading tables.

DuckDB lets several read-only processes, or one writing process, open the file at a time: the
service opens it read-only; builds (ngram/build.py) go through the CLI.
"""

from __future__ import annotations

import time
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from datetime import datetime
from pathlib import Path

import duckdb
import numpy as np
import pyarrow as pa

from service.errors import RunError, first_line
from service.ngram.migrations import check_not_newer, migrate
from service.ngram.migrations import status as migration_status
from service.ngram.windows import check_gamma, context_size

WRITER_WAIT_SECONDS = 10.0


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
    store whose schema is behind or ahead of this code (unless `check_schema` is off, to report
    it). A store a newer latentgram migrated is refused either way."""
    if read_only and not path.exists():
        raise RunError(f"{path} is missing: run `latentgram build` first")
    path.parent.mkdir(parents=True, exist_ok=True)
    con = _connect(path, read_only)
    try:
        if not read_only:
            migrate(con)
        elif check_schema:
            _check_schema(con, path)
    except BaseException:
        con.close()
        raise
    return con


def _check_schema(con: duckdb.DuckDBPyConnection, path: Path) -> None:
    """RunError unless the store's schema is the one this code reads."""
    state = migration_status(con)
    check_not_newer(state.current, state.latest)
    if state.pending:
        raise RunError(
            f"{path} has schema version {state.current}, this latentgram needs {state.latest}:"
            f" run `latentgram migrate --run {path.parent}`"
        )


def _connect(path: Path, read_only: bool) -> duckdb.DuckDBPyConnection:
    """DuckDB lets one writing process, or only readers, open the file. A writer waits up to
    WRITER_WAIT_SECONDS for readers to let go: the service opens the store for a moment to look
    for rebuilt tables, and a build started in that moment should not fail for it."""
    waited_until = time.monotonic() + (0 if read_only else WRITER_WAIT_SECONDS)
    while True:
        try:
            return duckdb.connect(str(path), read_only=read_only)
        except duckdb.Error as exc:
            # "Could not set lock on file": another process holds the store; any other error (a
            # file cut short, or not a database) will not pass by waiting
            if "Could not set lock" not in str(exc):
                if not read_only and _opens_read_only(path):
                    raise RunError(
                        f"{path} cannot be written here ({first_line(exc)}): the store reads "
                        "fine; make it writable, or build into another --run"
                    ) from exc
                raise RunError(
                    f"{path} is not a readable DuckDB store ({first_line(exc)}): move it away and"
                    " run `latentgram build` to make a new one"
                ) from exc
            if time.monotonic() >= waited_until:
                raise RunError(f"{path} is in use by another process (a build?): {exc}") from exc
            time.sleep(0.1)


def _opens_read_only(path: Path) -> bool:
    """Whether a store that would not open for writing opens for reading: then it is sound, and
    only this process may not write it (a read-only file or mount)."""
    try:
        duckdb.connect(str(path), read_only=True).close()
    except duckdb.Error:
        return False
    return True


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
    """The ready table for γ, or RunError listing what is built."""
    check_gamma(gamma)
    tables = list_tables(con)
    for info in tables:
        if info.gamma == gamma and info.positional == positional:
            return info
    raise RunError(missing_table_message(gamma, positional, [t.name for t in tables]))


def missing_table_message(gamma: int, positional: bool, built: Sequence[str]) -> str:
    """What to say when the table of (γ, positional) is not built: its name, what is, the fix."""
    kind, flag = ("positional table", " --positional") if positional else ("table", "")
    return (
        f"no {kind} {table_name(gamma, positional)} built for gamma={gamma}; built: "
        f"{', '.join(built) or 'none'}. Run `latentgram build --gamma {gamma}{flag}`"
    )


def read_rows(
    con: duckdb.DuckDBPyConnection,
    info: TableInfo,
    columns: Sequence[str] = ("context_key", "token", "count", "example_image"),
    batch_rows: int = 1 << 20,
) -> dict[str, np.ndarray]:
    """A table's rows sorted by (context_key, token), as an int64 array per column (the columns
    include those two), read through Arrow a batch at a time into arrays of the catalogue's
    size: no per-row Python, and no second copy of the table. A build merged from several
    chunks stores the rows in that order and DuckDB reads them as stored; the rows of a single
    chunk, or imported from another engine, are sorted here. Reading the three tables of the
    100× scale corpus through DuckDB's ORDER BY took 24 s, and held each whole in Arrow."""
    if not {"context_key", "token"} <= set(columns):
        raise ValueError("read_rows needs the context_key and token columns")
    arrays = {name: np.empty(info.rows, np.int64) for name in columns}
    keys, tokens = arrays["context_key"], arrays["token"]
    reader = con.sql(
        f"SELECT {', '.join(columns)} FROM ngrams WHERE table_id = $id",
        params={"id": info.table_id},
    ).to_arrow_reader(batch_rows)
    at, in_order = 0, True
    for batch in reader:
        end = at + batch.num_rows
        if end > info.rows:
            raise RunError(f"table {info.name} has more rows than its catalogue says: rebuild it")
        for name in columns:
            arrays[name][at:end] = batch.column(name).to_numpy()
        seam = max(at - 1, 0)  # the last row of the batch before, too
        in_order = in_order and _in_key_order(keys[seam:end], tokens[seam:end])
        at = end
    if at != info.rows:
        raise RunError(f"table {info.name} has fewer rows than its catalogue says: rebuild it")
    if not in_order:
        order = np.lexsort((tokens, keys))
        for name in columns:
            arrays[name] = arrays[name][order]
    return arrays


def _in_key_order(keys: np.ndarray, tokens: np.ndarray) -> bool:
    """Whether rows are sorted by (key, token), each pair once."""
    same = keys[1:] == keys[:-1]
    return not (np.any(keys[1:] < keys[:-1]) or np.any(same & (tokens[1:] <= tokens[:-1])))


def read_context_tokens(
    con: duckdb.DuckDBPyConnection, info: TableInfo
) -> tuple[np.ndarray, np.ndarray | None]:
    """A table's contexts as (M, K) int64 tokens, in key order, and their (M,) positions for a
    positional table (None otherwise)."""
    contexts = con.sql(
        "SELECT context_key, position, context FROM ngram_contexts WHERE table_id = $id"
        " ORDER BY context_key",
        params={"id": info.table_id},
    ).to_arrow_table()
    return _tokens_and_positions(contexts, info)


def iter_context_tokens(
    con: duckdb.DuckDBPyConnection, info: TableInfo, batch_rows: int = 1 << 20
) -> Iterator[tuple[np.ndarray, np.ndarray | None]]:
    """A table's contexts in batches of about `batch_rows` and in no set order, so that no more
    than a batch is held at once (a table of a large corpus holds tens of millions): each batch's
    (M·K,) tokens context after context, as stored (uint32, not copied), and its (M,)
    positions for a positional table."""
    k = context_size(info.gamma)
    reader = con.sql(
        "SELECT position, context FROM ngram_contexts WHERE table_id = $id",
        params={"id": info.table_id},
    ).to_arrow_reader(batch_rows)
    for batch in reader:
        if batch.num_rows:
            yield _token_values(batch.column("context"), k, info), _positions(batch, info)


def _tokens_and_positions(
    contexts: pa.Table, info: TableInfo
) -> tuple[np.ndarray, np.ndarray | None]:
    """The (M, K) tokens of rows of ngram_contexts as int64, and their positions for a
    positional table."""
    column = contexts.column("context").combine_chunks()
    k = context_size(info.gamma)
    return _token_values(column, k, info).reshape(-1, k).astype(np.int64), _positions(
        contexts, info
    )


def _token_values(lists: pa.Array, k: int, info: TableInfo) -> np.ndarray:
    """The values of lists of k tokens each, in view (lists share one values buffer: no
    per-row work); RunError for lists of another length."""
    tokens = lists.flatten().to_numpy()  # nulls refused
    if len(tokens) != k * len(lists):
        raise RunError(f"table {info.name} has contexts of other than {k} tokens: rebuild it")
    return tokens


def _positions(contexts: pa.Table | pa.RecordBatch, info: TableInfo) -> np.ndarray | None:
    if not info.positional:
        return None
    return np.asarray(contexts.column("position").to_numpy(), np.int64)
