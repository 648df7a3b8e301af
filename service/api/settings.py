"""Every limit and switch of the service in one place, read from LATENTGRAM_* variables."""

from __future__ import annotations

from functools import cache
from pathlib import Path
from typing import Any

from pydantic import Field
from pydantic_settings import BaseSettings, SettingsConfigDict

from service.ngram.exact import default_threads
from service.run.paths import DEFAULT_RUN_DIR
from service.settings import settings_from_env

ENV_PREFIX = "LATENTGRAM_"


class Settings(BaseSettings):
    """Service settings; each field can be set as LATENTGRAM_<FIELD NAME IN CAPITALS>."""

    model_config = SettingsConfigDict(env_prefix=ENV_PREFIX, env_ignore_empty=True)

    run: Path = Field(DEFAULT_RUN_DIR, description="The prepared run directory to serve.")
    api_key: str | None = Field(
        None, description="When set, /v1 and /metrics need it (X-API-Key or Bearer)."
    )
    max_upload_bytes: int = Field(4 << 20, ge=1, description="Bytes of one request body.")
    max_pixels: int = Field(4096 * 4096, ge=1, description="Pixels of one uploaded image.")
    max_images: int = Field(64, ge=1, description="Images or latents in one encode/decode call.")
    max_n: int = Field(256, ge=1, description="Samples in one /v1/sample call.")
    max_budget: int = Field(100_000, ge=1, description="Search steps allowed per sample.")
    max_k: int = Field(100, ge=1, description="Nearest training images returned per query.")
    reload_seconds: float = Field(
        5.0, ge=0, description="How often a run that failed to load is tried again."
    )
    watch_seconds: float = Field(
        2.0,
        ge=0,
        description="How often the store is checked for rebuilt tables, which are then served"
        " without a restart (0: never).",
    )
    workers: int = Field(1, ge=1, description="Server processes (`serve --workers`).")
    max_in_flight: int = Field(
        8,
        ge=1,
        description="/v1 POST requests one process works on at once; more get 503 with"
        " Retry-After instead of waiting in an unbounded queue.",
    )
    request_seconds: float = Field(
        20.0,
        gt=0,
        description="Time an exact search may take in one request; the samples it did not reach"
        " by then come back failed with 'deadline'.",
    )

    @property
    def search_threads(self) -> int:
        """Threads one exact search may use: this process's share of the cores."""
        return max(1, default_threads() // self.workers)

    @classmethod
    def from_env(cls, **overrides: Any) -> Settings:
        """Settings from the environment, then `overrides` (the CLI's options) on top; an unset
        or empty variable keeps the default."""
        return settings_from_env(cls, ENV_PREFIX, "service", overrides)


@cache
def get_settings() -> Settings:
    """The settings of this process, read once; tests pass their own to create_app."""
    return Settings.from_env()
