"""Building a γ table: exact histograms with provenance, replaced atomically."""

import os
import subprocess
import sys
import textwrap
from pathlib import Path

import numpy as np
import pytest

from service.errors import InvalidInputError, RunError
from service.ngram.build import BUILD_STAGES, build_table
from service.ngram.index import NgramIndex
from service.ngram.store import get_table, list_tables, open_store
from tests.helpers import brute_force_histograms, grids_from_tokens


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
    from tests.helpers import grids_from_tokens
    from service.ngram.build import BUILD_STAGES, build_table
    from service.ngram.store import open_store

    def stop_at(stage):
        if stage == sys.argv[2]:  # say where the build is, then wait to be killed there
            print(stage, flush=True)
            sys.stdin.readline()

    grids = grids_from_tokens(np.random.default_rng(1).integers(0, 256, (2000, 4, 4)), 8)
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
    env = {**os.environ, "PYTHONPATH": str(Path(__file__).parents[2])}
    proc = subprocess.Popen(
        [sys.executable, "-c", BUILD_SCRIPT, str(store), stage],
        stdin=subprocess.PIPE,
        stdout=subprocess.PIPE,
        text=True,
        env=env,
    )
    assert proc.stdout is not None and proc.stdout.readline().strip() == stage
    proc.kill()
    proc.wait(timeout=30)
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
