"""The run directory (DESIGN.md §1): where each artifact of one model lives."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from service.errors import RunError
from service.ngram.store import table_name

DEFAULT_RUN_DIR = Path("runs/default")


@dataclass(frozen=True)
class RunPaths:
    """Every file of a run, named once."""

    root: Path

    def __post_init__(self) -> None:
        object.__setattr__(self, "root", Path(self.root))  # a str from Python callers too
        if self.root.exists() and not self.root.is_dir():
            raise RunError(f"the run {self.root} is a file, not a directory")

    @property
    def run_json(self) -> Path:
        return self.root / "run.json"

    @property
    def blae_weights(self) -> Path:
        """BL-AE weights; its config is blae.json beside it (service/checkpoint.py)."""
        return self.root / "blae.safetensors"

    @property
    def blae_config(self) -> Path:
        return self.root / "blae.json"

    @property
    def blae_optimizer(self) -> Path:
        return self.root / "blae-optimizer.pt"

    @property
    def classifier_weights(self) -> Path:
        return self.root / "classifier.safetensors"

    def arvm_weights(self, gamma: int, positional: bool = False) -> Path:
        """arvm-g5.safetensors, or arvm-g5p.safetensors for the positional table's γ-ARVM."""
        return self.root / f"arvm-{table_name(gamma, positional)}.safetensors"

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

    def arvm_metrics(self, gamma: int, positional: bool = False) -> Path:
        return self.reports / f"arvm-{table_name(gamma, positional)}-metrics.jsonl"

    def existing(self) -> RunPaths:
        """These paths, or a RunError when the run directory does not exist."""
        if not self.root.is_dir():
            raise RunError(f"run directory {self.root} does not exist: run `latentgram prepare`")
        return self

    def require(self, path: Path, made_by: str) -> Path:
        """The path, or a RunError saying which command makes it."""
        if not path.exists():
            raise RunError(f"{path} is missing: run `latentgram {made_by} --run {self.root}` first")
        return path

    def remedy(self, command: str) -> str:
        """The command line that (re)makes something of this run, for error messages."""
        return f"latentgram {command} --run {self.root}"
