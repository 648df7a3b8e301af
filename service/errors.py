"""Errors the engine raises; the CLI prints them as one line, the API maps them to 4xx."""

from __future__ import annotations


class LatentgramError(Exception):
    """Base of every error latentgram reports to a user (never a bug)."""


class InvalidInputError(LatentgramError):
    """A value given by the user is outside what is allowed."""


class SourceError(LatentgramError):
    """A data source is missing, corrupt or in the wrong format."""


class RunError(LatentgramError):
    """A run directory is missing something a step needs."""
