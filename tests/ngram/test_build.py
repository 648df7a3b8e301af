"""Building a γ table: exact histograms with provenance, replaced atomically."""

import textwrap
from collections.abc import Iterator
from pathlib import Path

import duckdb
import numpy as np
import pytest

from service.errors import InvalidInputError, RunError
from service.ngram import build
from service.ngram.build import (
    BUILD_STAGES,
    CHUNK_CONTEXT_TOKENS,
    CHUNK_WINDOWS,
    build_table,
    index_memory_limit,
    limit_memory,
    windows_per_chunk,
)
from service.ngram.index import NgramIndex
from service.ngram.store import TableInfo, get_table, list_tables, open_store, read_rows
from service.ngram.tokens import TokenGrids
from service.ngram.windows import context_size
from tests.helpers import brute_force_histograms, grids_from_tokens, kill_at_stage


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
    latents = grids_from_tokens(tokens, channels=2, ids=ids)
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
        ctx = tuple(context)
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
    a = grids_from_tokens(rng.integers(0, 4, (30, 4, 4)), channels=2)
    b = grids_from_tokens(rng.integers(0, 4, (50, 4, 4)), channels=2)
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
    grids = grids_from_tokens(np.zeros((2, 4, 4), np.int64), channels=1)
    with open_store(tmp_path / "s.duckdb") as con:
        for gamma in (4, 1, 2, -3):
            with pytest.raises(InvalidInputError, match="odd window size"):
                build_table(con, grids, gamma=gamma)
        build_table(con, grids, gamma=3)
        with pytest.raises(RunError, match=r"no table g5 built for gamma=5.*built: g3"):
            NgramIndex.load(con, 5)
        with pytest.raises(RunError, match=r"no positional table g3p built.*--positional"):
            NgramIndex.load(con, 3, positional=True)


BUILD_SCRIPT = textwrap.dedent(
    """
    import sys
    from pathlib import Path
    import numpy as np
    from service.ngram.build import build_table
    from service.ngram.store import open_store
    from service.ngram.tokens import TokenGrids

    def stop_at(stage):
        if stage == sys.argv[2]:  # say where the build is, then wait to be killed there
            print(stage, flush=True)
            sys.stdin.readline()

    grids = TokenGrids(np.random.default_rng(1).integers(0, 256, (2000, 4, 4)), np.arange(2000), 8)
    con = open_store(Path(sys.argv[1]))
    build_table(con, grids, gamma=5, on_stage=stop_at)
    """
)


@pytest.mark.parametrize("stage", BUILD_STAGES)
def test_a_build_killed_at_any_stage_leaves_one_whole_table(tmp_path: Path, stage: str) -> None:
    """Killed before its commit, the build leaves the old table served; after, the new one."""
    store = tmp_path / "s.duckdb"
    old_grids = grids_from_tokens(np.random.default_rng(0).integers(0, 256, (100, 4, 4)), 8)
    with open_store(store) as con:
        old = build_table(con, old_grids, gamma=5)
    kill_at_stage(BUILD_SCRIPT, stage, str(store), stage)
    with open_store(store, read_only=True) as con:
        tables = list_tables(con)
        assert len(tables) == 1
        served = tables[0]
        assert (served.table_id == old.table_id) == (stage != "committed")
        assert served.images == (2000 if stage == "committed" else 100)
        states = con.execute("SELECT state, count(*) FROM ngram_tables GROUP BY state").fetchall()
        assert states == [("ready", 1)]
        assert con.execute("SELECT count(*) FROM ngrams").fetchall() == [(served.rows,)]
        assert NgramIndex.load(con, 5).info.table_id == served.table_id


def table_rows(con: duckdb.DuckDBPyConnection, info: TableInfo) -> tuple[list[tuple], list[tuple]]:
    """A table's histogram rows and context rows, sorted, without its table id."""
    rows = con.execute(
        "SELECT context_key, token, count, images, example_image FROM ngrams"
        " WHERE table_id = ? ORDER BY ALL",
        [info.table_id],
    ).fetchall()
    contexts = con.execute(
        "SELECT context_key, position, context FROM ngram_contexts WHERE table_id = ? ORDER BY ALL",
        [info.table_id],
    ).fetchall()
    return rows, contexts


