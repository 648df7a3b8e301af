"""The Spark build: the same tables as the DuckDB build, provenance and samples included, imported
atomically; a master that does not answer or a missing Java fails at once, in one line.

One Spark session on local[2] serves the module (starting one costs seconds); the data is tiny.
"""

from __future__ import annotations

import os
import re
import shutil
import socket
import subprocess
import sys
import textwrap
import time
from collections.abc import Iterator
from pathlib import Path

import numpy as np
import pytest

from service.data.latent_batches import iter_train_grids
from service.data.parquet import write_latents
from service.errors import InvalidInputError, RunError
from service.latents.bits import pack_bits
from service.latents.latent_set import LatentSet
from service.ngram.build import BUILD_STAGES, TableShape, build_table, import_table
from service.ngram.exact import ExactSampler
from service.ngram.index import NgramIndex
from service.ngram.samples import SampleConfig
from service.ngram.store import list_tables, open_store
from service.ngram.tokens import tokens_to_bits
from tests.helpers import kill_at_stage
from tests.ngram.test_build import figures, table_rows

pytest.importorskip("pyspark", reason="`make setup` installs pyspark (the [spark] extra)")
if shutil.which("java") is None and not os.environ.get("JAVA_HOME"):
    pytest.skip("no Java: `make setup` installs openjdk-17-jre-headless", allow_module_level=True)

from service.run.spark_build import (
    build_table_spark,
    check_spark_installed,
    check_spark_master,
    count_windows_spark,
    spark_session,
)

SHAPE = (3, 4, 4)  # C, H, W
SHA = "ab" * 32


@pytest.fixture(scope="module")
def spark(tmp_path_factory: pytest.TempPathFactory) -> Iterator[object]:
    # Batches of 50 images: Spark hands the windows code many batches, as on a real corpus.
    config = {"spark.sql.execution.arrow.maxRecordsPerBatch": "50"}
    with spark_session(
        "local[2]", work_dir=tmp_path_factory.mktemp("spark"), config=config
    ) as session:
        yield session


