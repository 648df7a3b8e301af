"""The γ table build on Apache Spark (DESIGN.md §10), for corpora beyond one machine.

Spark reads latents.parquet and counts each Arrow batch of whole images with the DuckDB build's
own code (`mapInArrow` over build.build_input, so the window definition, the keys, the counts and
the exact key check are the DuckDB build's), merges the batches' histograms with the same
GROUP BY (counts and images summed, the smallest example image id), and writes the histograms
and the distinct contexts as Parquet in a staging folder. The store then
imports those files with build.commit_table: same catalogue row, same staging id, one visible
switch at COMMIT.

pyspark is imported only here, and only when a Spark build starts: it is an optional extra
(`pip install -e '.[spark]'`), and it needs Java 17.
"""

from __future__ import annotations

import contextlib
import logging
import os
import re
import shutil
import socket
import sys
import time
import uuid
import warnings
from collections.abc import Iterator
from dataclasses import dataclass
from functools import partial
from pathlib import Path
from typing import TYPE_CHECKING, Any
from urllib.parse import urlsplit

import duckdb
import pyarrow as pa

from service.data.latent_batches import (
    LATENT_COLUMNS,
    count_train_images,
    read_latents_header,
    train_grids,
)
from service.errors import InvalidInputError, RunError, first_line
from service.ngram.build import (
    StageHook,
    TableShape,
    counted_chunk,
    images_per_chunk,
    import_table,
    in_chunks,
    windows_per_chunk,
)
from service.ngram.merge import context_batch, histogram_batch
from service.ngram.store import TableInfo, table_name
from service.ngram.tokens import TokenGrids
from service.ngram.windows import check_gamma

if TYPE_CHECKING:
    from pyspark.sql import SparkSession

log = logging.getLogger(__name__)

DEFAULT_MASTER = "local[*]"
MASTER_TIMEOUT_S = 10.0  # how long a master URL may take to answer before the build gives up
INSTALL_PYSPARK = "install it with `pip install -e '.[spark]'` (`make setup` does)"
INSTALL_JAVA = (
    "install Java 17 (Debian: `apt-get install openjdk-17-jre-headless`, which `make setup`"
    " does) or set JAVA_HOME"
)
HISTOGRAM_SCHEMA = "context_key long, token int, count long, images long, example_image long"
CONTEXT_SCHEMA = "context_key long, position int, context array<int>"
# Spark's own log at ERROR only: a build prints its figures, not Spark's chatter. The logger of
# Spark's shells is set too, or Spark announces on start-up that it lowered the level to WARN.
_LOG4J2 = """\
rootLogger.level = error
rootLogger.appenderRef.stderr.ref = stderr
logger.repl.name = org.apache.spark.repl.Main
logger.repl.level = error
appender.console.type = Console
appender.console.name = stderr
appender.console.target = SYSTEM_ERR
appender.console.layout.type = PatternLayout
appender.console.layout.pattern = spark %p %c{1}: %m%n
"""
_PANDAS_WARNING = "PySpark does not yet fully support pandas"
_LOCAL = re.compile(r"local(\[(\*|\d+)(,\d+)?\])?|local-cluster\[\d+,\d+,\d+\]")


def check_spark_master(master: str, timeout: float = MASTER_TIMEOUT_S) -> None:
    """InvalidInputError for a master URL Spark cannot take; RunError when a standalone or
    Kubernetes master does not answer within `timeout` seconds (Spark itself would retry for
    minutes)."""
    if _LOCAL.fullmatch(master) or master == "yarn":
        return
    scheme, _, rest = master.partition("://")
    if scheme == "spark" and rest:
        hosts = [urlsplit(f"//{h}") for h in rest.split(",")]
    elif scheme == "k8s" and rest:
        hosts = [urlsplit(rest if "://" in rest else f"https://{rest}")]
    else:
        raise InvalidInputError(
            f"--spark-master must be local[*], local[N], spark://HOST:PORT, yarn or"
            f" k8s://https://HOST:PORT, got {master!r}"
        )
    problems = []
    for host in hosts:
        try:
            port = host.port or (7077 if scheme == "spark" else 443)
        except ValueError:
            raise InvalidInputError(f"--spark-master has a bad port: {master!r}") from None
        if not host.hostname:
            raise InvalidInputError(f"--spark-master names no host: {master!r}")
        try:
            with socket.create_connection((host.hostname, port), timeout=timeout):
                return
        except OSError as exc:
            problems.append(f"{host.hostname}:{port}: {exc.strerror or exc}")
    raise RunError(
        f"Spark master {master} does not answer ({'; '.join(problems)}): start it, or build"
        " with --engine duckdb"
    )


