"""run.json: what a run was built from, step by step (data, configs, checksums, versions)."""

from __future__ import annotations

import json
import platform
from datetime import datetime, timezone
from importlib import metadata
from typing import Any

from service.errors import RunError
from service.files import write_atomic
from service.run.paths import RunPaths


def library_versions() -> dict[str, str]:
    names = ("torch", "numpy", "duckdb", "pyarrow", "latentgram")
    versions = {"python": platform.python_version()}
    for name in names:
        try:
            versions[name] = metadata.version(name)
        except metadata.PackageNotFoundError:
            versions[name] = "not installed"
    return versions


def read_run_json(paths: RunPaths) -> dict[str, Any]:
    if not paths.run_json.exists():
        return {}
    try:
        data: dict[str, Any] = json.loads(paths.run_json.read_text())
    except json.JSONDecodeError as exc:
        raise RunError(f"{paths.run_json} is not valid JSON: {exc}") from exc
    return data


def update_run_json(paths: RunPaths, section: str, content: dict[str, Any]) -> dict[str, Any]:
    """Record one step's inputs and outputs under `section`; written atomically."""
    data = read_run_json(paths)
    data[section] = {**content, "at": datetime.now(timezone.utc).isoformat(timespec="seconds")}
    data["versions"] = library_versions()
    write_atomic(paths.run_json, json.dumps(data, indent=2, sort_keys=True) + "\n")
    return data