@pytest.fixture(scope="module")
def latents(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """latents.parquet of 400 images (a quarter of them test images), with tokens from a small
    range so that windows repeat within and across images, and ids out of order."""
    rng = np.random.default_rng(14)
    n = 400
    tokens = rng.integers(0, 3, (n, *SHAPE[1:]))
    ids = rng.permutation(n).astype(np.int64) * 5 + 3
    splits = np.where(rng.random(n) < 0.25, "test", "train")
    packed = pack_bits(tokens_to_bits(tokens, SHAPE[0]))
    path = tmp_path_factory.mktemp("run") / "latents.parquet"
    write_latents(path, LatentSet(ids, splits, np.zeros(n, np.int64), packed, SHAPE, SHA))
    return path


@pytest.mark.parametrize("gamma,positional", [(3, False), (5, False), (5, True)])
def test_spark_builds_the_duckdb_table(
    spark: object, latents: Path, tmp_path: Path, gamma: int, positional: bool
) -> None:
    with open_store(tmp_path / "duck.duckdb") as con:
        batches = iter_train_grids(latents, images_per_batch=64)
        duck = build_table(con, batches, gamma=gamma, positional=positional, run="r")
        expected = table_rows(con, duck), figures(duck)
    with open_store(tmp_path / "spark.duckdb") as con:
        info = build_table_spark(
            con, spark, latents, tmp_path / "staging", gamma=gamma, positional=positional, run="r"
        )
        assert (table_rows(con, info), figures(info)) == expected
        assert (info.name, info.run, info.model_sha256) == (duck.name, duck.run, duck.model_sha256)
    assert 250 < info.images < 350  # the training split only, of 400 images
    assert list((tmp_path / "staging").iterdir()) == []  # the staging files are removed


def test_the_same_seed_draws_the_same_samples_from_either_engine(
    spark: object, latents: Path, tmp_path: Path
) -> None:
    samples = []
    for engine in ("duckdb", "spark"):
        with open_store(tmp_path / f"{engine}.duckdb") as con:
            if engine == "spark":
                build_table_spark(con, spark, latents, tmp_path, gamma=5)
            else:
                build_table(con, iter_train_grids(latents, 1000), gamma=5)
            index = NgramIndex.load(con, 5)
        samples.append(ExactSampler(index).sample(SampleConfig(n=64, seed=11)))
    duck, spark_batch = samples
    assert duck.ok.any()
    for field in ("tokens", "ok", "examples", "backtracks"):
        assert np.array_equal(getattr(duck, field), getattr(spark_batch, field)), field


IMPORT_SCRIPT = textwrap.dedent(
    """
    import sys
    from pathlib import Path
    from service.ngram.build import TableShape, import_table
    from service.ngram.store import open_store

    def stop_at(stage):
        if stage == sys.argv[3]:  # say where the import is, then wait to be killed there
            print(stage, flush=True)
            sys.stdin.readline()

    out = Path(sys.argv[2])
    con = open_store(Path(sys.argv[1]))
    shape = TableShape(3, 4, 4, "ab" * 32)
    import_table(con, out / "ngrams", out / "contexts", shape, images=int(sys.argv[4]), gamma=5,
                 on_stage=stop_at)
    """
)


@pytest.fixture(scope="module")
def spark_files(spark: object, latents: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The γ = 5 histograms and contexts as Spark writes them, kept for the import tests."""
    out = tmp_path_factory.mktemp("spark-out")
    count_windows_spark(spark, str(latents), out, gamma=5, positional=False, shape=SHAPE)
    return out


@pytest.mark.parametrize("stage", BUILD_STAGES)
def test_an_import_killed_at_any_stage_leaves_one_whole_table(
    spark_files: Path, latents: Path, tmp_path: Path, stage: str
) -> None:
    store = tmp_path / "s.duckdb"
    with open_store(store) as con:
        old = build_table(con, next(iter_train_grids(latents, 100)), gamma=5)
        images = sum(len(g) for g in iter_train_grids(latents, 1000))
    kill_at_stage(IMPORT_SCRIPT, stage, str(store), str(spark_files), stage, str(images))
    with open_store(store, read_only=True) as con:
        tables = list_tables(con)
        assert len(tables) == 1
        served = tables[0]
        assert (served.table_id == old.table_id) == (stage != "committed")
        assert served.images == (images if stage == "committed" else old.images)
        assert con.execute("SELECT count(*) FROM ngrams").fetchall() == [(served.rows,)]
        assert NgramIndex.load(con, 5).info.table_id == served.table_id


def test_a_key_with_two_contexts_is_refused_and_the_old_table_stays(
    spark_files: Path, latents: Path, tmp_path: Path
) -> None:
    """The exact check of the 64-bit keys across files: a key written with two different
    contexts (as if two batches had collided) fails the import, which changes nothing."""
    import pyarrow as pa
    import pyarrow.parquet as pq

    contexts = pq.read_table(spark_files / "contexts")
    key = contexts.column("context_key")[0].as_py()
    twin = pa.table(
        {
            "context_key": pa.array([key], pa.int64()),
            "position": pa.nulls(1, pa.int32()),
            "context": pa.array([[7] * 12], pa.list_(pa.int32())),
        }
    )
    forged = tmp_path / "forged"
    shutil.copytree(spark_files, forged)
    pq.write_table(twin, forged / "contexts" / "twin.parquet")
    with open_store(tmp_path / "s.duckdb") as con:
        old = build_table(con, next(iter_train_grids(latents, 100)), gamma=5)
        with pytest.raises(RunError, match="64-bit key"):
            import_table(
                con,
                forged / "ngrams",
                forged / "contexts",
                TableShape(*SHAPE, SHA),
                images=1,
                gamma=5,
            )
        assert [t.table_id for t in list_tables(con)] == [old.table_id]


def _closed_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def test_a_master_that_does_not_answer_fails_at_once() -> None:
    started = time.monotonic()
    with pytest.raises(RunError, match=r"does not answer.*--engine duckdb"):
        check_spark_master(f"spark://127.0.0.1:{_closed_port()}", timeout=5)
    assert time.monotonic() - started < 6
    for bad in ("nowhere", "spark://", "mesos://host:5050", "spark://host:port"):
        with pytest.raises(InvalidInputError, match="spark-master"):
            check_spark_master(bad)
    check_spark_master("local[2]")


def test_missing_java_says_how_to_install_it(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("JAVA_HOME", str(tmp_path))  # a Java home without bin/java
    with pytest.raises(RunError, match="openjdk-17-jre-headless"):
        check_spark_installed()


def test_a_spark_that_does_not_start_says_why(tmp_path: Path) -> None:
    """py4j reports only that the Java gateway exited: the JVM's own reason is in the message.
    In a process of its own: here getOrCreate would hand back the module's running session."""
    script = textwrap.dedent(f"""
        from pathlib import Path
        from service.run.spark_build import spark_session
        with spark_session("local[0]", work_dir=Path({str(tmp_path / "spark")!r})):
            pass
    """)
    failed = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True)
    assert failed.returncode != 0
    assert re.search(
        r"RunError: Spark did not start on local\[0\].*the JVM said: .*0 threads", failed.stderr
    )
