"""Deployment files: the Compose files validate and say what docs/deploy.md says they do.

The validator is `docker compose` (v2) where installed, else Debian's `docker-compose` (1.29),
which `make setup` installs; neither needs a Docker daemon for `config`. Without either the tests
skip, except under CI (env CI set), where a missing install step must fail the run.
"""

from __future__ import annotations

import json
import os
import re
import shlex
import shutil
import subprocess
from pathlib import Path
from typing import Any

import pytest

from tests.helpers import latentgram

ROOT = Path(__file__).resolve().parent.parent
COMPOSE = ROOT / "docker-compose.yml"
COMPOSE_GPU = ROOT / "docker-compose.gpu.yml"
DOCKERFILE = ROOT / "Dockerfile"
DEPLOY_DOC = ROOT / "docs" / "deploy.md"

PREPARE = ["prepare", "--run", "/data/run"]
SERVE = ["serve", "--run", "/data/run", "--host", "0.0.0.0", "--port", "8000"]
VOLUME = "latentgram-data"
API_KEY = "test-key-not-a-secret"
CUDA_INDEX = "file:///srv/wheels/cuda"  # only rendered, never fetched
SPARK_SERVICES = ("spark-master", "spark-worker")
MASTER_URL = "spark://spark-master:7077"


def _validator() -> tuple[list[str], bool] | None:
    """The Compose command and whether it is v2 (which renders JSON itself)."""
    docker = shutil.which("docker")
    if docker:
        probe = subprocess.run([docker, "compose", "version"], capture_output=True, timeout=60)
        if probe.returncode == 0:
            return [docker, "compose"], True
    legacy = shutil.which("docker-compose")
    return ([legacy], False) if legacy else None


@pytest.fixture(scope="module")
def compose() -> tuple[list[str], bool]:
    found = _validator()
    if found is None:
        reason = (
            "no Compose validator: neither `docker compose` nor `docker-compose` is installed "
            "(`make setup` installs Debian's docker-compose)"
        )
        if os.environ.get("CI"):
            pytest.fail(f"{reason}; under CI it must be installed")
        pytest.skip(reason)
    return found


def _config(compose: tuple[list[str], bool], *files: Path, quiet: bool = False) -> str:
    command, v2 = compose
    args = [*command, *(arg for f in files for arg in ("-f", str(f))), "config"]
    if quiet:
        args.append("-q")
    elif v2:
        args += ["--format", "json"]
    env = {
        k: v for k, v in os.environ.items() if not k.startswith(("TORCH_", "LATENTGRAM_", "SPARK_"))
    }
    env.update(LATENTGRAM_API_KEY=API_KEY, TORCH_CUDA_INDEX_URL=CUDA_INDEX)
    done = subprocess.run(args, capture_output=True, text=True, cwd=ROOT, env=env, timeout=120)
    assert done.returncode == 0, f"{shlex.join(args)} rejected the file:\n{done.stderr}"
    return done.stdout


