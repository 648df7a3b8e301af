"""The code's layout holds: which package may import what, and functions that read in one sitting
(DESIGN.md §9, README.md "Code map")."""

from __future__ import annotations

import ast
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest

from service.cli.app import has_gpu_device_files
from tests.helpers import refusal_before_torch

ROOT = Path(__file__).resolve().parents[1]
MAX_FUNCTION_LINES = 60


def modules(package: str) -> Iterator[tuple[Path, ast.Module]]:
    for path in sorted((ROOT / package).rglob("*.py")):
        yield path, ast.parse(path.read_text(), filename=str(path))


def imported(tree: ast.Module) -> set[str]:
    """Every module a file imports, by its full dotted name."""
    names: set[str] = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            names.update(alias.name for alias in node.names)
        elif isinstance(node, ast.ImportFrom) and node.module and not node.level:
            names.add(node.module)
    return names


def offending(
    package: str, allowed: tuple[str, ...] = (), banned: tuple[str, ...] = ()
) -> list[str]:
    """Imports of `package`'s files outside `allowed` (when given) or inside `banned`."""
    found = []
    for path, tree in modules(package):
        for name in sorted(imported(tree)):
            top = name.split(".")[0]
            outside = allowed and top not in allowed and not _stdlib(top)
            if outside or any(name == b or name.startswith(b + ".") for b in banned):
                found.append(f"{path.relative_to(ROOT)} imports {name}")
    return found


def _stdlib(top: str) -> bool:
    return top in sys.stdlib_module_names or top == "__future__"


def test_models_import_only_torch_and_numpy() -> None:
    assert offending("models", allowed=("torch", "numpy", "models")) == []


def test_only_the_api_imports_the_web_framework() -> None:
    web = ("fastapi", "starlette", "pydantic_settings")
    # service/settings.py: the build's settings, read from the environment as the service's are
    outside_api = [
        line
        for line in offending("service", banned=web)
        if not line.startswith(("service/api/", "service/settings.py imports pydantic_settings"))
    ]
    assert outside_api == []


def test_the_ngram_engine_knows_no_file_formats_and_no_later_stage() -> None:
    later = ("service.data", "service.latents", "service.run", "service.training")
    later += ("service.evaluation", "service.api", "service.cli", "pyarrow.parquet", "PIL")
    assert offending("service/ngram", banned=later) == []


@pytest.mark.parametrize("package", ["service", "models"])
def test_functions_read_in_one_sitting(package: str) -> None:
    """No function over MAX_FUNCTION_LINES lines; typer commands (their options are one
    declaration each) are the exception."""
    long = []
    for path, tree in modules(package):
        for node in ast.walk(tree):
            if not isinstance(node, ast.FunctionDef | ast.AsyncFunctionDef):
                continue
            lines = (node.end_lineno or node.lineno) - node.lineno + 1
            command = any("command" in ast.unparse(d) for d in node.decorator_list)
            if lines > MAX_FUNCTION_LINES and not command:
                long.append(f"{path.relative_to(ROOT)}:{node.lineno} {node.name} ({lines} lines)")
    assert long == []


def test_the_command_line_and_the_build_start_without_torch() -> None:
    """Importing torch takes seconds: `latentgram --help`, `build` and the refusals of bad input
    must not pay for it (the commands that run a network import it themselves)."""
    code = (
        "import sys, service.cli, service.run.build, models\n"
        "models.PRESETS, models.BLAETrainConfig\n"
        "print(sorted(m for m in ('torch', 'matplotlib') if m in sys.modules))"
    )
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, cwd=ROOT)
    assert done.returncode == 0, done.stderr
    assert done.stdout.strip() == "[]"


REFUSALS = [  # (arguments, what the one-line error says): each refused before torch loads
    (("train-ae", "--preset", "huge"), "unknown BL-AE preset"),
    (("train-ae", "--latent-channels", "17"), "latent_channels must be 1..16"),
    (("train-ae", "--lr", "nan"), "must be a finite number > 0, got nan"),
    (("train-ae", "--device", "tpu"), "must be auto, cpu, cuda or cuda:N"),
    (("train-ae", "--precision", "fp8"), "precision must be one of"),
    (("train-ae", "--decoder-polish", "-1"), "decoder_polish must be finite and ≥ 0, got -1.0"),
    (("train-ae", "--checkpoint-every", "0"), "greater than or equal to 1"),
    (("encode", "--run", "/no/such/run"), "run directory /no/such/run does not exist"),
    (("encode", "--run", "/"), "blae.safetensors is missing"),
    (("encode", "--search-passes", "-1"), "greater than or equal to 0"),
    (("train-arvm", "--use", "dream"), "--use must be one of fallback, memorizer"),
    (("train-arvm", "--gamma", "4", "--run", "/"), "odd window size"),
    (("train-arvm", "--target-kl", "0"), "must be a finite number > 0, got 0.0"),
    (("ablate-sigma", "--noises", "pink"), "noises must be among triangular, gaussian"),
    (("ablate-sigma", "--run", "/"), "blae.safetensors is missing"),
    (("sample", "--gamma", "4", "--run", "/"), "odd window size"),
    (("sample", "--gamma", "5", "--run", "/"), "latents.parquet is missing"),
    (("decode", "--run", "/no/such/run", "--out", "d.png"), "does not exist"),
    (("prepare", "--preset", "huge", "--run", "/no/such/run"), "unknown BL-AE preset"),
    (("evaluate", "--run", "/"), "latents.parquet is missing"),
]


@pytest.mark.parametrize(("args", "message"), REFUSALS)
def test_bad_input_is_refused_before_torch_loads(args: tuple[str, ...], message: str) -> None:
    status, stderr, torch_loaded = refusal_before_torch(*args)
    assert message in stderr, stderr
    assert status == 2 and not torch_loaded


@pytest.mark.skipif(sys.platform != "linux" or has_gpu_device_files(), reason="a GPU is here")
def test_cuda_on_a_machine_without_a_gpu_is_refused_before_torch_loads() -> None:
    for command in ("train-ae", "train-arvm", "prepare"):
        status, stderr, torch_loaded = refusal_before_torch(command, "--device", "cuda")
        assert "'cuda' asked for, but CUDA is not available here" in stderr, stderr
        assert status == 2 and not torch_loaded
