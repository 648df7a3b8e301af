"""`latentgram build`'s engine, memory limit and Spark master through the console entry point
(in this process: a subprocess per case would cost seconds of start-up each): refused settings
are one line and exit 2 and leave the served table as it was."""

from __future__ import annotations

import json
import os
import shutil
import socket
import subprocess
import time
from pathlib import Path

import numpy as np
import pytest

from service.data.parquet import write_latents
from service.files import file_sha256
from service.latents.bits import pack_bits
from service.latents.latent_set import LatentSet
from service.ngram.store import get_table, open_store
from service.ngram.tokens import tokens_to_bits
from service.run.paths import RunPaths
from tests.helpers import latentgram


def cli(*args: str, **env: str) -> subprocess.CompletedProcess[str]:
    """`latentgram ARGS` with LATENTGRAM_BUILD_* set to `env` alone: its status and output."""
    unset = {name: "" for name in os.environ if name.startswith("LATENTGRAM_BUILD_")}
    return latentgram(*args, env={**unset, **env})


@pytest.fixture(scope="module")
def run(tmp_path_factory: pytest.TempPathFactory) -> RunPaths:
    """A run holding latents of 300 random 4×4×4 grids and the BL-AE file they name (the build
    reads only its checksum), with its γ = 3 table built."""
    paths = RunPaths(tmp_path_factory.mktemp("build") / "run")
    paths.root.mkdir()
    paths.blae_weights.write_bytes(b"stands in for the BL-AE that encoded the latents")
    tokens = np.random.default_rng(3).integers(0, 16, (300, 4, 4))
    n = len(tokens)
    latents = LatentSet(
        np.arange(n),
        np.full(n, "train"),
        np.zeros(n, np.int64),
        pack_bits(tokens_to_bits(tokens, 4)),
        (4, 4, 4),
        file_sha256(paths.blae_weights),
    )
    write_latents(paths.latents, latents)
    done = cli("build", "--run", str(paths.root), "--gamma", "3")
    assert done.returncode == 0, done.stderr
    return paths


def served(paths: RunPaths) -> tuple[int, int, int]:
    with open_store(paths.store, read_only=True) as con:
        info = get_table(con, 3)
    return info.table_id, info.rows, info.contexts


def _closed_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


@pytest.mark.parametrize(
    "args,env,message",
    [
        (("--memory-limit", "lots"), {}, "--memory-limit: memory limit must be a size such as 4GB"),
        (("--memory-limit", "0"), {}, "memory limit must be a size such as 4GB"),
        (("--memory-limit", "0MB"), {}, "memory limit must be more than 0"),
        (("--memory-limit", "200%"), {}, "at most 100%"),
        ((), {"LATENTGRAM_BUILD_MEMORY_LIMIT": "4 gigs"}, "LATENTGRAM_BUILD_MEMORY_LIMIT: memory"),
        (("--engine", "hadoop"), {}, "--engine: Input should be 'duckdb'"),
        ((), {"LATENTGRAM_BUILD_ENGINE": "hadoop"}, "LATENTGRAM_BUILD_ENGINE: Input should be"),
        (("--engine", "spark", "--spark-master", "spark://127.0.0.1:PORT"), {}, "does not answer"),
        (("--engine", "spark", "--spark-master", "mesos://m:5050"), {}, "--spark-master must be"),
        (("--spark-master", "local[2]"), {}, "--spark-master is for --engine spark"),
    ],
)
def test_a_refused_setting_is_one_line_and_keeps_the_table(
    run: RunPaths, args: tuple[str, ...], env: dict[str, str], message: str
) -> None:
    before = served(run)
    args = tuple(a.replace("PORT", str(_closed_port())) for a in args)
    started = time.monotonic()
    done = cli("build", "--run", str(run.root), "--gamma", "3", *args, **env)
    assert done.returncode == 2 and message in done.stderr, done.stderr
    assert len(done.stderr.strip().splitlines()) == 1
    assert time.monotonic() - started < 60  # a dead master is not waited on for minutes
    assert served(run) == before
    assert not (run.root / "tmp").exists()


def test_a_memory_limit_from_the_option_or_the_environment_rebuilds_the_same_table(
    run: RunPaths,
) -> None:
    table_id, rows, contexts = served(run)
    for args, env in (
        (("--memory-limit", "64MB"), {}),
        ((), {"LATENTGRAM_BUILD_MEMORY_LIMIT": "1GiB"}),
    ):
        done = cli("build", "--run", str(run.root), "--gamma", "3", *args, **env)
        assert done.returncode == 0, done.stderr
        new_id, *figures = served(run)
        assert new_id > table_id and figures == [rows, contexts]
        table_id = new_id
    assert not (run.root / "tmp").exists()  # DuckDB's spill folder is removed after the build


def test_a_damaged_run_json_is_refused_before_the_store_is_touched(
    run: RunPaths, tmp_path: Path
) -> None:
    copy = RunPaths(tmp_path / "run")
    shutil.copytree(run.root, copy.root)
    before = served(copy)
    copy.run_json.write_text("{not json")
    done = cli("build", "--run", str(copy.root), "--gamma", "3")
    assert done.returncode == 2 and "is not valid JSON" in done.stderr, done.stderr
    assert served(copy) == before


def test_run_json_lists_every_table_served_after_a_build_of_some(
    run: RunPaths, tmp_path: Path
) -> None:
    """A build of one γ keeps the other tables, so run.json keeps describing them too."""
    copy = RunPaths(tmp_path / "run")
    shutil.copytree(run.root, copy.root)
    for gamma in ("5", "3"):
        done = cli("build", "--run", str(copy.root), "--gamma", gamma)
        assert done.returncode == 0, done.stderr
    recorded = json.loads(copy.run_json.read_text())["tables"]
    with open_store(copy.store, read_only=True) as con:
        for gamma in (3, 5):
            info = get_table(con, gamma)
            assert recorded[info.name] == {
                "contexts": info.contexts, "rows": info.rows, "seconds": info.build_seconds,
            }  # fmt: skip