def table_digest(con: duckdb.DuckDBPyConnection, info: TableInfo) -> tuple:
    """Row counts and order-free sums of row hashes of a table's rows and contexts: equal
    digests are equal row sets but for a 2^-64 chance, without copying rows into Python."""
    return con.execute(
        "SELECT (SELECT (count(*), sum(hash(context_key, token, count, images, example_image)))"
        "        FROM ngrams WHERE table_id = $id),"
        "       (SELECT (count(*), sum(hash(context_key, position, context)))"
        "        FROM ngram_contexts WHERE table_id = $id)",
        {"id": info.table_id},
    ).fetchall()[0]


def figures(info: TableInfo) -> tuple:
    return (
        info.windows,
        info.contexts,
        info.rows,
        info.images,
        info.grid_height,
        info.latent_channels,
    )


@pytest.mark.parametrize("gamma,positional", [(3, False), (5, False), (5, True)])
def test_a_build_in_chunks_writes_the_rows_of_one_pass(
    tmp_path: Path, gamma: int, positional: bool
) -> None:
    """Windows appended a few images at a time, and batches of images as an iterable, give the
    same rows, provenance and figures as all windows at once."""
    rng = np.random.default_rng(gamma)
    tokens = rng.integers(0, 3, (90, 4, 4))  # repeats within and across images and chunks
    ids = rng.permutation(90) * 3 + 2  # not in order: the smallest id is not the first seen
    grids = grids_from_tokens(tokens, channels=2, ids=ids)
    with open_store(tmp_path / "s.duckdb") as con:
        whole = build_table(con, grids, gamma=gamma, positional=positional)
        expected = table_rows(con, whole)
        batches = [
            grids_from_tokens(tokens[a:b], 2, ids[a:b]) for a, b in ((0, 0), (0, 41), (41, 90))
        ]
        chunked = build_table(
            con, batches, gamma=gamma, positional=positional, chunk_windows=7 * 16
        )
        assert table_rows(con, chunked) == expected
        assert figures(chunked) == figures(whole)
        assert chunked.table_id != whole.table_id and len(list_tables(con)) == 1


