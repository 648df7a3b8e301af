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


def first_line(exc: BaseException) -> str:
    """An exception's first sentence, for one-line messages (torch's run on for paragraphs)."""
    text = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
    return text.split(". ")[0].rstrip(".:")