def check_spark_installed() -> None:
    """RunError, saying how to install them, when pyspark or Java is missing."""
    try:
        import pyspark  # noqa: F401
    except ImportError:
        raise RunError(f"the Spark engine needs pyspark: {INSTALL_PYSPARK}") from None
    java_home = os.environ.get("JAVA_HOME")
    java = Path(java_home, "bin", "java") if java_home else shutil.which("java")
    if java is None or not Path(java).exists():
        raise RunError(f"the Spark engine needs Java, and there is none: {INSTALL_JAVA}")


@contextlib.contextmanager
def spark_session(
    master: str = DEFAULT_MASTER, *, work_dir: Path, config: dict[str, str] | None = None
) -> Iterator[SparkSession]:
    """A quiet Spark session (no UI, Spark's log at ERROR), always stopped on the way out.

    work_dir holds its log configuration and, on local masters, its shuffle files. On a
    cluster, executors run this code too: latentgram must be installed on them.
    """
    check_spark_master(master)
    check_spark_installed()
    from pyspark.sql import SparkSession

    work_dir.mkdir(parents=True, exist_ok=True)
    log_config = work_dir / "log4j2.properties"
    log_config.write_text(_LOG4J2)
    java_options = f"-Dlog4j2.configurationFile=file:{log_config.resolve()}"
    # Python workers must import this project: on this machine, the interpreter running it.
    os.environ.setdefault("PYSPARK_PYTHON", sys.executable)
    builder = (
        SparkSession.builder.master(master)
        .appName("latentgram-build")
        .config("spark.ui.enabled", "false")
        .config("spark.ui.showConsoleProgress", "false")
        .config("spark.driver.extraJavaOptions", java_options)
        .config("spark.executor.extraJavaOptions", java_options)
        .config("spark.sql.adaptive.enabled", "true")
    )
    if _LOCAL.fullmatch(master):
        builder = builder.config("spark.local.dir", str(work_dir.resolve()))
        builder = builder.config("spark.sql.shuffle.partitions", "8")  # not 200 tiny tasks
    for key, value in (config or {}).items():
        builder = builder.config(key, value)
    jvm_log = work_dir / "jvm.log"
    try:
        with _jvm_output_to(jvm_log), warnings.catch_warnings():
            warnings.filterwarnings("ignore", _PANDAS_WARNING, FutureWarning)
            spark = builder.getOrCreate()
    except Exception as exc:  # py4j and pyspark raise their own types; the first line says it
        said = _jvm_reason(jvm_log)
        raise RunError(
            f"Spark did not start on {master}: {first_line(exc)}"
            + (f" (the JVM said: {said})" if said else "")
        ) from None
    try:
        spark.sparkContext.setLogLevel("ERROR")
        yield spark
    finally:
        spark.stop()


def _jvm_reason(log: Path) -> str:
    """The last exception or error line the JVM wrote while starting: py4j reports only that
    the gateway exited, and the log goes with the build's scratch folder."""
    try:
        lines = log.read_text(errors="replace").splitlines()
    except OSError:
        return ""
    causes = [line.strip() for line in lines if re.search(r"Exception|Error", line)]
    causes = [line for line in causes if not line.startswith("at ")]
    return causes[-1][:400] if causes else ""


@contextlib.contextmanager
def _jvm_output_to(path: Path) -> Iterator[None]:
    """Point this process's stdout and stderr at `path` while Spark starts its JVM, which
    inherits them: Java's own start-up notices (incubator modules) land there instead of the
    terminal. Spark's log lines (ERROR only) and failures reach the build as exceptions."""
    sys.stdout.flush()
    sys.stderr.flush()
    saved = [os.dup(1), os.dup(2)]
    try:
        with open(path, "ab") as sink:
            os.dup2(sink.fileno(), 1)
            os.dup2(sink.fileno(), 2)
        yield
    finally:
        for fd, copy in zip((1, 2), saved, strict=True):
            os.dup2(copy, fd)
            os.close(copy)


@dataclass(frozen=True)
class SparkOutput:
    """What a Spark build leaves for the store to import."""

    histograms: Path  # folder of Parquet: context_key, token, count, images, example_image
    contexts: Path  # folder of Parquet: context_key, position, context (distinct)
    seconds: float


