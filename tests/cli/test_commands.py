"""The console script as a user runs it: real subprocesses, real files, one step per test. Refused
commands, and a command's second run, go through the same entry point in this process
(tests.helpers.latentgram): each subprocess would spend seconds importing torch; one refusal
still goes through the installed script."""

import contextlib
import json
import os
import shutil
import socket
import subprocess
import sys
import textwrap
from collections.abc import Iterator
from pathlib import Path

import duckdb
import numpy as np
import pytest
from PIL import Image

from service.data.parquet import read_latents
from service.run.paths import RunPaths
from tests.helpers import latentgram, refusal_before_torch

LATENTGRAM = shutil.which("latentgram") or str(Path(sys.executable).parent / "latentgram")


def cli(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run([LATENTGRAM, *args], capture_output=True, text=True, timeout=300)


def test_help_explains_every_command() -> None:
    out = cli("--help").stdout
    for command in ("data", "train-ae", "encode", "decode", "prepare", "build", "sample", "tables"):
        assert command in out
    train_help = latentgram("train-ae", "--help").stdout
    for option in ("--preset", "--epochs", "--resume", "--precision", "--sigma", "--source"):
        assert option in train_help


def test_train_ae_takes_straight_through_training(tmp_path: Path, fashion_small) -> None:
    run = tmp_path / "run"
    done = latentgram(
        "train-ae", "--run", str(run), "--preset", "tiny", "--limit", "128", "--epochs", "1",
        "--straight-through", "--sigma", "0",
    )  # fmt: skip
    assert done.returncode == 0, done.stderr
    config = json.loads((run / "run.json").read_text())["blae"]["config"]
    assert config["straight_through"] is True and config["sigma"] == 0.0


@pytest.fixture(scope="module")
def prepared(tmp_path_factory: pytest.TempPathFactory, fashion_small) -> tuple[RunPaths, str]:
    """`latentgram prepare` on 128 images with the tiny preset: the run and what it printed."""
    run = tmp_path_factory.mktemp("cli") / "run"
    done = cli(
        "prepare", "--run", str(run), "--limit", "128", "--preset", "tiny", "--epochs", "1",
        "--arvm-max-epochs", "1",
    )  # fmt: skip
    assert done.returncode == 0, done.stderr
    return RunPaths(run), done.stdout


def test_prepare_builds_every_step_and_reports_it(prepared: tuple[RunPaths, str]) -> None:
    paths, out = prepared
    assert "run ready" in out and '"psnr_binary"' in out
    assert all(f'"g{g}": {{' in out.split('"arvms"')[1] for g in (3, 5, 7))
    assert paths.latents.exists() and paths.images.exists() and paths.blae_weights.exists()
    assert (paths.reports / "samples-g5.png").exists()


def test_the_memorizer_says_why_it_stopped(prepared: tuple[RunPaths, str]) -> None:
    paths = prepared[0]
    done = cli(
        "train-arvm", "--run", str(paths.root), "--gamma", "7", "--use", "memorizer",
        "--max-epochs", "2", "--hidden", "32",
    )  # fmt: skip
    assert done.returncode == 0, done.stderr
    summary = json.loads(done.stdout.split("\n", 1)[1])["g7"]
    assert summary["use"] == "memorizer" and summary["stopped"] in ("target", "budget")
    assert summary["epochs"] <= 2 and summary["contexts_per_s"] > 0
    metrics = paths.arvm_metrics(7).read_text().splitlines()
    assert len(metrics) == summary["epochs"] and all("contexts_per_s" in m for m in metrics)


def test_evaluate_writes_bits_per_token_for_every_model_and_gamma(
    prepared: tuple[RunPaths, str],
) -> None:
    paths = prepared[0]
    done = cli("evaluate", "--run", str(paths.root), "--images", "40")
    assert done.returncode == 0, done.stderr
    figures = json.loads((paths.reports / "likelihood.json").read_text())
    assert figures["gammas"] == [3, 5, 7] and figures["images"] == {"test": 40, "train": 40}
    for split in ("test", "train"):
        bits = figures["bits_per_token"][split]
        assert set(bits["ngram"]) == {"3", "5", "7"} and set(bits["interpolated"]) >= {"3", "5"}
        assert all(0 < v < 12 for v in bits["ngram"].values())  # C = 8 bits: below 8 + slack
    assert (paths.reports / "likelihood-vs-gamma.png").read_bytes()[:4] == b"\x89PNG"


def test_decode_to_a_grid_or_one_file_per_id(
    prepared: tuple[RunPaths, str], tmp_path: Path
) -> None:
    run = str(prepared[0].root)
    grid = cli("decode", "--run", run, "--limit", "16", "--out", str(tmp_path / "grid.png"))
    assert grid.returncode == 0, grid.stderr
    assert Image.open(tmp_path / "grid.png").size == (4 * 30 - 2, 4 * 30 - 2)
    files = latentgram("decode", "--run", run, "--ids", "3,5", "--out", str(tmp_path / "each"))
    assert files.returncode == 0, files.stderr
    assert sorted(p.name for p in (tmp_path / "each").iterdir()) == ["3.png", "5.png"]


def test_tables_lists_the_built_tables(prepared: tuple[RunPaths, str]) -> None:
    listed = cli("tables", "--run", str(prepared[0].root))
    assert listed.returncode == 0 and all(f"g{g} " in listed.stdout for g in (3, 5, 7))
    assert "index MiB" in listed.stdout


def test_a_gamma_without_its_table_is_refused_before_torch_loads(
    prepared: tuple[RunPaths, str], tmp_path: Path
) -> None:
    """A run whose only table is γ = 3: sampling or training at γ = 5 names what to build, and
    a γ wider than the grid says so, at once."""
    source, run = prepared[0], RunPaths(tmp_path / "run")
    run.root.mkdir()
    for path in (source.latents, source.blae_weights, source.blae_weights.with_suffix(".json")):
        shutil.copy(path, run.root / path.name)
    assert latentgram("build", "--run", str(run.root), "--gamma", "3").returncode == 0
    refusals = {
        ("sample", "--gamma", "5"): "no table g5 built for gamma=5; built: g3",
        ("train-arvm", "--gamma", "5"): "Run `latentgram build --gamma 5`",
        ("sample", "--gamma", "9", "--mode", "neural"): "wider than the global window of the 4×4",
    }
    for args, message in refusals.items():
        status, stderr, torch_loaded = refusal_before_torch(*args, "--run", str(run.root))
        assert message in stderr, stderr
        assert status == 2 and not torch_loaded


def test_global_gamma_samples_copy_training_latents_reproducibly(
    prepared: tuple[RunPaths, str], tmp_path: Path
) -> None:
    paths, out = prepared[0], tmp_path / "grid.png"
    args = ("sample", "--run", str(paths.root), "--gamma", "7", "-n", "9", "--seed", "1")
    drawn = cli(*args, "--out", str(out))
    assert drawn.returncode == 0, drawn.stderr
    assert '"ok": 9' in drawn.stdout and out.exists()
    sampled = read_latents(out.with_suffix(".parquet"))
    training = {bytes(p) for p in read_latents(paths.latents).packed}
    assert len(sampled) == 9 and all(bytes(p) in training for p in sampled.packed)  # γ=7 copies
    again = latentgram(*args, "--out", str(out))  # in this process: the seed alone decides
    assert again.returncode == 0
    np.testing.assert_array_equal(read_latents(out.with_suffix(".parquet")).packed, sampled.packed)


def test_migrate_status_shows_nothing_pending(prepared: tuple[RunPaths, str]) -> None:
    status = cli("migrate", "--run", str(prepared[0].root), "--status")
    assert status.returncode == 0 and '"pending": []' in status.stdout


@contextlib.contextmanager
def read_only_file(path: Path) -> Iterator[None]:
    """A file this process cannot write: mode 444, or immutable for root, who writes through
    modes (the test is skipped where neither can be had)."""
    if os.geteuid() != 0:
        path.chmod(0o444)
    elif subprocess.run(["chattr", "+i", str(path)], capture_output=True).returncode != 0:
        pytest.skip("cannot make a file read-only for root here (chattr +i)")
    try:
        yield
    finally:
        subprocess.run(["chattr", "-i", str(path)], capture_output=True)
        path.chmod(0o644)


def test_a_store_that_cannot_be_written_is_not_called_damaged(
    prepared: tuple[RunPaths, str], tmp_path: Path
) -> None:
    """Building into a read-only store says so (it once said to move the store away); migrating
    a store with nothing pending does not need to write it; a mistyped run is not created."""
    paths = RunPaths(tmp_path / "run")
    shutil.copytree(prepared[0].root, paths.root)
    with read_only_file(paths.store):
        build = latentgram("build", "--run", str(paths.root), "--gamma", "3")
        assert build.returncode == 2 and "cannot be written here" in build.stderr, build.stderr
        assert "reads fine" in build.stderr and "move it away" not in build.stderr
        migrate = latentgram("migrate", "--run", str(paths.root))
        assert migrate.returncode == 0 and '"applied_now": []' in migrate.stdout, migrate.stderr
    typo = tmp_path / "typo" / "run"
    missing = latentgram("migrate", "--run", str(typo))
    assert missing.returncode == 2 and "does not exist" in missing.stderr
    assert not typo.parent.exists()


def test_a_starved_search_writes_an_empty_result(
    prepared: tuple[RunPaths, str], tmp_path: Path
) -> None:
    starved = latentgram(
        "sample", "--run", str(prepared[0].root), "--gamma", "3", "--budget", "1", "-n", "4",
        "--out", str(tmp_path / "none.png"),
    )  # fmt: skip
    assert starved.returncode == 0 and '"ok": 0' in starved.stdout, starved.stderr
    assert len(read_latents(tmp_path / "none.parquet")) == 0


def test_hybrid_mode_finishes_every_sample(prepared: tuple[RunPaths, str], tmp_path: Path) -> None:
    run = str(prepared[0].root)
    hybrid = cli("sample", "--run", run, "--mode", "hybrid", "--out", str(tmp_path / "h.png"))
    assert hybrid.returncode == 0 and '"ok": 64' in hybrid.stdout, hybrid.stderr


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (("sample", "--out", "x.parquet"), "--out must be a .png"),
        (("sample", "--mode", "neural", "--positional"), "γ-ARVM"),
        (("sample", "--mode", "dream"), "mode must be one of exact, backoff, hybrid, neural"),
        (("train-ae", "--resume", "--preset", "default", "--limit", "128"), "cannot resume"),
        (("train-ae", "--kappa", "0", "--limit", "16"), "kappa > 0"),
        (("encode", "--device", "tpu"), "'--device': must be auto, cpu, cuda"),
        (("build", "--gamma", "4"), "odd window size"),
        (("build", "--gamma", "9"), "wider than the global window of the 4×4 grid"),
        (("train-ae", "--preset", "huge", "--limit", "16"), "choose one of"),
        (("ablate-sigma", "--noises", "uniform"), "noises must be among triangular, gaussian"),
        (("sample", "--gamma", "5", "--positional"), "no positional table g5p built"),
        (("sample", "--gamma", "9"), "wider than the global window of the 4×4 grid"),
        (("sample", "--temperature", "0"), "temperature must be in"),
        (("sample", "-n", "1000000"), "Invalid value for '-n'"),
        (("train-arvm", "--use", "dream"), "use must be one of fallback, memorizer"),
        (("train-arvm", "--max-epochs", "0"), "Invalid value for '--max-epochs'"),
        (("train-arvm", "--max-seconds", "-1"), "Invalid value for '--max-seconds'"),
        (("evaluate", "--images", "0"), "Invalid value for '--images'"),
        (("evaluate", "--bogus"), "No such option: --bogus"),
        (("train-ae", "--sigma", "nan", "--limit", "16"), "need finite sigma"),
        (("train-arvm", "--lr", "inf"), "must be a finite number > 0"),
        (("ablate-sigma", "--sigmas", "0.5,nan"), "sigmas must be finite"),
        (("serve", "--log-level", "loud"), "--log-level must be one of critical"),
        (("decode", "--latents", "/no/such.parquet", "--out", "d.png"), "--latents /no/such"),
        (("decode", "--ids", "", "--out", "d.png"), "--ids is empty"),
    ],
)
def test_refused_commands_say_why_and_change_nothing(
    prepared: tuple[RunPaths, str], args: tuple[str, ...], message: str
) -> None:
    paths = prepared[0]
    recorded = paths.run_json.read_text()
    bad = latentgram(*args, "--run", str(paths.root))
    assert bad.returncode == 2 and message in bad.stderr, bad.stderr
    assert len(bad.stderr.strip().splitlines()) == 1
    assert paths.run_json.read_text() == recorded


