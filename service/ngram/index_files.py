"""Each table's sampling index saved beside the store, mapped by every process that serves it.

Built from DuckDB, an index is private memory in each process (about 150 MB per worker for the
default run, its hash tables and filters included) and takes seconds; mapped from .npy files it is
one copy in the page cache for all workers, there in milliseconds. The files are a cache of the
store, as the index is (DESIGN.md §5): <store's folder>/index/<table id>/ holds one table's
arrays and a manifest naming the table. A rebuilt table gets a new catalogue id, so its files
never pass for the old ones; files that are missing, stale or damaged are rebuilt from the store,
with a warning, and a run directory that cannot be written serves an index built in memory.
"""

from __future__ import annotations

import errno
import logging
import os
import time
from collections.abc import Callable, Collection, Iterable
from dataclasses import fields
from functools import partial
from pathlib import Path

import duckdb

from service.array_files import (
    ArrayOrMaker,
    StaleArrays,
    read_arrays,
    remove_others,
    write_arrays,
)
from service.ngram.depth_first import slots_for
from service.ngram.index import (
    KeyFilter,
    NgramIndex,
    SearchAids,
    key_hash_table,
    read_above_filter,
    read_keyed_rows,
)
from service.ngram.store import TableInfo, list_tables

log = logging.getLogger(__name__)

INDEX_DIR = "index"  # beside the store
# What the search aids hold and how they hash (depth_first): files of another layout are stale.
# 2: key_slots hold packed row ranges, first slots and filter words from a key's top bits.
# 3: the above parts' Bloom filter alone, without their keys or hash table.
INDEX_LAYOUT = 3
_TABLE_ARRAYS = ("keys", "starts", "tokens", "counts", "examples", "above_words")


def index_root(store: Path) -> Path:
    """The folder of every table's index files."""
    return store.parent / INDEX_DIR


def index_folder(store: Path, table_id: int) -> Path:
    return index_root(store) / str(table_id)


def _meta(info: TableInfo) -> dict[str, object]:
    """What the files must have been written for: the catalogue row that identifies the table."""
    return {
        "layout": INDEX_LAYOUT,
        "table_id": info.table_id,
        "name": info.name,
        "gamma": info.gamma,
        "positional": bool(info.positional),
        "contexts": info.contexts,
        "rows": info.rows,
        "model_sha256": info.model_sha256,
    }


def map_index(store: Path, info: TableInfo) -> NgramIndex:
    """The index of the table `info` from its files, mapped read-only; StaleArrays when they are
    missing or were not written for this table."""
    arrays = read_arrays(index_folder(store, info.table_id), _meta(info))
    names = _TABLE_ARRAYS + tuple(f.name for f in fields(SearchAids))
    if missing := [name for name in names if name not in arrays]:
        raise StaleArrays(f"index files of {info.name} lack {', '.join(missing)}")
    aids = SearchAids(**{f.name: arrays[f.name] for f in fields(SearchAids)})
    index = NgramIndex(info, **{name: arrays[name] for name in _TABLE_ARRAYS}, built=aids)
    _check_sizes(index)
    return index


def _check_sizes(index: NgramIndex) -> None:
    """The shapes the catalogue row implies, and the offsets' two ends: a check that reads two
    pages, not the files (a file cut short does not map at all)."""
    info, aids = index.info, index.built
    assert aids is not None
    table = {"keys": info.contexts, "starts": info.contexts + 1}
    table.update({name: info.rows for name in ("tokens", "counts", "examples")})
    for name, length in table.items():
        if getattr(index, name).shape != (length,):
            raise StaleArrays(f"{name} of {info.name} should hold {length} values")
    slots = aids.key_slots
    if slots.ndim != 2 or slots.shape[1] != 2 or len(slots) != slots_for(info.contexts):
        raise StaleArrays(f"the hash table of {info.name} is not sized for its keys")
    if index.starts[0] != 0 or index.starts[-1] != info.rows:
        raise StaleArrays(f"the offsets of {info.name} do not span its {info.rows} rows")


def write_index(
    con: duckdb.DuckDBPyConnection, store: Path, info: TableInfo, keep: Collection[int] = ()
) -> NgramIndex:
    """Write the index files of the table `info` from the store and return its index mapped
    from them; the folders of tables not in `keep` (nor this one) are removed. OSError when the
    run directory cannot be written.

    Each array is made when its turn comes and dropped once written, the rows first: the hash
    tables and filters are then built from the keys alone. (At 100× the default corpus, γ = 7,
    holding the rows while they were built made the build's peak: 5.85 GiB.)"""
    root = index_root(store)
    root.mkdir(parents=True, exist_ok=True)  # before the rows are read: a read-only run fails fast
    if not os.access(root, os.W_OK):
        raise PermissionError(errno.EACCES, "cannot write the index files", str(root))
    keys, starts, rows = read_keyed_rows(con, info)
    arrays: dict[str, ArrayOrMaker] = {
        "tokens": partial(rows.pop, "token"),
        "counts": partial(rows.pop, "count"),
        "examples": partial(rows.pop, "example_image"),
        "keys": keys,
        "starts": starts,
        "key_slots": partial(key_hash_table, keys, starts),
        "key_words": lambda: KeyFilter(keys).words,
        "above_words": partial(read_above_filter, con, info),
    }
    write_arrays(index_folder(store, info.table_id), arrays, _meta(info), read_back=False)
    live = {str(table_id) for table_id in (*keep, info.table_id)}
    if removed := remove_others(root, live):
        log.info("removed the index files of old tables %s", ", ".join(removed))
    return map_index(store, info)


def load_index(
    con: duckdb.DuckDBPyConnection, store: Path, info: TableInfo, just_built: bool = False
) -> NgramIndex:
    """The table's index mapped from its files; when they are missing or stale, built from the
    store, saved (with a warning that says so, unless the table was `just_built` and has no
    files yet) and mapped, or kept in memory where the run directory cannot be written."""
    try:
        return map_index(store, info)
    except StaleArrays as why:
        if just_built and not index_folder(store, info.table_id).exists():
            log.info("writing the index files of %s", info.name)
        else:
            log.warning("rebuilding the index of %s from %s: %s", info.name, store, why)
    started = time.perf_counter()
    try:
        index = write_index(con, store, info, keep=[t.table_id for t in list_tables(con)])
    except OSError as exc:
        where = index_root(store)
        log.warning(
            "cannot cache the index of %s in %s (%s): serving it from memory", info.name, where, exc
        )
        return NgramIndex.load(con, info.gamma, info.positional)
    log.info("saved the index of %s in %.1f s", info.name, time.perf_counter() - started)
    return index


def write_run_indexes(
    con: duckdb.DuckDBPyConnection,
    store: Path,
    wrap: Callable[[list[TableInfo]], Iterable[TableInfo]] = iter,
) -> list[Path]:
    """Write the index files of every ready table of the store that lacks fresh ones (a build
    calls this after building, so that the service only maps them); returns their folders.
    `wrap` goes around the tables, e.g. a progress bar."""
    tables = list_tables(con)
    for info in wrap(tables):
        load_index(con, store, info, just_built=True)
    return [index_folder(store, info.table_id) for info in tables]