def _histogram_batches(
    batches: Iterator[pa.RecordBatch], gamma: int, positional: bool, shape: tuple[int, int, int]
) -> Iterator[pa.RecordBatch]:
    """mapInArrow: latents rows → their histogram rows, as a chunk of the DuckDB build's."""
    for chunk in _grid_chunks(batches, shape, gamma):
        yield histogram_batch(counted_chunk(chunk, gamma, positional).rows)


def _context_batches(
    batches: Iterator[pa.RecordBatch], gamma: int, positional: bool, shape: tuple[int, int, int]
) -> Iterator[pa.RecordBatch]:
    """mapInArrow: latents rows → the distinct contexts of their windows, keys checked. Spark
    has no unsigned integers: the tokens (< 2^17) travel as int32."""
    for chunk in _grid_chunks(batches, shape, gamma):
        counted = counted_chunk(chunk, gamma, positional)
        contexts = context_batch(
            counted.context_keys, counted.context_positions, counted.context_tokens
        )
        tokens = contexts.column("context").cast(pa.list_(pa.int32()))
        yield contexts.set_column(2, "context", tokens)


def _grid_chunks(
    batches: Iterator[pa.RecordBatch], shape: tuple[int, int, int], gamma: int
) -> Iterator[TokenGrids]:
    """The training grids of Arrow batches of latents rows, in non-empty chunks of the size the
    DuckDB build would use for this γ alone."""
    per_chunk = images_per_chunk(*shape[1:], windows_per_chunk((gamma,)))
    for batch in batches:
        for chunk in in_chunks(train_grids(batch, shape), per_chunk):
            if len(chunk):
                yield chunk


def count_windows_spark(
    spark: SparkSession,
    latents: str,
    out: Path,
    *,
    gamma: int,
    positional: bool,
    shape: tuple[int, int, int],
) -> SparkOutput:
    """Run the build's GROUP BY on Spark over latents.parquet (a path or URL the executors can
    read) and write its histograms and distinct contexts as Parquet under `out`."""
    from pyspark.sql import functions as F

    started = time.perf_counter()
    args: dict[str, Any] = {"gamma": gamma, "positional": positional, "shape": shape}
    rows = spark.read.parquet(latents).select(*LATENT_COLUMNS)
    with warnings.catch_warnings():  # pyspark warns about pandas 3, which the build never uses
        warnings.filterwarnings("ignore", _PANDAS_WARNING, FutureWarning)
        chunks = rows.mapInArrow(partial(_histogram_batches, **args), HISTOGRAM_SCHEMA)
        contexts = rows.mapInArrow(partial(_context_batches, **args), CONTEXT_SCHEMA)
    histograms = chunks.groupBy("context_key", "token").agg(  # as ngram/merge.py merges
        F.sum("count").alias("count"),
        F.sum("images").alias("images"),
        F.min("example_image").alias("example_image"),
    )
    try:
        histograms.write.mode("overwrite").parquet(str(out / "ngrams"))
        contexts.distinct().write.mode("overwrite").parquet(str(out / "contexts"))
    except Exception as exc:  # a failed job raises py4j's or pyspark's types, pages long
        raise RunError(f"the Spark build of γ = {gamma} failed: {first_line(exc)}") from None
    return SparkOutput(out / "ngrams", out / "contexts", time.perf_counter() - started)


def build_table_spark(
    con: duckdb.DuckDBPyConnection,
    spark: SparkSession,
    latents: Path,
    staging: Path,
    *,
    gamma: int,
    positional: bool = False,
    run: str = "",
    on_stage: StageHook | None = None,
) -> TableInfo:
    """build.build_table on Spark: the same table, its histograms counted by Spark into
    Parquet under `staging` (a folder the executors can write and this process can read),
    then imported into the store atomically. The staging files are removed afterwards."""
    check_gamma(gamma)
    header = read_latents_header(latents)
    c, h, w = header.shape
    out = staging / f"spark-{table_name(gamma, positional)}-{uuid.uuid4().hex[:12]}"
    started = time.perf_counter()
    try:
        counted = count_windows_spark(
            spark,
            str(latents.resolve()),
            out.resolve(),
            gamma=gamma,
            positional=positional,
            shape=header.shape,
        )
        return import_table(
            con,
            counted.histograms,
            counted.contexts,
            TableShape(c, h, w, header.model_sha256),
            images=count_train_images(latents),
            gamma=gamma,
            positional=positional,
            run=run,
            on_stage=on_stage,
            started=started,
        )
    finally:
        shutil.rmtree(out, ignore_errors=True)