def test_wide_windows_make_smaller_chunks_with_the_same_rows(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A chunk's contexts keep their K tokens each, K growing as γ²: the chunks of wide γs hold
    fewer windows (16×16's seven tables in 4 M-window chunks peaked at 15.4 GB), and the rows
    stay those of one chunk."""
    assert windows_per_chunk((3, 5, 7)) == CHUNK_WINDOWS  # the 4×4 default: one chunk
    for gammas in ((31,), (3, 5, 7, 11, 17, 27, 31)):
        n = windows_per_chunk(gammas)
        assert n < CHUNK_WINDOWS and n * sum(map(context_size, gammas)) <= CHUNK_CONTEXT_TOKENS
    grids = grids_from_tokens(np.random.default_rng(3).integers(0, 2, (60, 8, 8)), 1)
    with open_store(tmp_path / "s.duckdb") as con:
        whole = table_rows(con, build_table(con, grids, gamma=15))
        monkeypatch.setattr(build, "CHUNK_CONTEXT_TOKENS", 112 * 64 * 7)  # 7 images a chunk
        sizes: list[int] = []
        split = build.in_chunks

        def recorded(grids: TokenGrids, images: int) -> Iterator[TokenGrids]:
            sizes.append(images)
            return split(grids, images)

        monkeypatch.setattr(build, "in_chunks", recorded)
        assert table_rows(con, build_table(con, grids, gamma=15)) == whole
    assert sizes == [7]


def test_a_build_of_many_chunks_stores_its_rows_in_key_order(tmp_path: Path) -> None:
    """As the index reads them, without sorting: by (context key, token), negative keys
    first."""
    tokens = np.random.default_rng(1).integers(0, 3, (90, 4, 4))
    with open_store(tmp_path / "s.duckdb") as con:
        info = build_table(con, grids_from_tokens(tokens, 2), gamma=5, chunk_windows=7 * 16)
        stored = con.execute(
            "SELECT context_key, token FROM ngrams WHERE table_id = ?", [info.table_id]
        ).fetchall()
    assert stored == sorted(set(stored)) and stored[0][0] < 0 < stored[-1][0]


def test_rows_stored_out_of_order_are_read_sorted(tmp_path: Path) -> None:
    """As another engine's import leaves them: read_rows sorts what the build did not."""
    tokens = np.random.default_rng(2).integers(0, 3, (90, 4, 4))
    with open_store(tmp_path / "s.duckdb") as con:
        info = build_table(con, grids_from_tokens(tokens, 2), gamma=5)
        expected = read_rows(con, info)
        con.execute("CREATE TEMP TABLE shuffled AS SELECT * FROM ngrams ORDER BY hash(token)")
        con.execute("DELETE FROM ngrams")
        con.execute("INSERT INTO ngrams SELECT * FROM shuffled")
        shuffled = con.execute("SELECT context_key FROM ngrams").fetchnumpy()["context_key"]
        got = read_rows(con, info, batch_rows=7)
    assert np.any(np.diff(shuffled) < 0)
    for name, values in expected.items():
        np.testing.assert_array_equal(got[name], values)
    assert np.all(np.diff(expected["context_key"]) >= 0)


def test_no_training_images_is_a_clear_error(tmp_path: Path) -> None:
    empty = grids_from_tokens(np.zeros((0, 4, 4), np.int64), channels=2)
    with (
        open_store(tmp_path / "s.duckdb") as con,
        pytest.raises(InvalidInputError, match="no training"),
    ):
        build_table(con, [empty, empty], gamma=3)


def test_memory_limit_is_set_or_refused(tmp_path: Path) -> None:
    with open_store(tmp_path / "s.duckdb") as con:
        for bad in ("lots", "4 GB; DROP TABLE ngrams", "-1GB", "", "4096", "0GB", "0%"):
            with pytest.raises(InvalidInputError, match="memory limit"):
                limit_memory(con, bad, None)
        limit_memory(con, "64MiB", tmp_path / "spill")
        limit = con.execute("SELECT current_setting('memory_limit')").fetchall()[0][0]
        spill = con.execute("SELECT current_setting('temp_directory')").fetchall()[0][0]
    assert limit in ("64.0 MiB", "67.1 MB") and spill == str(tmp_path / "spill")


def test_index_files_are_written_under_the_smaller_of_1gb_and_the_build_limit() -> None:
    assert index_memory_limit(None) == index_memory_limit("4GB") == "1GB"
    assert index_memory_limit("80%") == index_memory_limit("2 GiB") == "1GB"
    assert index_memory_limit("512MiB") == "512MiB" and index_memory_limit(" 0.5 GB") == "0.5 GB"
    with pytest.raises(InvalidInputError, match="memory limit"):
        index_memory_limit("lots")


def test_a_build_in_many_chunks_spills_to_the_temp_directory_and_counts_the_same(
    tmp_path: Path,
) -> None:
    """Chunks' counts are spilled to DuckDB's temp directory, merged from there into the rows
    of a build in one chunk, and the spill is gone afterwards."""
    rng = np.random.default_rng(5)
    grids = grids_from_tokens(rng.integers(0, 4096, (40_000, 4, 4)), channels=12)
    with open_store(tmp_path / "free.duckdb") as con:
        expected = table_digest(con, build_table(con, grids, gamma=7))
    spill = tmp_path / "run" / "tmp" / "duckdb"  # as a run's: parents that do not exist yet
    with open_store(tmp_path / "limited.duckdb") as con:
        limit_memory(con, "48MB", spill)
        spilled: list[int] = []

        def measure_spill(stage: str) -> None:
            if stage == "windows":  # every chunk is counted, none merged yet
                spilled.append(sum(f.stat().st_size for f in spill.rglob("*.bin")))

        info = build_table(con, grids, gamma=7, on_stage=measure_spill, chunk_windows=1 << 16)
        assert table_digest(con, info) == expected
    assert spilled[0] > 40_000 * 16 * 8  # at least a key per window
    assert not any(spill.iterdir())
