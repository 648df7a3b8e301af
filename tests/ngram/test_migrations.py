"""The forward-only migrations of the store: applied once, in order, in one transaction each."""

from pathlib import Path

import duckdb
import numpy as np
import pytest

from service.errors import RunError
from service.ngram.build import build_table
from service.ngram.index import NgramIndex
from service.ngram.migrations import discover, migrate, status
from service.ngram.store import open_store, upgrade_store
from tests.helpers import downgrade_to_first_schema, grids_from_tokens


def _table_rows(con: duckdb.DuckDBPyConnection) -> tuple[list[tuple], list[tuple]]:
    return (
        con.execute("SELECT * FROM ngrams ORDER BY ALL").fetchall(),
        con.execute("SELECT * FROM ngram_contexts ORDER BY ALL").fetchall(),
    )


def test_migrating_twice_changes_nothing(tmp_path: Path) -> None:
    con = duckdb.connect(str(tmp_path / "s.duckdb"))
    assert status(con).current == 0 and status(con).pending
    first = migrate(con)
    assert first == [m.name for m in discover()]
    schema = con.execute(
        "SELECT table_name, column_name FROM information_schema.columns ORDER BY ALL"
    ).fetchall()
    versions = con.execute("SELECT * FROM schema_version").fetchall()
    assert migrate(con) == []
    assert (
        con.execute(
            "SELECT table_name, column_name FROM information_schema.columns ORDER BY ALL"
        ).fetchall()
        == schema
    )
    assert con.execute("SELECT * FROM schema_version").fetchall() == versions
    s = status(con)
    assert s.current == s.latest >= 1 and s.pending == ()


def test_migrations_0002_and_0003_keep_every_row_of_a_0001_store(tmp_path: Path) -> None:
    """Built now, rewritten in the 0001 layout, migrated forward: the same rows come back."""
    store = tmp_path / "s.duckdb"
    rng = np.random.default_rng(3)
    with open_store(store) as con:
        build_table(con, grids_from_tokens(rng.integers(0, 3, (40, 4, 4)), channels=2), gamma=3)
        build_table(
            con, grids_from_tokens(rng.integers(0, 3, (40, 4, 4)), 2), gamma=5, positional=True
        )
        before = _table_rows(con)
    downgrade_to_first_schema(store)
    with pytest.raises(RunError, match=r"schema version 1, this latentgram needs \d.*migrate"):
        open_store(store, read_only=True)
    assert upgrade_store(store) == ["0002_contexts_table.sql", "0003_context_token_lists.sql"]
    assert upgrade_store(store) == []
    with open_store(store, read_only=True) as con:
        assert _table_rows(con) == before
        index = NgramIndex.load(con, 5, positional=True)
        assert len(index.tokens) == index.info.rows > 0


def _migrations_folder(tmp_path: Path, *names: str) -> Path:
    """A copy of the shipped migrations plus extra files (name → SQL)."""
    folder = tmp_path / "migrations"
    folder.mkdir()
    for migration in discover():
        (folder / migration.name).write_text(migration.path.read_text())
    return folder


def test_a_failed_migration_leaves_neither_table_nor_version_row(tmp_path: Path) -> None:
    folder = _migrations_folder(tmp_path)
    (folder / "0100_half.sql").write_text(
        "CREATE TABLE half_done (x INTEGER); INSERT INTO no_such_table VALUES (1);"
    )
    con = duckdb.connect(str(tmp_path / "s.duckdb"))
    with pytest.raises(RunError, match=r"migration 0100_half\.sql failed"):
        migrate(con, folder)
    tables = {
        r[0] for r in con.execute("SELECT table_name FROM information_schema.tables").fetchall()
    }
    assert "half_done" not in tables and "ngrams" in tables  # the earlier ones did apply
    assert status(con, folder).pending == ("0100_half.sql",)
    assert 100 not in {r[0] for r in con.execute("SELECT version FROM schema_version").fetchall()}


def test_a_migration_numbered_below_the_highest_applied_is_refused(tmp_path: Path) -> None:
    folder = _migrations_folder(tmp_path)
    (folder / "0100_later.sql").write_text("CREATE TABLE later (x INTEGER);")
    con = duckdb.connect(str(tmp_path / "s.duckdb"))
    migrate(con, folder)
    (folder / "0050_forgotten.sql").write_text("CREATE TABLE forgotten (x INTEGER);")
    with pytest.raises(RunError, match=r"0050_forgotten\.sql is numbered below 0100.*forward"):
        migrate(con, folder)
    tables = {
        r[0] for r in con.execute("SELECT table_name FROM information_schema.tables").fetchall()
    }
    assert "forgotten" not in tables


def test_the_migrations_ship_inside_the_package() -> None:
    """service/migrations is what an installed latentgram reads (tests/test_packaging.py installs
    a wheel); in the source tree it is the top-level migrations/ folder."""
    shipped = [m.path.resolve() for m in discover()]
    top_level = sorted((Path(__file__).parents[2] / "migrations").resolve().glob("*.sql"))
    assert shipped == top_level and len(shipped) >= 2
