"""The HTTP service (DESIGN.md §8): the only package that imports FastAPI."""

from service.api.app import create_app
from service.api.settings import Settings

__all__ = ["Settings", "create_app"]
