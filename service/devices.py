"""The torch device a user asked for, or a one-line error saying what is allowed."""

from __future__ import annotations

import torch

from models import pick_device
from service.errors import InvalidInputError


def resolve_device(name: str | torch.device) -> torch.device:
    """'auto', 'cpu', 'cuda' or 'cuda:N' → a usable device; InvalidInputError otherwise."""
    if isinstance(name, torch.device):
        return name
    try:
        return pick_device(name)
    except ValueError as exc:
        raise InvalidInputError(str(exc)) from None
