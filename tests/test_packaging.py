"""latentgram as a user installs it: a wheel built from this tree, in a fresh virtual environment,
run from another directory, migrates a store, builds tables and serves them."""

from __future__ import annotations

import shutil
import subprocess
import sys
import sysconfig
import venv
import zipfile
from pathlib import Path

import httpx
import pytest

from service.ngram.migrations import discover
from service.run.paths import RunPaths
from tests.live_server import start_server, wait_ready

ROOT = Path(__file__).resolve().parents[1]
SOURCES = ("pyproject.toml", "README.md", "service", "models", "migrations")  # as .dockerignore


@pytest.fixture(scope="module")
def installed(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The python of a new virtual environment holding only the wheel; its dependencies come
    from this environment's site-packages through a .pth file (no download)."""
    tmp = tmp_path_factory.mktemp("wheel")
    source, dist = tmp / "source", tmp / "dist"
    source.mkdir()
    for name in SOURCES:  # a copy: setuptools writes build/ and *.egg-info beside the source
        if (ROOT / name).is_dir():
            shutil.copytree(ROOT / name, source / name, symlinks=True)  # keeps service/migrations
        else:
            shutil.copy2(ROOT / name, source / name)
    subprocess.run(
        [sys.executable, "-m", "pip", "wheel", "--no-deps", "--no-build-isolation", "-q",
         "-w", str(dist), str(source)],
        check=True, capture_output=True, cwd=tmp,
    )  # fmt: skip
    (wheel,) = dist.glob("latentgram-*.whl")
    names = zipfile.ZipFile(wheel).namelist()
    assert "service/migrations/0001_ngram_store.sql" in names
    env_dir = tmp / "venv"
    venv.create(env_dir, with_pip=False)
    python = env_dir / "bin" / "python"
    subprocess.run(
        [sys.executable, "-m", "pip", "--python", str(python), "install", "-q", "--no-deps",
         "--no-index", str(wheel)],
        check=True, capture_output=True,
    )  # fmt: skip
    purelib = subprocess.run(
        [python, "-c", "import sysconfig; print(sysconfig.get_path('purelib'))"],
        check=True, capture_output=True, text=True,
    ).stdout.strip()  # fmt: skip
    (Path(purelib) / "dependencies.pth").write_text(sysconfig.get_path("purelib") + "\n")
    return python


def test_the_installed_package_is_the_wheel_not_this_tree(installed: Path, tmp_path: Path) -> None:
    found = subprocess.run(
        [installed, "-c", "import service; print(service.__file__)"],
        capture_output=True, text=True, cwd=tmp_path, check=True,
    ).stdout  # fmt: skip
    assert str(installed.parents[1]) in found and str(ROOT) not in found


def test_installed_latentgram_migrates_builds_and_serves(
    installed: Path, tiny_run: RunPaths, tmp_path: Path
) -> None:
    run = RunPaths(tmp_path / "run")
    shutil.copytree(tiny_run.root, run.root, ignore=shutil.ignore_patterns("store.duckdb*"))
    elsewhere = tmp_path / "elsewhere"
    elsewhere.mkdir()
    latentgram = installed.parent / "latentgram"
    for args in (["migrate"], ["build", "--gamma", "3,5"], ["migrate", "--status"]):
        done = subprocess.run(
            [latentgram, *args, "--run", str(run.root)],
            capture_output=True, text=True, cwd=elsewhere,
        )  # fmt: skip
        assert done.returncode == 0, done.stderr
    latest = max(m.version for m in discover())  # every shipped migration, from the wheel
    assert '"pending": []' in done.stdout and f'"current": {latest}' in done.stdout
    for server in start_server(run, python=str(installed), cwd=elsewhere):
        wait_ready(server)
        info = httpx.get(f"{server.url}/v1/info").json()
        assert [t["gamma"] for t in info["tables"]] == [3, 5]
        sampled = httpx.post(f"{server.url}/v1/sample", json={"n": 4, "gamma": 5}, timeout=60)
        assert sampled.status_code == 200 and sampled.json()["finished"] == 4
