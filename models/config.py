"""What every model config shares: a frozen dataclass saved as JSON inside its checkpoint."""

from __future__ import annotations

from dataclasses import asdict, fields
from typing import Any, TypeVar

C = TypeVar("C", bound="ModelConfig")

NOISE_KINDS = ("triangular", "gaussian")  # the BL-AE's training noise (models/noise.py)
PRECISIONS = ("auto", "fp32", "bf16")  # how a model trains (models/device.py)
ARVM_USES = ("fallback", "memorizer")  # the γ-ARVM's stopping rules (models/arvm_train.py)


class ModelConfig:
    """Mixin for frozen dataclass configs: to and from the JSON stored beside the weights."""

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)  # type: ignore[call-overload]  # subclasses are dataclasses

    @classmethod
    def from_dict(cls: type[C], data: dict[str, Any]) -> C:
        """Rebuild from JSON (lists become tuples); ValueError names fields this code lacks."""
        known = {f.name for f in fields(cls)}  # type: ignore[arg-type]
        unknown = sorted(set(data) - known)
        if unknown:
            raise ValueError(f"unknown config fields {unknown}")
        values = {k: tuple(v) if isinstance(v, list) else v for k, v in data.items()}
        return cls(**values)
