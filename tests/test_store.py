"""Migrations, atomic builds and histograms of the DuckDB n-gram store."""

import subprocess
import sys
import textwrap
import time
from pathlib import Path

import duckdb
import numpy as np
import pytest
from ngram_helpers import brute_force_histograms, downgrade_to_first_schema, latents_from_tokens

from service.errors import InvalidInputError, RunError
from service.index import NgramIndex
from service.migrate import discover, migrate, status
from service.store import build_table, get_table, list_tables, open_store, upgrade_store


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


def _table_rows(con: duckdb.DuckDBPyConnection) -> tuple[list[tuple], list[tuple]]:
    return (
        con.execute("SELECT * FROM ngrams ORDER BY ALL").fetchall(),
        con.execute("SELECT * FROM ngram_contexts ORDER BY ALL").fetchall(),
    )


def test_migration_0002_keeps_every_row_of_a_0001_store(tmp_path: Path) -> None:
    """Built now, rewritten in the 0001 layout, migrated forward: the same rows come back."""
    store = tmp_path / "s.duckdb"
    rng = np.random.default_rng(3)
    with open_store(store) as con:
        build_table(con, latents_from_tokens(rng.integers(0, 3, (40, 4, 4)), channels=2), gamma=3)
        build_table(
            con, latents_from_tokens(rng.integers(0, 3, (40, 4, 4)), 2), gamma=5, positional=True
        )
        before = _table_rows(con)
    downgrade_to_first_schema(store)
    with pytest.raises(RunError, match=r"schema version 1, this latentgram needs \d.*migrate"):
        open_store(store, read_only=True)
    assert upgrade_store(store) == ["0002_contexts_table.sql"]
    assert upgrade_store(store) == []
    with open_store(store, read_only=True) as con:
        assert _table_rows(con) == before
        index = NgramIndex.load(con, 5, positional=True)
        assert len(index.tokens) == index.info.rows > 0


# 3×4 grids take the pairwise first-in-image check, 8×8 grids at γ = 3 (large PAD classes)
# the per-image sort.
@pytest.mark.parametrize(
    "gamma,positional,grid",
    [(3, False, (3, 4)), (5, False, (3, 4)), (3, True, (3, 4)), (3, False, (8, 8))],
)
def test_histograms_equal_brute_force_counts(
    tmp_path: Path, gamma: int, positional: bool, grid: tuple[int, int]
) -> None:
    rng = np.random.default_rng(gamma)
    tokens = rng.integers(0, 3, (60, *grid))  # few tokens, so contexts repeat, within images too
    ids = np.arange(60) * 7 + 11
    latents = latents_from_tokens(tokens, channels=2, ids=ids)
    with open_store(tmp_path / "s.duckdb") as con:
        info = build_table(con, latents, gamma=gamma, positional=positional)
        rows = con.execute(
            "SELECT c.context, c.position, n.token, n.count, n.images, n.example_image"
            " FROM ngrams n JOIN ngram_contexts c USING (table_id, context_key)"
            " WHERE table_id = ?",
            [info.table_id],
        ).fetchall()
        contexts = con.execute(
            "SELECT count(*) FROM ngram_contexts WHERE table_id = ?", [info.table_id]
        ).fetchall()
        index = NgramIndex.load(con, gamma, positional)
    expected = brute_force_histograms(tokens, ids, gamma, pad=4, positional=positional)
    got: dict[tuple[int, ...], dict[int, tuple[int, int, int]]] = {}
    for context, position, token, count, images, example in rows:
        ctx = tuple(int(v) for v in np.frombuffer(context, "<u4"))
        ctx += (position,) if positional else ()
        got.setdefault(ctx, {})[token] = (count, images, example)
    assert got.keys() == expected.keys()
    for ctx, hist in expected.items():
        assert {t: (n, len(im), min(im)) for t, (n, im) in hist.items()} == got[ctx]
        tokens_only, position = (ctx[:-1], ctx[-1]) if positional else (ctx, None)
        h = index.histogram(np.array(tokens_only), position)
        assert h is not None
        assert dict(zip(h.tokens.tolist(), h.counts.tolist(), strict=True)) == {
            t: n for t, (n, _) in hist.items()
        }
    assert info.contexts == len(expected) == contexts[0][0]
    assert index.nbytes == NgramIndex.nbytes_of(info)  # what `latentgram tables` shows
    assert info.windows == 60 * grid[0] * grid[1] and info.rows == len(rows)
    assert index.histogram(np.full(index.keys.size and len(tokens_only), 3), position) is None


