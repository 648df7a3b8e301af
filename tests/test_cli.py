"""The console script as a user runs it: real subprocesses, real files."""

import shutil
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from service.parquet_io import read_latents
from service.run import RunPaths

LATENTGRAM = shutil.which("latentgram") or str(Path(sys.executable).parent / "latentgram")


def cli(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run([LATENTGRAM, *args], capture_output=True, text=True, timeout=300)


def test_help_explains_every_command() -> None:
    out = cli("--help").stdout
    for command in ("data", "train-ae", "encode", "decode", "prepare", "build", "sample", "tables"):
        assert command in out
    train_help = cli("train-ae", "--help").stdout
    for option in ("--preset", "--epochs", "--resume", "--precision", "--sigma", "--source"):
        assert option in train_help


def test_prepare_then_decode(tmp_path: Path, fashion_small) -> None:
    run = tmp_path / "run"
    done = cli(
        "prepare", "--run", str(run), "--limit", "128", "--preset", "tiny", "--epochs", "1",
        "--arvm-hidden", "32",
    )  # fmt: skip
    assert done.returncode == 0, done.stderr
    assert "run ready" in done.stdout and '"psnr_binary"' in done.stdout
    assert all(f'"g{g}": {{' in done.stdout.split('"arvms"')[1] for g in (3, 5, 7))
    paths = RunPaths(run)
    assert paths.latents.exists() and paths.images.exists() and paths.blae_weights.exists()
    grid = cli("decode", "--run", str(run), "--limit", "16", "--out", str(tmp_path / "grid.png"))
    assert grid.returncode == 0, grid.stderr
    assert Image.open(tmp_path / "grid.png").size == (4 * 30 - 2, 4 * 30 - 2)
    files = cli("decode", "--run", str(run), "--ids", "3,5", "--out", str(tmp_path / "each"))
    assert files.returncode == 0, files.stderr
    assert sorted(p.name for p in (tmp_path / "each").iterdir()) == ["3.png", "5.png"]

    # prepare built the default tables and a sample sheet
    assert (paths.reports / "samples-g5.png").exists()
    listed = cli("tables", "--run", str(run))
    assert listed.returncode == 0 and all(f"g{g} " in listed.stdout for g in (3, 5, 7))
    assert "index MiB" in listed.stdout
    out = tmp_path / "grid.png"
    drawn = cli(
        "sample", "--run", str(run), "--gamma", "7", "-n", "9", "--seed", "1", "--out", str(out)
    )
    assert drawn.returncode == 0, drawn.stderr
    assert '"ok": 9' in drawn.stdout and out.exists()
    sampled = read_latents(out.with_suffix(".parquet"))
    training = {bytes(p) for p in read_latents(paths.latents).packed}
    assert len(sampled) == 9 and all(bytes(p) in training for p in sampled.packed)  # γ=7 copies
    again = cli(
        "sample", "--run", str(run), "--gamma", "7", "-n", "9", "--seed", "1", "--out", str(out)
    )
    assert again.returncode == 0
    np.testing.assert_array_equal(read_latents(out.with_suffix(".parquet")).packed, sampled.packed)
    status = cli("migrate", "--run", str(run), "--status")
    assert status.returncode == 0 and '"pending": []' in status.stdout

    starved = cli(
        "sample",
        "--run",
        str(run),
        "--gamma",
        "3",
        "--budget",
        "1",
        "-n",
        "4",
        "--out",
        str(tmp_path / "none.png"),
    )
    assert starved.returncode == 0 and '"ok": 0' in starved.stdout, starved.stderr
    assert len(read_latents(tmp_path / "none.parquet")) == 0

    hybrid = cli("sample", "--run", str(run), "--mode", "hybrid", "--out", str(tmp_path / "h.png"))
    assert hybrid.returncode == 0 and '"ok": 64' in hybrid.stdout, hybrid.stderr

    recorded = paths.run_json.read_text()
    for args, message in [
        (("sample", "--out", str(tmp_path / "x.parquet")), "--out must be a .png"),
        (("sample", "--mode", "neural", "--positional"), "no γ-ARVM"),
        (("train-ae", "--resume", "--preset", "default", "--limit", "128"), "cannot resume"),
        (("train-ae", "--kappa", "0", "--limit", "16"), "kappa > 0"),
        (("encode", "--device", "tpu"), "cannot use device"),
        (("build", "--gamma", "4"), "odd window size"),
        (("sample", "--gamma", "9"), "no table built for gamma=9"),
        (("sample", "--temperature", "0"), "temperature must be in"),
    ]:
        bad = cli(*args, "--run", str(run))
        assert bad.returncode == 2 and message in bad.stderr, bad.stderr
    assert paths.run_json.read_text() == recorded  # refused commands change nothing


@pytest.mark.parametrize(
    "args,message",
    [
        (("data", "--source", "idx:/no/such/folder"), "no such file or folder"),
        (("data", "--source", "mnist"), "fashion-mnist, idx:PATH"),
        (("data", "--classes", "1,x"), "comma-separated integers"),
        (("encode", "--run", "/no/such/run"), "train-ae"),
        (("train-ae", "--precision", "fp8", "--run", "/tmp/x"), "precision must be one of"),
        (("train-ae", "--preset", "huge", "--run", "/tmp/x"), "unknown BL-AE preset"),
    ],
)
def test_bad_input_is_one_line_and_exit_2(args: tuple[str, ...], message: str) -> None:
    result = cli(*args)
    assert result.returncode == 2
    assert message in result.stderr
    assert "Traceback" not in result.stderr
    assert len(result.stderr.strip().splitlines()) == 1


def test_data_summary_of_real_source(tmp_path: Path, fashion_small) -> None:
    result = cli("data", "--limit", "10", "--preview", str(tmp_path / "p.png"))
    assert result.returncode == 0, result.stderr
    assert '"train": 10' in result.stdout and "Ankle boot" in result.stdout
    assert (tmp_path / "p.png").exists()
