"""What the memorization report is asked for (ReportConfig) and where it writes, apart from the
report itself (report.py imports torch; the command line reads these defaults without it)."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import cast

from service.errors import InvalidInputError
from service.ngram.samples import Mode
from service.ngram.windows import check_gamma

REPORT_JSON = "memorization.json"  # in the run's reports/ folder
REPORT_PLOT = "memorization-vs-gamma.png"
REPORT_MODES: tuple[Mode, ...] = ("exact", "hybrid", "neural")


@dataclass(frozen=True)
class ReportConfig:
    samples: int = 1000  # per γ and mode
    gammas: tuple[int, ...] | None = None  # None: every non-positional table built
    modes: tuple[Mode, ...] = REPORT_MODES
    seed: int = 0
    budget: int = 1000  # search steps per exact sample
    inception: Path | None = None  # inception-2015-12-05.pt, for the standard FID

    def __post_init__(self) -> None:
        if self.samples < 2:
            raise InvalidInputError(f"samples must be ≥ 2, got {self.samples}")
        for gamma in self.gammas or ():
            check_gamma(gamma)  # before the run is loaded: whether it is built is asked later
        unknown = [mode for mode in self.modes if mode not in REPORT_MODES]
        if unknown or not self.modes:
            asked = ", ".join(self.modes) or "none"
            raise InvalidInputError(f"modes must be among {', '.join(REPORT_MODES)}, got {asked}")


def parse_modes(text: str | None) -> tuple[Mode, ...]:
    """--modes: comma-separated report modes (ReportConfig refuses the others, in its words)."""
    if not text:
        return REPORT_MODES
    parts = [part.strip() for part in text.split(",") if part.strip()]
    return tuple(cast(Mode, part) for part in parts)