def test_rebuild_replaces_the_table(tmp_path: Path) -> None:
    rng = np.random.default_rng(0)
    a = latents_from_tokens(rng.integers(0, 4, (30, 4, 4)), channels=2)
    b = latents_from_tokens(rng.integers(0, 4, (50, 4, 4)), channels=2)
    with open_store(tmp_path / "s.duckdb") as con:
        build_table(con, a, gamma=3)
        second = build_table(con, b, gamma=3)
        assert [t.name for t in list_tables(con)] == ["g3"]
        assert get_table(con, 3).table_id == second.table_id and second.images == 50
        for table in ("ngrams", "ngram_contexts"):
            orphans = con.execute(
                f"SELECT count(*) FROM {table} WHERE table_id <> ?", [second.table_id]
            ).fetchall()
            assert orphans == [(0,)]


def test_bad_gamma_is_a_clear_error(tmp_path: Path) -> None:
    latents = latents_from_tokens(np.zeros((2, 4, 4), np.int64), channels=1)
    with open_store(tmp_path / "s.duckdb") as con:
        for gamma in (4, 1, 2, -3):
            with pytest.raises(InvalidInputError, match="odd window size"):
                build_table(con, latents, gamma=gamma)
        build_table(con, latents, gamma=3)
        with pytest.raises(InvalidInputError, match=r"no table built for gamma=5.*built: g3"):
            NgramIndex.load(con, 5)


BUILD_SCRIPT = textwrap.dedent(
    """
    import sys
    import numpy as np
    sys.path.insert(0, {tests!r})
    from ngram_helpers import latents_from_tokens
    from service.store import build_table, open_store
    latents = latents_from_tokens(np.random.default_rng(1).integers(0, 256, (300_000, 4, 4)), 8)
    con = open_store(__import__("pathlib").Path({store!r}))
    print("building", flush=True)
    build_table(con, latents, gamma=5)
    print("finished", flush=True)
    """
)


@pytest.mark.parametrize("kill_after_s", [0.3, 1.5, 3.0])
def test_killed_build_leaves_the_old_table(tmp_path: Path, kill_after_s: float) -> None:
    store = tmp_path / "s.duckdb"
    old_latents = latents_from_tokens(np.random.default_rng(0).integers(0, 256, (100, 4, 4)), 8)
    with open_store(store) as con:
        old = build_table(con, old_latents, gamma=5)
    script = BUILD_SCRIPT.format(tests=str(Path(__file__).parent), store=str(store))
    proc = subprocess.Popen([sys.executable, "-c", script], stdout=subprocess.PIPE, text=True)
    assert proc.stdout is not None and proc.stdout.readline().strip() == "building"
    time.sleep(kill_after_s)
    assert proc.poll() is None, "the build finished before it could be killed"
    proc.kill()
    proc.wait(timeout=30)
    with open_store(store, read_only=True) as con:
        tables = list_tables(con)
        assert [(t.table_id, t.rows, t.images) for t in tables] == [(old.table_id, old.rows, 100)]
        states = con.execute("SELECT state, count(*) FROM ngram_tables GROUP BY state").fetchall()
        assert states == [("ready", 1)]
        assert con.execute("SELECT count(*) FROM ngrams").fetchall() == [(old.rows,)]
        assert NgramIndex.load(con, 5).info.table_id == old.table_id