@pytest.mark.parametrize(
    "args,message",
    [
        (("data", "--source", "idx:/no/such/folder"), "no such file or folder"),
        (("data", "--source", "mnist"), "fashion-mnist, idx:PATH"),
        (("data", "--classes", "1,x"), "comma-separated integers"),
        (("encode", "--run", "/no/such/run"), "does not exist"),
        (("train-ae", "--precision", "fp8", "--run", "/tmp/x"), "precision must be one of"),
        (("train-ae", "--preset", "huge", "--run", "/tmp/x"), "unknown BL-AE preset"),
        (("report", "--modes", "exact,backoff"), "modes must be among exact, hybrid, neural"),
        (("report", "--run", "/no/such/run", "--gamma", "4"), "odd window size"),
        (("sample", "--seed", "-1"), "Invalid value for '--seed'"),
        (("data", "--preview", "/"), "--preview / is a folder"),
        (
            ("sample", "--run", "/no/such/run"),
            "run directory /no/such/run does not exist",
        ),  # the API's range: 0 … 2^53 − 1
        (("report", "--seed", str(2**53)), "Invalid value for '--seed'"),
        (("train-ae", "--seed", str(2**63)), "Invalid value for '--seed'"),  # was a traceback
        (("train-arvm", "--seed", "-1"), "Invalid value for '--seed'"),
        (("report", "--modes", "dream"), "modes must be among exact, hybrid, neural, got dream"),
        (  # a folder that holds no run: the file is refused before the run is loaded
            ("report", "--run", "/", "--inception", "/no/such/inception.pt"),
            "no Inception weights file at /no/such/inception.pt",
        ),
    ],
)
def test_bad_input_is_one_line_and_exit_2(args: tuple[str, ...], message: str) -> None:
    result = latentgram(*args)
    assert result.returncode == 2
    assert message in result.stderr
    assert "Traceback" not in result.stderr
    assert len(result.stderr.strip().splitlines()) == 1


