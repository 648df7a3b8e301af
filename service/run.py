"""The run directory: every file one model needs, and run.json saying what was built from what."""

from __future__ import annotations

import hashlib
import json
import os
import platform
from dataclasses import dataclass
from datetime import datetime, timezone
from importlib import metadata
from pathlib import Path
from typing import Any

from service.errors import RunError

DEFAULT_RUN_DIR = Path("runs/default")


@dataclass(frozen=True)
class RunPaths:
    """Where each artifact of a run lives (DESIGN.md §1)."""

    root: Path

    @property
    def run_json(self) -> Path:
        return self.root / "run.json"

    @property
    def blae_weights(self) -> Path:
        return self.root / "blae.safetensors"

    @property
    def blae_config(self) -> Path:
        return self.root / "blae.json"

    @property
    def blae_optimizer(self) -> Path:
        return self.root / "blae-optimizer.pt"

    @property
    def images(self) -> Path:
        return self.root / "images.parquet"

    @property
    def latents(self) -> Path:
        return self.root / "latents.parquet"

    @property
    def store(self) -> Path:
        return self.root / "store.duckdb"

    @property
    def reports(self) -> Path:
        return self.root / "reports"

    @property
    def blae_metrics(self) -> Path:
        return self.reports / "blae-metrics.jsonl"

    @property
    def blae_curve(self) -> Path:
        return self.reports / "blae-curve.png"

    def require(self, path: Path, made_by: str) -> Path:
        """The path, or a RunError saying which command makes it."""
        if not path.exists():
            raise RunError(f"{path} is missing: run `latentgram {made_by} --run {self.root}` first")
        return path


def file_sha256(path: Path) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as f:
        for chunk in iter(lambda: f.read(1 << 20), b""):
            digest.update(chunk)
    return digest.hexdigest()


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
    paths.root.mkdir(parents=True, exist_ok=True)
    tmp = paths.run_json.with_suffix(".json.tmp")
    tmp.write_text(json.dumps(data, indent=2, sort_keys=True) + "\n")
    os.replace(tmp, paths.run_json)
    return data
