"""Forward-only SQL migrations for the DuckDB store (migrations/NNNN_slug.sql).

Each file runs in one transaction together with its row in `schema_version`, then the database
is checkpointed; a file already recorded is skipped, so migrating twice changes nothing. A file
numbered below the highest one applied is refused (flyway's order check): applying it now would
run it after migrations written later than it, an order no store was ever tested in.

The SQL files ship inside the package: service/migrations links to the top-level migrations/
folder in the source tree, and the wheel carries copies of the files.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from importlib import resources
from pathlib import Path

import duckdb

from service.errors import RunError

MIGRATIONS_DIR = Path(str(resources.files("service") / "migrations"))
_NAME = re.compile(r"^(\d{4})_([a-z0-9_]+)\.sql$")


@dataclass(frozen=True)
class Migration:
    version: int
    name: str
    path: Path


@dataclass(frozen=True)
class MigrationStatus:
    current: int  # highest applied version, 0 for a new database
    latest: int  # highest version on disk
    pending: tuple[str, ...]  # file names not yet applied


def discover(folder: Path = MIGRATIONS_DIR) -> list[Migration]:
    """Migrations on disk in version order; a badly named or duplicate file is an error."""
    found: dict[int, Migration] = {}
    for path in sorted(folder.glob("*.sql")):
        match = _NAME.match(path.name)
        if match is None:
            raise RunError(f"migration file {path.name} must be named NNNN_slug.sql")
        version = int(match.group(1))
        if version in found:
            raise RunError(f"two migrations share version {version}: {path.name}")
        found[version] = Migration(version, path.name, path)
    if not found:
        raise RunError(f"no migrations found in {folder}: reinstall latentgram")
    return [found[v] for v in sorted(found)]


def _ensure_version_table(con: duckdb.DuckDBPyConnection) -> None:
    con.execute(
        "CREATE TABLE IF NOT EXISTS schema_version ("
        " version INTEGER PRIMARY KEY, name VARCHAR NOT NULL,"
        " applied_at TIMESTAMP NOT NULL DEFAULT current_timestamp)"
    )


def _applied(con: duckdb.DuckDBPyConnection) -> set[int]:
    return {row[0] for row in con.execute("SELECT version FROM schema_version").fetchall()}


def migrate(con: duckdb.DuckDBPyConnection, folder: Path = MIGRATIONS_DIR) -> list[str]:
    """Apply pending migrations; returns the names applied (empty when up to date)."""
    _ensure_version_table(con)
    done = _applied(con)
    on_disk = discover(folder)
    check_not_newer(max(done, default=0), max(m.version for m in on_disk))
    pending = [m for m in on_disk if m.version not in done]
    check_order(pending, done)
    applied = []
    for migration in pending:
        con.execute("BEGIN TRANSACTION")
        try:
            con.execute(migration.path.read_text())
            con.execute(
                "INSERT INTO schema_version (version, name) VALUES (?, ?)",
                [migration.version, migration.name],
            )
            con.execute("COMMIT")
        except duckdb.Error as exc:
            con.execute("ROLLBACK")
            raise RunError(f"migration {migration.name} failed: {exc}") from exc
        con.execute("CHECKPOINT")
        applied.append(migration.name)
    return applied


def check_not_newer(current: int, latest: int) -> None:
    """RunError for a store that a newer latentgram migrated: this one would misread it."""
    if current > latest:
        raise RunError(
            f"the store has schema version {current}, newer than this latentgram's {latest}:"
            " use the latentgram that wrote it, or upgrade this one"
        )


def check_order(pending: list[Migration], done: set[int]) -> None:
    """RunError when a pending migration is numbered below the highest one applied."""
    highest = max(done, default=0)
    late = [m.name for m in pending if m.version < highest]
    if late:
        raise RunError(
            f"migration {late[0]} is numbered below {highest:04d}, the highest already applied: "
            f"migrations only go forward; number it above {highest:04d}"
        )


def status(con: duckdb.DuckDBPyConnection, folder: Path = MIGRATIONS_DIR) -> MigrationStatus:
    """Current and latest schema versions, and what is pending."""
    on_disk = discover(folder)
    exists = con.execute(
        "SELECT count(*) FROM information_schema.tables WHERE table_name = 'schema_version'"
    ).fetchall()[0][0]
    done = _applied(con) if exists else set()
    return MigrationStatus(
        current=max(done, default=0),
        latest=max((m.version for m in on_disk), default=0),
        pending=tuple(m.name for m in on_disk if m.version not in done),
    )