def _rendered(compose: tuple[list[str], bool], *files: Path) -> dict[str, Any]:
    """The merged, interpolated configuration as the validator resolves it."""
    text = _config(compose, *files)
    command, v2 = compose
    if v2:
        return json.loads(text)
    # docker-compose 1.x prints YAML only; its own interpreter has PyYAML (a dependency of it).
    shebang = Path(command[0]).read_text().splitlines()[0]
    assert shebang.startswith("#!"), f"{command[0]} is not a Python script"
    to_json = "import json, sys, yaml; json.dump(yaml.safe_load(sys.stdin), sys.stdout)"
    done = subprocess.run(
        [*shlex.split(shebang[2:]), "-c", to_json],
        input=text,
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert done.returncode == 0, done.stderr
    return json.loads(done.stdout)


def _mounts(service: dict[str, Any]) -> set[tuple[str, str]]:
    """(source, target) of each volume, from the short (v1) or long (v2) syntax."""
    mounts = set()
    for volume in service.get("volumes", []):
        if isinstance(volume, str):
            source, target = volume.split(":")[:2]
        else:
            source, target = volume["source"], volume["target"]
        mounts.add((source, target))
    return mounts


def _environment(service: dict[str, Any]) -> dict[str, str | None]:
    env = service.get("environment", {})
    if isinstance(env, list):
        env = dict(item.split("=", 1) if "=" in item else (item, None) for item in env)
    return env


@pytest.mark.parametrize(
    "files", [(COMPOSE,), (COMPOSE, COMPOSE_GPU)], ids=["compose", "compose+gpu"]
)
def test_compose_files_validate(compose: tuple[list[str], bool], files: tuple[Path, ...]) -> None:
    _config(compose, *files, quiet=True)


def test_compose_prepares_once_then_serves(compose: tuple[list[str], bool]) -> None:
    config = _rendered(compose, COMPOSE)
    services = config["services"]
    # Compose 1.29 renders every profile's services; only the `spark` profile's have one.
    assert set(services) == {"prepare", "api", *SPARK_SERVICES}
    assert {name for name, service in services.items() if "profiles" not in service} == {
        "prepare",
        "api",
    }
    prepare, api = services["prepare"], services["api"]

    assert prepare["command"] == PREPARE
    assert prepare["restart"] == "no"
    assert api["command"] == SERVE
    assert api["depends_on"]["prepare"]["condition"] == "service_completed_successfully"

    assert VOLUME in config["volumes"]
    assert (VOLUME, "/data") in _mounts(prepare) and (VOLUME, "/data") in _mounts(api)
    ports = [(str(p["published"]), int(p["target"])) for p in api["ports"]]
    assert ports == [("8000", 8000)]
    assert _environment(api)["LATENTGRAM_API_KEY"] == API_KEY  # passed through from the shell
    assert "/readyz" in " ".join(api["healthcheck"]["test"])


def test_spark_profile_is_a_cluster_that_prepare_can_build_on(
    compose: tuple[list[str], bool],
) -> None:
    """`--profile spark`: the official image as master, a worker that runs latentgram's window
    code (so latentgram's image, with the master's Spark version) over the same volume at the
    same path as `prepare`, whose build settings come from the shell."""
    services = _rendered(compose, COMPOSE)["services"]
    master, worker, prepare = (services[n] for n in (*SPARK_SERVICES, "prepare"))
    assert master["profiles"] == worker["profiles"] == ["spark"]
    assert master["image"] == "apache/spark:4.0.0"
    assert "org.apache.spark.deploy.master.Master" in master["command"]
    assert worker["entrypoint"] == ["spark-class"]
    assert worker["command"][:2] == ["org.apache.spark.deploy.worker.Worker", MASTER_URL]
    assert worker["build"]["args"]["SPARK_VERSION"] == "4.0.0"  # the master's version
    assert (VOLUME, "/data") in _mounts(worker) and (VOLUME, "/data") in _mounts(prepare)
    assert prepare["hostname"] == "prepare"  # the driver's address, as executors reach it
    env = _environment(prepare)
    assert {"LATENTGRAM_BUILD_ENGINE", "LATENTGRAM_BUILD_SPARK_MASTER"} <= set(env)
    dockerfile = DOCKERFILE.read_text()
    assert "${SPARK_VERSION:+openjdk-17-jre-headless" in dockerfile
    assert '${SPARK_VERSION:+"pyspark==${SPARK_VERSION}"}' in dockerfile
    doc = DEPLOY_DOC.read_text()
    for phrase in ("--profile spark", MASTER_URL, "LATENTGRAM_BUILD_ENGINE=spark", "s3a://"):
        assert phrase in doc


def test_gpu_override_reserves_nvidia_gpus(compose: tuple[list[str], bool]) -> None:
    services = _rendered(compose, COMPOSE, COMPOSE_GPU)["services"]
    for name in ("prepare", "api"):
        service = services[name]
        devices = service["deploy"]["resources"]["reservations"]["devices"]
        assert [(d["driver"], d["capabilities"]) for d in devices] == [("nvidia", ["gpu"])]
        assert service["build"]["args"]["TORCH_INDEX_URL"] == CUDA_INDEX
        assert service["image"] == "latentgram:gpu"
    assert services["api"]["command"] == SERVE  # the override changes hardware, not behaviour


def _help(*args: str) -> str:
    done = latentgram(*args, "--help", env={"COLUMNS": "200"})
    assert done.returncode == 0, f"latentgram {' '.join(args)} --help failed:\n{done.stderr}"
    return done.stdout


@pytest.mark.parametrize("command", [PREPARE, SERVE], ids=lambda c: c[0])
def test_compose_commands_exist_in_cli(command: list[str]) -> None:
    commands = _help().split("Commands", 1)[-1]
    listed = re.findall(r"^\W*([a-z][a-z0-9-]*)\s{2,}", commands, flags=re.MULTILINE)
    assert command[0] in listed, f"`latentgram {command[0]}` is not a command: {listed}"
    options = _help(command[0])
    for option in (arg for arg in command if arg.startswith("--")):
        assert option in options, f"`latentgram {command[0]}` has no {option}"


def test_deploy_doc_matches_compose() -> None:
    doc = DEPLOY_DOC.read_text()
    for command in (PREPARE, SERVE):
        assert f"latentgram {' '.join(command)}" in doc
    for phrase in ("docker compose up", VOLUME, "8000", "LATENTGRAM_API_KEY", COMPOSE_GPU.name):
        assert phrase in doc


def test_dockerfile_agrees_with_compose_and_makefile() -> None:
    dockerfile = DOCKERFILE.read_text()
    makefile = (ROOT / "Makefile").read_text()
    pin = re.search(r"^TORCH_VERSION \?= (\S+)$", makefile, flags=re.MULTILINE)
    assert pin and f"ARG TORCH_VERSION={pin.group(1)}\n" in dockerfile
    assert "\nEXPOSE 8000\n" in dockerfile
    assert "http://127.0.0.1:8000/healthz" in dockerfile
    assert '\nENTRYPOINT ["latentgram"]\n' in dockerfile
    assert f"\nCMD {json.dumps(SERVE)}\n" in dockerfile  # `docker run IMAGE` serves like compose
    assert re.search(r"^USER (?!root)\S+$", dockerfile, flags=re.MULTILINE)