def test_damaged_files_and_paths_that_cannot_be_used_are_one_line(
    prepared: tuple[RunPaths, str], tmp_path: Path
) -> None:
    paths = prepared[0]
    cut = RunPaths(tmp_path / "cut")
    cut.root.mkdir()
    store = paths.store.read_bytes()
    cut.store.write_bytes(store[: len(store) // 2])
    newer = RunPaths(tmp_path / "newer")
    newer.root.mkdir()
    newer.store.write_bytes(store)
    with duckdb.connect(str(newer.store)) as con:
        con.execute("INSERT INTO schema_version (version, name) VALUES (99, '0099_future.sql')")
    taken = tmp_path / "taken.png"
    taken.mkdir()
    run = str(paths.root)
    with socket.socket() as busy:
        busy.bind(("127.0.0.1", 0))
        busy.listen()
        port = str(busy.getsockname()[1])
        cases = {
            ("tables", "--run", str(cut.root)): "DuckDB failed: IO Error: Could not read",
            ("tables", "--run", str(newer.root)): "newer than this latentgram's",
            ("migrate", "--run", str(newer.root)): "newer than this latentgram's",
            (
                "decode",
                "--run",
                run,
                "--latents",
                str(paths.images),
                "--out",
                str(taken),
            ): "is not a latents file",
            ("sample", "--run", run, "-n", "2", "--out", str(taken)): "is a folder",
            ("sample", "--run", run, "--out", str(paths.store / "x.png")): "folder cannot be made",
            ("serve", "--run", run, "--port", port): "cannot listen on 127.0.0.1",
            ("migrate", "--run", str(paths.store)): "is a file, not a directory",
            ("train-ae", "--run", str(paths.store), "--limit", "16"): "is a file, not a directory",
        }
        for args, message in cases.items():
            bad = latentgram(*args)
            assert bad.returncode == 2 and message in bad.stderr, (args, bad.stderr)
            assert len(bad.stderr.strip().splitlines()) == 1, bad.stderr


def test_the_installed_script_refuses_in_one_line_with_exit_2() -> None:
    result = cli("train-ae", "--precision", "fp8", "--run", "/tmp/x")
    assert result.returncode == 2 and "precision must be one of" in result.stderr
    assert len(result.stderr.strip().splitlines()) == 1


def test_data_summary_of_real_source(tmp_path: Path, fashion_small) -> None:
    result = cli("data", "--limit", "10", "--preview", str(tmp_path / "p.png"))
    assert result.returncode == 0, result.stderr
    assert '"train": 10' in result.stdout and "Ankle boot" in result.stdout
    assert (tmp_path / "p.png").exists()


def test_ctrl_c_says_interrupted_and_exits_130() -> None:
    """typer turns Ctrl-C into exit code 130 and says nothing; the command line says so."""
    script = textwrap.dedent("""
        import sys
        from service.cli.app import app, main

        @app.command("stopped")
        def stopped() -> None:
            raise KeyboardInterrupt  # what Ctrl-C raises in a running command

        sys.argv = ["latentgram", "stopped"]
        main()
    """)
    result = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True)
    assert result.returncode == 130 and result.stderr.strip() == "latentgram: interrupted"
