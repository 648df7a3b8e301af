"""Opening the store: one held by another process is in use (and waited for), one that is not
a DuckDB file is refused at once."""

from __future__ import annotations

import subprocess
import sys
import time
from pathlib import Path

import pytest

from service.errors import RunError
from service.ngram.store import WRITER_WAIT_SECONDS, open_store

HOLD = "import duckdb, sys; c = duckdb.connect(sys.argv[1]); print('held', flush=True); input()"


def test_a_store_another_process_holds_is_in_use(tmp_path: Path) -> None:
    path = tmp_path / "store.duckdb"
    open_store(path).close()
    holder = subprocess.Popen(
        [sys.executable, "-c", HOLD, str(path)], stdin=subprocess.PIPE, stdout=subprocess.PIPE,
        text=True,
    )  # fmt: skip
    try:
        assert holder.stdout is not None and holder.stdout.readline().strip() == "held"
        with pytest.raises(RunError, match="in use by another process"):
            open_store(path, read_only=True)
    finally:
        holder.communicate("\n")
    open_store(path, read_only=True).close()  # let go: readable again


def test_a_file_that_is_no_store_is_refused_without_waiting(tmp_path: Path) -> None:
    path = tmp_path / "store.duckdb"
    path.write_text("tokens, not a database\n" * 1000)
    started = time.monotonic()
    with pytest.raises(RunError, match="is not a readable DuckDB store"):
        open_store(path)  # a writer would wait for a lock to go; this is no lock
    assert time.monotonic() - started < WRITER_WAIT_SECONDS
